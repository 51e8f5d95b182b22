"""One training loop for every chapter: Algorithm 1 of DDPM, with the practical parts written out.

    repeat
        x0 ~ q(x0);  t ~ Uniform({0, ..., T-1});  eps ~ N(0, I)
        take a gradient step on  || target - model(sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, t) ||
    until converged                                                   # DDPM Algorithm 1, eq. (14)

`target` is eps, x0 or v depending on the scheduler's `prediction_type`. Around it: AdamW with a short
warm-up, l1/l2/Huber losses, gradient clipping, an exponential moving average (EMA) of the weights,
conditioning dropout for classifier-free guidance, tqdm with the loss, periodic sample grids, and
checkpoints that resume exactly (model, EMA, optimiser moments, data order, step). A NaN or inf loss stops
training with a clear message and leaves the last good checkpoint untouched.

References:
    Ho, Jain, Abbeel (2020), "Denoising Diffusion Probabilistic Models", Algorithm 1.
    Ho & Salimans (2022), "Classifier-Free Diffusion Guidance" (conditioning dropout).
    Loshchilov & Hutter (2019), "Decoupled Weight Decay Regularization" (AdamW).

Derived in notebooks/01_ddpm_from_scratch.ipynb; conditioning dropout in 02_class_conditional.ipynb.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minildm.checkpoints import config_to_dict, load_state, load_tensors, save_tensors
from minildm.data import random_hflip

LOSSES = ("l2", "l1", "huber")
PRECISIONS = ("fp32", "bf16")  # bf16 autocast: 1.8x the fp32 speed for ddpm_cond_wide on 2 AVX-512 BF16 threads (results/precision_bench.json)


def precision_context(precision: str, device: torch.device):
    """The forward pass's precision: under bf16 autocast for "bf16" (matmuls and convs in bf16 where autocast
    allows; weights, optimiser and loss stay fp32), as it is for "fp32"."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf. The last good checkpoint (if any) is left as it was."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 10_000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    decay_steps: int = 0        # cosine decay of the lr to 0 over the last min(decay_steps, steps) steps (0: none)
    loss: str = "l2"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    p_uncond: float = 0.0       # probability of replacing the condition by the null condition (CFG training)
    hflip: bool = True
    seed: int = 0
    checkpoint_every: int = 1000
    sample_every: int = 0       # 0: never call `on_sample`
    precision: str = "fp32"     # "bf16": the forward pass under bf16 autocast (weights, optimiser, loss in fp32)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}: use one of {LOSSES}.")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond={self.p_uncond} must be in [0, 1).")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive.")
        if self.decay_steps < 0:
            raise ValueError(f"decay_steps={self.decay_steps} must be >= 0 (0: no decay).")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: use one of {PRECISIONS}.")


class TrainResult(NamedTuple):
    model: torch.nn.Module
    ema: torch.nn.Module
    losses: list            # every step's loss since the start of training (resumed runs included)
    images_seen: int        # in this call
    seconds: float          # of this call


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """The simplified objective, DDPM eq. (14), with the l1 and Huber variants."""
    if kind == "l2":
        return F.mse_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "huber":
        return F.smooth_l1_loss(pred, target)
    raise ValueError(f"unknown loss {kind!r}: use one of {LOSSES}.")


def learning_rate(config: TrainConfig, step: int) -> float:
    """The lr at (0-based) `step`: linear warm-up, constant, then (if `decay_steps`) a cosine decay to 0 at `steps`.

    A run shorter than `decay_steps` (a demo, or `--steps N` continuing a run) decays over the whole of it."""
    lr = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
    decay = min(config.decay_steps, config.steps)
    if decay:
        progress = min(1.0, max(0.0, (step - (config.steps - decay)) / decay))
        lr *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr


def drop_condition(cond: torch.Tensor, p: float, null: torch.Tensor | int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each sample's condition by `null` with probability p (classifier-free guidance training).

    For class labels `cond` is `(B,)` and `null` the null-class index; for text states `cond` is `(B, L, D)`
    and `null` the empty prompt's states `(L, D)`.
    """
    drop = torch.rand(cond.shape[0], generator=generator).to(cond.device) < p  # (B,)
    null = torch.as_tensor(null, device=cond.device, dtype=cond.dtype).expand_as(cond)
    return torch.where(drop.view(-1, *([1] * (cond.dim() - 1))), null, cond)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)  # one launch
    for (name, e), (_, b) in zip(ema.named_buffers(), model.named_buffers()):
        owner, _, leaf = name.rpartition(".")
        if leaf not in model.get_submodule(owner)._non_persistent_buffers_set:  # constant tables are not copied
            e.copy_(b)


def _optim_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    state = opt.state_dict()
    tensors = {f"optim.{i}.{k}": v for i, s in state["state"].items() for k, v in s.items()}
    return tensors, {"param_groups": state["param_groups"]}


def _load_optim(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training_state(path, model, ema, opt, step, losses, rng: dict, position: int, config: TrainConfig,
                        seconds: float = 0.0, extra: dict | None = None) -> Path:
    """Everything needed to resume exactly, as safetensors + JSON (no pickle)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    optim_tensors, optim_meta = _optim_tensors(opt)
    tensors |= optim_tensors
    tensors |= {f"rng.{k}": v for k, v in rng.items()}  # generator states: resume draws the same batches
    meta = {"class": type(model).__name__, "config": config_to_dict(model.config), "kind": "training_state",
            "step": step, "losses": losses, "position": position, "seconds": round(seconds, 1),
            "train_config": dataclasses.asdict(config), **optim_meta,
            "meta": extra or {}}
    return save_tensors(path, tensors, meta)


def _split(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def train_diffusion(model: torch.nn.Module, scheduler, dataset: torch.utils.data.TensorDataset,
                    config: TrainConfig = TrainConfig(), device: str | torch.device = "cpu",
                    checkpoint: str | Path | None = None, null_cond=None,
                    on_sample: Callable[[torch.nn.Module, int], None] | None = None,
                    progress: bool = True, max_seconds: float | None = None,
                    stop_at: int | None = None) -> TrainResult:
    """Train `model` to denoise `dataset` (x0 first, optional condition second) under `scheduler`.

    `checkpoint`: a path stem; if it exists, training resumes from it (same config required); it is
    rewritten every `config.checkpoint_every` steps and at the end. `null_cond`: the null condition for
    `config.p_uncond` (defaults to `model.config.num_classes` for class-conditional models). `max_seconds`:
    also stop (and checkpoint) once this call has trained that long, for studies at equal wall-clock. `stop_at`:
    also stop (and checkpoint) at this step, the schedule unchanged (a snapshot of a longer run, mid-way).
    Derived in notebooks/01_ddpm_from_scratch.ipynb (Algorithm 1).
    """
    device = torch.device(device)
    tensors = dataset.tensors
    x0_all = tensors[0]
    num_classes = getattr(model.config, "num_classes", None)
    conditional = num_classes is not None or getattr(model.config, "cond_dim", None) is not None
    cond_all = tensors[1] if len(tensors) > 1 and conditional else None
    if cond_all is None and conditional:
        raise ValueError("the model is conditional but the dataset has no conditions: pass TensorDataset(x0, labels) "
                         "(or caption ids for a text model, minildm.text_training.caption_dataset).")
    if null_cond is None and cond_all is not None:
        if num_classes is None:
            raise ValueError("a text model needs null_cond=: the condition id of the empty prompt (0 in a caption table).")
        null_cond = num_classes
    if config.p_uncond > 0 and cond_all is None:
        raise ValueError("p_uncond > 0 needs a conditional model and a dataset with conditions.")
    model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    data_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator().manual_seed(config.seed + 1)
    step, losses, seconds_before = 0, [], 0.0

    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.with_name(ckpt_path.name + ".json").exists():
        saved, meta = load_tensors(ckpt_path)
        if meta.get("config") != config_to_dict(model.config):
            raise ValueError(f"checkpoint {ckpt_path} was trained with model config {meta.get('config')}, "
                             f"not {config_to_dict(model.config)}: use another checkpoint path or the same config.")
        load_state(model, _split(saved, "model."), str(ckpt_path))
        load_state(ema, _split(saved, "ema."), str(ckpt_path))
        _load_optim(opt, saved, meta)
        data_gen.set_state(saved["rng.epoch"])
        noise_gen.set_state(saved["rng.noise"])
        step, losses, seconds_before = meta["step"], list(meta["losses"]), meta.get("seconds", 0.0)
    last = config.steps if stop_at is None else min(stop_at, config.steps)  # the lr schedule still spans config.steps
    if step >= last:
        return TrainResult(model.eval(), ema, losses, 0, 0.0)

    n, step_start = len(x0_all), step
    epoch_state = data_gen.get_state()  # the state that draws the current epoch's order
    order = torch.randperm(n, generator=data_gen)
    pos = meta["position"] if step > 0 else 0
    start = time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, desc="training", disable=not progress, dynamic_ncols=True)
    T = scheduler.num_train_timesteps
    out_of_time = False
    while step < last and not out_of_time:
        if pos + config.batch_size > n:  # new epoch: a new order, reproducible from the checkpointed state
            epoch_state = data_gen.get_state()
            order, pos = torch.randperm(n, generator=data_gen), 0
        idx = order[pos: pos + config.batch_size]
        pos += config.batch_size
        x0 = x0_all[idx]
        if config.hflip:
            x0 = random_hflip(x0, generator=noise_gen)
        x0 = x0.to(device)
        t = torch.randint(0, T, (x0.shape[0],), generator=noise_gen).to(device)  # t ~ Uniform
        eps = torch.randn(x0.shape, generator=noise_gen).to(device)              # eps ~ N(0, I)
        x_t = scheduler.add_noise(x0, eps, t)                                      # DDPM eq. (4)
        cond = None
        if cond_all is not None:
            cond = cond_all[idx]
            if config.p_uncond > 0:
                cond = drop_condition(cond, config.p_uncond, null_cond, generator=noise_gen)
            cond = cond.to(device)
        with precision_context(config.precision, device):
            pred = model(x_t, t, cond)
        loss = diffusion_loss(pred.float(), scheduler.training_target(x0, eps, t), config.loss)
        if not torch.isfinite(loss):
            bar.close()
            where = f"; the last good checkpoint {ckpt_path} is unchanged" if ckpt_path else ""
            raise TrainingDiverged(f"loss became {loss.item()} at step {step}{where}. Lower the learning rate "
                                   f"(now {config.lr}), keep grad_clip on, or check the data for NaNs.")
        for group in opt.param_groups:  # linear warm-up, constant, optional cosine decay
            group["lr"] = learning_rate(config, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        update_ema(ema, model, min(config.ema_decay, (1 + step) / (10 + step)))
        step += 1
        losses.append(round(loss.item(), 6))
        out_of_time = max_seconds is not None and time.perf_counter() - start >= max_seconds
        bar.update(1)
        if step % 25 == 0 or step == config.steps:
            bar.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.4f}")
        if ckpt_path is not None and (step % config.checkpoint_every == 0 or step == last or out_of_time):
            save_training_state(ckpt_path, model, ema, opt, step, losses,
                                {"epoch": epoch_state, "noise": noise_gen.get_state()}, pos, config,
                                seconds=seconds_before + time.perf_counter() - start)
        if on_sample is not None and config.sample_every and step % config.sample_every == 0:
            on_sample(ema, step)
    bar.close()
    seconds = time.perf_counter() - start
    return TrainResult(model.eval(), ema, losses, (step - step_start) * config.batch_size, seconds)


def load_training_state(path, model_cls) -> tuple[torch.nn.Module, dict]:
    """The EMA model and metadata of a training checkpoint (for sampling from a run in progress)."""
    from minildm.checkpoints import config_from_dict
    tensors, meta = load_tensors(path)
    model = model_cls(config_from_dict(model_cls.config_class, meta["config"]))
    load_state(model, _split(tensors, "ema."), str(path))
    return model.eval(), meta


def throughput_note(result: TrainResult) -> str:
    rate = result.images_seen / result.seconds if result.seconds else math.nan
    return f"{result.images_seen:,} images in {result.seconds:.0f} s ({rate:.0f} images/s)"


__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "train_diffusion", "diffusion_loss", "learning_rate",
           "drop_condition", "precision_context", "PRECISIONS",
           "update_ema", "save_training_state", "load_training_state"]
