"""Training the first stage of latent diffusion: a KL-regularised autoencoder, optionally with a patch GAN.

    loss_G = rec(x, x_rec) + beta * KL(q(z|x) || N(0, I)) + lambda * disc_weight * (-D(x_rec))     (after disc_start)
    loss_D = mean(relu(1 - D(x))) + mean(relu(1 + D(x_rec)))                                       (hinge)

`rec` is l1 or mse per pixel and KL is in nats per pixel (`minildm.models.vae.vae_loss`), so `beta` compares
with LDM's `kl_weight`. `lambda` is LDM's adaptive weight: the ratio of the gradient norms of the
reconstruction and adversarial terms at the decoder's last layer, so neither swamps the other. Before
`disc_start` (and always when `disc_weight` is 0) this is plain beta-VAE training. No EMA: autoencoders are
shipped as trained, as LDM does. Checkpoints resume exactly (both optimisers, discriminator, data order); a NaN
or inf loss stops training with a clear message and leaves the last good checkpoint untouched.

References:
    Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models", sec. 3.1 and
    appendix G; their `LPIPSWithDiscriminator` (the adaptive weight, `calculate_adaptive_weight`).
    Esser, Rombach, Ommer (2021), "Taming Transformers for High-Resolution Image Synthesis", eq. (7) (the
    adaptive weight) and the PatchGAN discriminator of Isola et al. (2017), "Image-to-Image Translation with
    Conditional Adversarial Networks", sec. 3.2.2.
    Lim & Ye (2017), "Geometric GAN" (the hinge loss).

Derived in notebooks/03_vae_and_kl.ipynb.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from minildm.checkpoints import config_to_dict, load_state, load_tensors, save_tensors
from minildm.data import random_hflip
from minildm.models.vae import vae_loss
from minildm.training import TrainingDiverged, _load_optim, _optim_tensors, _split


@dataclass(frozen=True)
class VAETrainConfig:
    steps: int = 5_000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    beta: float = 1e-6          # KL weight per pixel (LDM's kl_weight); 1.0 is the plain ELBO with sigma ~0.71
    recon: str = "l1"           # "l1" (sharper, LDM's choice) or "mse"
    disc_start: int = 0         # step at which the adversarial term switches on
    disc_weight: float = 0.0    # 0: no discriminator at all
    disc_lr: float = 2e-4
    grad_clip: float = 1.0
    hflip: bool = False
    seed: int = 0
    checkpoint_every: int = 500

    def __post_init__(self):
        if self.recon not in ("l1", "mse"):
            raise ValueError(f"recon must be 'l1' or 'mse', got {self.recon!r}.")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive.")
        if self.beta < 0 or self.disc_weight < 0:
            raise ValueError(f"beta ({self.beta}) and disc_weight ({self.disc_weight}) must be >= 0.")


@dataclass(frozen=True)
class PatchDiscriminatorConfig:
    in_channels: int = 1
    channels: int = 32
    layers: int = 2             # stride-2 convs: 32x32 -> 8x8 logits, each seeing a ~14x14 patch


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): images `(B, C, H, W)` -> real/fake logits `(B, 1, H/2^L, W/2^L)`, one per patch.

    Derived in notebooks/03_vae_and_kl.ipynb.
    """

    config_class = PatchDiscriminatorConfig

    def __init__(self, config: PatchDiscriminatorConfig | None = None):
        super().__init__()
        self.config = c = config or PatchDiscriminatorConfig()
        layers, ch = [nn.Conv2d(c.in_channels, c.channels, 3, padding=1), nn.LeakyReLU(0.2)], c.channels
        for _ in range(c.layers):
            layers += [nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1), nn.GroupNorm(8, 2 * ch), nn.LeakyReLU(0.2)]
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 1, H/2^L, W/2^L)


class VAETrainResult(NamedTuple):
    vae: nn.Module
    history: dict             # per-step lists: "loss", "recon", "kl", and "g_adv", "d_loss" once the GAN is on
    images_seen: int          # in this call
    seconds: float            # of this call


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """||grad rec|| / ||grad g_loss|| at the decoder's last layer, clamped to [0, 1e4] (Esser et al. 2021, eq. (7))."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def _save(path, vae, disc, opts, step, history, rng, position, config, seconds):
    tensors = {f"model.{k}": v for k, v in vae.state_dict().items()}
    tensors |= {f"disc.{k}": v for k, v in disc.state_dict().items()} if disc is not None else {}
    groups = {}
    for name, opt in opts.items():
        t, meta = _optim_tensors(opt)
        tensors |= {f"{name}.{k}": v for k, v in t.items()}
        groups[name] = meta
    tensors |= {f"rng.{k}": v for k, v in rng.items()}
    meta = {"class": type(vae).__name__, "config": config_to_dict(vae.config), "kind": "vae_training_state",
            "step": step, "history": history, "position": position, "seconds": round(seconds, 1),
            "train_config": dataclasses.asdict(config), "optimizers": groups}
    return save_tensors(path, tensors, meta)


def train_vae(vae: nn.Module, dataset: torch.utils.data.TensorDataset, config: VAETrainConfig = VAETrainConfig(),
              device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
              progress: bool = True) -> VAETrainResult:
    """Train `vae` (a `VAE` or `MLPVAE`) on the images of `dataset` (first tensor, in [-1, 1]).

    `checkpoint`: a path stem; training resumes from it when it exists (same model config required), and it is
    rewritten every `config.checkpoint_every` steps and at the end. Derived in notebooks/03_vae_and_kl.ipynb.
    """
    device = torch.device(device)
    x_all = dataset.tensors[0]
    use_gan = config.disc_weight > 0
    vae.to(device).train()
    disc = PatchDiscriminator(PatchDiscriminatorConfig(in_channels=x_all.shape[1])).to(device) if use_gan else None
    opts = {"optim": torch.optim.Adam(vae.parameters(), lr=config.lr, betas=(0.5, 0.9))}
    if use_gan:
        opts["disc_optim"] = torch.optim.Adam(disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.9))
    data_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator().manual_seed(config.seed + 1)
    step, seconds_before, pos = 0, 0.0, 0
    history = {k: [] for k in ("loss", "recon", "kl", "g_adv", "d_loss")}

    ckpt = Path(checkpoint) if checkpoint is not None else None
    resumed = ckpt is not None and ckpt.with_name(ckpt.name + ".json").exists()
    if resumed:
        saved, meta = load_tensors(ckpt)
        if meta.get("config") != config_to_dict(vae.config):
            raise ValueError(f"checkpoint {ckpt} was trained with model config {meta.get('config')}, not "
                             f"{config_to_dict(vae.config)}: use another checkpoint path or the same config.")
        load_state(vae, _split(saved, "model."), str(ckpt))
        if disc is not None:
            load_state(disc, _split(saved, "disc."), str(ckpt))
        for name, opt in opts.items():
            _load_optim(opt, {k[len(name) + 1:]: v for k, v in saved.items() if k.startswith(name + ".optim.")},
                        meta["optimizers"][name])
        data_gen.set_state(saved["rng.epoch"])
        noise_gen.set_state(saved["rng.noise"])
        step, history, pos = meta["step"], meta["history"], meta["position"]
        seconds_before = meta.get("seconds", 0.0)
    if step >= config.steps:
        return VAETrainResult(vae.eval(), history, 0, 0.0)

    last_layer = list(vae.decoder.parameters())[-2]  # the weight of the decoder's output layer
    n, step_start = len(x_all), step
    epoch_state = data_gen.get_state()
    order = torch.randperm(n, generator=data_gen)
    start = time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, desc="training VAE", disable=not progress, dynamic_ncols=True)
    while step < config.steps:
        if pos + config.batch_size > n:  # a new epoch, reproducible from the checkpointed generator state
            epoch_state = data_gen.get_state()
            order, pos = torch.randperm(n, generator=data_gen), 0
        x = x_all[order[pos: pos + config.batch_size]]
        pos += config.batch_size
        if config.hflip:
            x = random_hflip(x, generator=noise_gen)
        x = x.to(device)
        out = vae(x, generator=noise_gen)
        parts = vae_loss(x, out, config.beta, config.recon)
        loss, gan_on = parts.loss, use_gan and step >= config.disc_start
        if gan_on:
            g_adv = -disc(out.reconstruction).mean()  # the decoder tries to make D call its output real
            weight = adaptive_weight(parts.recon, g_adv, last_layer) * config.disc_weight
            loss = loss + weight * g_adv
        if not torch.isfinite(loss):
            bar.close()
            where = f"; the last good checkpoint {ckpt} is unchanged" if ckpt else ""
            raise TrainingDiverged(f"VAE loss became {loss.item()} at step {step}{where}. Lower the learning rate "
                                   f"(now {config.lr}) or disc_weight (now {config.disc_weight}).")
        lr_scale = min(1.0, (step + 1) / max(1, config.warmup_steps))
        for group in opts["optim"].param_groups:
            group["lr"] = config.lr * lr_scale
        opts["optim"].zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(vae.parameters(), config.grad_clip)
        opts["optim"].step()
        if gan_on:  # hinge loss for the discriminator, on a detached reconstruction
            d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(out.reconstruction.detach())).mean()
            opts["disc_optim"].zero_grad(set_to_none=True)
            d_loss.backward()
            opts["disc_optim"].step()
            history["g_adv"].append(round(g_adv.item(), 5))
            history["d_loss"].append(round(d_loss.item(), 5))
        step += 1
        for key, value in (("loss", loss), ("recon", parts.recon), ("kl", parts.kl)):
            history[key].append(round(value.item(), 6))
        bar.update(1)
        if step % 25 == 0 or step == config.steps:
            bar.set_postfix(rec=f"{sum(history['recon'][-25:]) / len(history['recon'][-25:]):.4f}",
                            kl=f"{history['kl'][-1]:.3f}")
        if ckpt is not None and (step % config.checkpoint_every == 0 or step == config.steps):
            _save(ckpt, vae, disc, opts, step, history, {"epoch": epoch_state, "noise": noise_gen.get_state()},
                  pos, config, seconds_before + time.perf_counter() - start)
    bar.close()
    return VAETrainResult(vae.eval(), history, (step - step_start) * config.batch_size, time.perf_counter() - start)


def load_vae_training_state(path, model_cls) -> tuple[nn.Module, dict]:
    """The VAE and metadata of a training checkpoint (to evaluate or export a run in progress)."""
    from minildm.checkpoints import config_from_dict
    tensors, meta = load_tensors(path)
    model = model_cls(config_from_dict(model_cls.config_class, meta["config"]))
    load_state(model, _split(tensors, "model."), str(path))
    return model.eval(), meta


__all__ = ["VAETrainConfig", "VAETrainResult", "PatchDiscriminator", "PatchDiscriminatorConfig", "adaptive_weight",
           "train_vae", "load_vae_training_state"]
