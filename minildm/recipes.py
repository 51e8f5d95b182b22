"""Training recipes for the shipped reference checkpoints: `python -m minildm train <recipe>`.

Each recipe fixes the model config, the scheduler and the training config, trains with
`minildm.training.train_diffusion` (resumable: `runs/<recipe>/state.*` is rewritten every
`checkpoint_every` steps), and exports the EMA weights to `data/checkpoints/<recipe>.safetensors` (fp16)
with a JSON config and the training metadata that the model card quotes.

References:
    Ho et al. (2020) DDPM; Nichol & Dhariwal (2021) cosine schedule; the recipes' numbers are ours.

Used by notebooks/01_ddpm_from_scratch.ipynb (FULL_TRAINING) and the README's reproduction section.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from minildm.checkpoints import SHIPPED_DIR, load_model, load_state, save_model
from minildm.data import load_tensors
from minildm.models.peers import DiffusersUNet, PeerConfig
from minildm.models.unet import UNet, UNetConfig
from minildm.models.vae import VAE, VAEConfig, latent_scale
from minildm.schedulers import DDPMScheduler
from minildm.training import TrainConfig, load_training_state, train_diffusion
from minildm.vae_training import VAETrainConfig, load_vae_training_state, train_vae


@dataclass(frozen=True)
class DiffusionRecipe:
    name: str
    model: UNetConfig | PeerConfig  # PeerConfig: a diffusers UNet2DModel trained by the same loop (a peer recipe)
    train: TrainConfig
    beta_schedule: str = "cosine"
    prediction_type: str = "eps"
    num_train_timesteps: int = 1000
    description: str = ""
    latent_vae: str | None = None  # a latent model: trained on this VAE checkpoint's scaled latents (chapter 04)

    @property
    def model_class(self) -> type:
        return DiffusersUNet if isinstance(self.model, PeerConfig) else UNet

    def scheduler(self) -> DDPMScheduler:
        return DDPMScheduler(self.num_train_timesteps, beta_schedule=self.beta_schedule,
                             prediction_type=self.prediction_type, clip_sample=self.latent_vae is None)


# No horizontal flips for the diffusion recipes: Fashion-MNIST footwear always points the same way (99-100%
# of sneakers and ankle boots carry more mass on the right half), so flips teach shoes the test set never
# shows. Measured: 2,000 real training images against the test set give feature-FID 0.42; with half of them
# flipped, 4.49. See notebooks/01_ddpm_from_scratch.ipynb.
DDPM = DiffusionRecipe(
    name="ddpm",
    model=UNetConfig(),
    train=TrainConfig(steps=30_000, batch_size=128, lr=1e-3, warmup_steps=500, decay_steps=6_000, ema_decay=0.999,
                      checkpoint_every=500, hflip=False),  # a run shorter than 30,000 steps decays over its last 6,000
    description="unconditional DDPM on Fashion-MNIST 32x32 (chapter 01)",
)

DDPM_COND = DiffusionRecipe(
    name="ddpm_cond",
    model=UNetConfig(num_classes=10),
    train=TrainConfig(steps=30_000, batch_size=128, lr=1e-3, warmup_steps=500, decay_steps=6_000, ema_decay=0.999,
                      checkpoint_every=500, p_uncond=0.1, hflip=False),  # Ho & Salimans: 0.1-0.2 works; 0.1 here
    description="class-conditional DDPM with classifier-free guidance on Fashion-MNIST 32x32 (chapter 02)",
)

# Chapter 04: the class-conditional model of chapter 02, on the 4x8x8 latents of the chapter-03 VAE.
LDM_COND = DiffusionRecipe(
    name="ldm_cond",
    model=UNetConfig(in_channels=4, out_channels=4, image_size=8, base_channels=16, channel_mults=(1, 2, 4),
                     attention=("none", "none", "full"), cross_attention=(False, False, False), heads=4,
                     head_dim=32, num_classes=10),  # 8x8 -> 4x4 -> 2x2 with 16, 32, 64 channels, ~0.65M parameters
    train=TrainConfig(steps=80_000, batch_size=128, lr=1e-3, warmup_steps=500, decay_steps=20_000, ema_decay=0.999,
                      checkpoint_every=500, p_uncond=0.1, hflip=False),  # constant lr to 60,000, then a cosine to 0
    latent_vae="vae",
    description="class-conditional latent diffusion with CFG on the vae's 4x8x8 latents (chapter 04)",
)

# Chapter 04's f study: the same latent UNet layout on the 4x16x16 latents of an f = 2 VAE (`vae_f2`).
LDM_F2 = dataclasses.replace(
    LDM_COND, name="ldm_f2", model=dataclasses.replace(LDM_COND.model, image_size=16), latent_vae="vae_f2",
    description="class-conditional latent diffusion with CFG on the vae_f2's 4x16x16 latents (chapter 04's f study)")

# Chapter 02's same-budget comparison: the chapter's standard diffusers recipe (`UNet2DModel(num_class_embeds,
# block_out_channels=(32, 64, 128, 256))`, 15.8M parameters) trained by the same loop with ddpm_cond's schedule,
# label dropout and EMA, so that the comparison differs in the network alone. `--steps` sets the budget: the
# comparison row needs as many images seen as the shipped ddpm_cond (~10 img/s on one CPU thread: use a GPU).
DDPM_COND_PEER = dataclasses.replace(
    DDPM_COND, name="ddpm_cond_peer", model=PeerConfig(layout="hf-course", num_classes=10),
    description="chapter 02's standard diffusers recipe (UNet2DModel 32-64-128-256, class embeddings) trained "
                "with ddpm_cond's recipe: the same-budget comparison")

# Chapter 02's capacity study: ddpm_cond at twice the width (32-64-128-256 channels, the diffusers recipe's widths;
# 7.95M parameters). tools/fid_gap_analysis.py puts ddpm_cond's FID gap in the covariance term, concentrated in
# sneakers, bags and ankle boots, and no sampler setting closes it: this recipe asks whether width does. 40,000
# steps of 128 = 5,120,000 images (the shipped ddpm_cond saw 4,928,000); on 2 CPU threads ~1 step/s, ~9-10 h in all,
# so it is trained over several sessions, keeping its state outside the checkout (a new checkout would lose it):
# `minildm train ddpm_cond_wide --threads 2 --precision bf16 --run-dir ~/minildm-runs --minutes M --no-export` resumes.
DDPM_COND_WIDE = dataclasses.replace(
    DDPM_COND, name="ddpm_cond_wide", model=dataclasses.replace(DDPM_COND.model, base_channels=32),
    train=dataclasses.replace(DDPM_COND.train, steps=40_000, decay_steps=8_000),
    description="ddpm_cond at twice the width (base_channels 32, 7.95M parameters): chapter 02's capacity study")

DIFFUSION_RECIPES = {r.name: r for r in (DDPM, DDPM_COND, LDM_COND, LDM_F2, DDPM_COND_PEER, DDPM_COND_WIDE)}


def latent_dataset(vae_name: str, cache_dir: str | Path = "runs/latents", device=None) -> torch.utils.data.TensorDataset:
    """The training set as scaled latents of the named VAE checkpoint, `TensorDataset(z (60000, C, h, w), labels)`.

    Encoded once and cached as safetensors under `cache_dir`, keyed by the VAE file's sha256."""
    from minildm.checkpoints import find, load_tensors as load_st, save_tensors, sha256_file
    from minildm.pipelines.latent import encode_latents
    path = find(vae_name)
    digest = sha256_file(path)
    cache = Path(cache_dir) / f"{vae_name}-{digest[:12]}"
    x0, labels = load_tensors("train").tensors
    if cache.with_suffix(".json").exists():
        tensors, _ = load_st(cache)
        return torch.utils.data.TensorDataset(tensors["z"], labels)
    vae = load_model(VAE, path, device=device or "cpu")
    z = encode_latents(vae, x0, vae.meta["latent_scale"])
    save_tensors(cache, {"z": z.contiguous()}, {"vae": vae_name, "vae_sha256": digest,
                                                "latent_scale": vae.meta["latent_scale"]})
    return torch.utils.data.TensorDataset(z, labels)


@dataclass(frozen=True)
class VAERecipe:
    name: str
    model: VAEConfig
    train: VAETrainConfig
    description: str = ""


# f = 4, 4x8x8 latents (chapter 03's reference, chapter 04's first stage): l1 + a tiny KL (LDM's kl_weight 1e-6).
# The first run planned a patch discriminator (LDM's adaptive weight x 0.5) from step 3,000; measured on the test
# set it made reconstructions worse (see notebook 03's variants table), and l1 alone at 3,000 steps already meets
# every chapter-03 target, so the recipe stops there. `disc_weight > 0` still turns the GAN on for experiments.
VAE_F4 = VAERecipe(
    name="vae",
    model=VAEConfig(base_channels=24),
    train=VAETrainConfig(steps=3_000, batch_size=64, lr=1e-3, warmup_steps=200, beta=1e-6, recon="l1",
                         disc_weight=0.0, checkpoint_every=500),
    description="KL-regularised conv VAE, f=4, latents 4x8x8, l1 + KL (chapter 03)",
)

# f = 2 for chapter 04's f study: only the downsampling factor changes (4 latent channels, 16x16); shorter.
VAE_F2 = VAERecipe(
    name="vae_f2",
    model=VAEConfig(base_channels=24, downsample_factor=2),
    train=dataclasses.replace(VAE_F4.train, steps=1_000),
    description="KL-regularised conv VAE, f=2, latents 4x16x16, l1 + KL (chapter 04's f study)",
)

VAE_RECIPES = {r.name: r for r in (VAE_F4, VAE_F2)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def train_recipe(name: str, steps: int | None = None, run_dir: str | Path = "runs", device=None,
                 export: bool = True, init_from_shipped: bool = True, progress: bool = True,
                 out_dir: str | Path = SHIPPED_DIR, batch_size: int | None = None,
                 max_seconds: float | None = None, stop_at: int | None = None, precision: str | None = None) -> Path:
    """Train (or resume) a diffusion recipe and export its EMA weights; returns the exported path.

    Resumes exactly from `runs/<name>/state` when present; otherwise, if `init_from_shipped`, starts from
    the shipped checkpoint's weights (fresh optimiser) so a training budget can be spread over sessions.
    `batch_size` overrides the recipe's (e.g. a continuation on a GPU, where a step of 512 costs about what one
    of 128 does); the card states it and `images_seen` counts each part at its own batch size.
    `max_seconds`: stop (and checkpoint) after this long, to spread a run over sessions; it resumes from there.
    `stop_at`: stop (and checkpoint) at this step, the lr schedule still that of the whole run: a snapshot mid-way.
    `precision`: "bf16" runs the forward pass under bf16 autocast (the card states it), "fp32" (the recipes') not.
    """
    if name in VAE_RECIPES:
        if batch_size is not None or max_seconds is not None or stop_at is not None or precision is not None:
            raise ValueError("batch_size=, max_seconds=, stop_at= and precision= apply to the diffusion recipes only.")
        return train_vae_recipe(name, steps, run_dir, device, export, progress, out_dir)
    if name not in DIFFUSION_RECIPES:
        raise ValueError(f"unknown recipe {name!r}: choose from {sorted(DIFFUSION_RECIPES) + sorted(VAE_RECIPES)}.")
    recipe = DIFFUSION_RECIPES[name]
    device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    overrides = {"steps": steps, "batch_size": batch_size, "precision": precision}
    train_cfg = dataclasses.replace(recipe.train, **{k: v for k, v in overrides.items() if v is not None})
    state = Path(run_dir) / name / "state"
    lineage_path = state.with_name("lineage.json")  # what this run started from, and time spent so far
    if state.with_name("state.json").exists() and lineage_path.exists():
        lineage = json.loads(lineage_path.read_text())
    else:
        lineage = {"init_from": None, "steps_before": 0, "wall_clock_s": 0.0}
    lineage["device"] = device_description(device)
    state_json = state.with_name("state.json")
    if state_json.exists():  # resuming: record any change of the training recipe, so the card can state it
        before = json.loads(state_json.read_text())
        changed = {k: (v, getattr(train_cfg, k)) for k, v in before["train_config"].items()
                   if getattr(train_cfg, k) != v}  # a new --steps moves the lr decay too, so it is stated
        if changed:
            step = lineage.get("steps_before", 0) + before["step"]  # counted like the card's steps, warm start included
            note = f"from step {step:,}: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
            lineage.setdefault("changes", []).append(note)
            print(f"recipe changed since the last checkpoint ({note})")
    model = recipe.model_class(recipe.model)
    shipped = SHIPPED_DIR / f"{name}.safetensors"
    if not state.with_name("state.json").exists() and init_from_shipped and shipped.exists():
        start = load_model(recipe.model_class, shipped)
        load_state(model, start.state_dict(), str(shipped))
        lineage.update(init_from=str(shipped), steps_before=start.meta.get("steps", 0),
                       images_before=start.meta.get("images_seen", 0),
                       wall_clock_s=start.meta.get("wall_clock_s", 0.0), device_before=start.meta.get("device"),
                       inherited_changes=start.meta.get("changes", []))  # the card keeps the whole history
        print(f"starting from the shipped weights {shipped} ({lineage['steps_before']} steps)")
    lineage_path.parent.mkdir(parents=True, exist_ok=True)
    dataset = latent_dataset(recipe.latent_vae, Path(run_dir) / "latents") if recipe.latent_vae else load_tensors("train")
    lineage_path.write_text(json.dumps(lineage, indent=2))
    train_diffusion(model, recipe.scheduler(), dataset, train_cfg, device=device, checkpoint=state, progress=progress,
                    max_seconds=max_seconds, stop_at=stop_at)
    return export_run(name, run_dir, out_dir) if export else state


def train_vae_recipe(name: str, steps: int | None = None, run_dir: str | Path = "runs", device=None,
                     export: bool = True, progress: bool = True, out_dir: str | Path = SHIPPED_DIR) -> Path:
    """Train (or resume exactly from `runs/<name>/state`) a VAE recipe and export it with its latent scale."""
    recipe = VAE_RECIPES[name]
    device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_cfg = dataclasses.replace(recipe.train, steps=steps) if steps else recipe.train
    state = Path(run_dir) / name / "state"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.with_name("lineage.json").write_text(json.dumps({"device": device_description(device)}, indent=2))
    train_vae(VAE(recipe.model), load_tensors("train"), train_cfg, device=device, checkpoint=state, progress=progress)
    return export_run(name, run_dir, out_dir) if export else state


def export_vae_run(name: str, run_dir: str | Path = "runs", out_dir: str | Path = SHIPPED_DIR,
                   export_name: str | None = None) -> Path:
    """Export a VAE run's last checkpoint (fp16) with its latent scale, computed on 10,000 training images."""
    recipe = VAE_RECIPES[name]
    state = Path(run_dir) / name / "state"
    if not state.with_name("state.json").exists():
        raise FileNotFoundError(f"no training state at {state}.json: start it with `minildm train {name}`.")
    vae, run_meta = load_vae_training_state(state, VAE)
    vae = vae.half().float()  # measure the latent scale on the weights as shipped
    scale = latent_scale(vae, load_tensors("train", limit=10_000).tensors[0], generator=torch.Generator().manual_seed(0))
    lineage = json.loads(state.with_name("lineage.json").read_text())
    steps = run_meta["step"]
    recon = run_meta["history"]["recon"][-100:]
    meta = {
        "recipe": name, "description": recipe.description, "train_config": run_meta["train_config"],
        "steps": steps, "images_seen": steps * run_meta["train_config"]["batch_size"],
        "wall_clock_s": run_meta.get("seconds", 0.0), "device": lineage.get("device", "unknown"),
        "torch": torch.__version__, "date": datetime.date.today().isoformat(),
        "latent_scale": scale, "final_recon_avg100": round(sum(recon) / max(1, len(recon)), 5),
        "changes": lineage.get("changes", []),
    }
    return save_model(vae, Path(out_dir) / (export_name or name), meta=meta, dtype=torch.float16)


def _history(lineage: dict, train_cfg: TrainConfig | None = None) -> list[str]:
    """What the card says about how the weights came to be: the shipped weights' history, a warm start, changes."""
    continued = []
    if lineage.get("init_from"):
        where = (f"; the steps before it ran on {lineage['device_before']} ({lineage['wall_clock_s'] / 3600:.2f} h), "
                 f"those from it on {lineage['device']}" if lineage.get("device_before") not in (None, lineage.get("device"))
                 else "")  # the card's wall-clock adds up both parts
        if train_cfg is not None:  # the continuation's own schedule (its --steps), which the recipe lines above do not show
            decay = min(train_cfg.decay_steps, train_cfg.steps)
            where += (f"; it ran {train_cfg.steps:,} steps of batch {train_cfg.batch_size} at lr {train_cfg.lr:g} after a {train_cfg.warmup_steps:,}-step "
                      f"warm-up" + (f", decaying to 0 (cosine) over its last {decay:,}" if decay else ""))
        continued = [f"from step {lineage['steps_before']:,}: continued from the exported EMA weights "
                     f"({Path(lineage['init_from']).name}) with a fresh AdamW state (the earlier run's optimiser state "
                     f"was not kept); model and EMA start from those weights{where}"]
    return lineage.get("inherited_changes", []) + continued + lineage.get("changes", [])


def export_run(name: str, run_dir: str | Path = "runs", out_dir: str | Path = SHIPPED_DIR,
               export_name: str | None = None) -> Path:
    """Export the EMA weights of a run in progress (its last checkpoint) as the shipped checkpoint.

    `export_name` saves it under another name (e.g. a snapshot to compare, `vae_l1_3000`) instead of `name`."""
    if name in VAE_RECIPES:
        return export_vae_run(name, run_dir, out_dir, export_name)
    recipe = DIFFUSION_RECIPES[name]
    state = Path(run_dir) / name / "state"
    if not state.with_name("state.json").exists():
        raise FileNotFoundError(f"no training state at {state}.json: start it with `minildm train {name}`.")
    lineage = json.loads(state.with_name("lineage.json").read_text())
    ema, run_meta = load_training_state(state, recipe.model_class)
    train_cfg = TrainConfig(**run_meta["train_config"])
    steps_total = lineage["steps_before"] + run_meta["step"]
    images_before = lineage.get("images_before", lineage["steps_before"] * train_cfg.batch_size)  # a warm start's own
    losses = run_meta["losses"][-100:]
    meta = {
        "recipe": name, "description": recipe.description, "beta_schedule": recipe.beta_schedule,
        "prediction_type": recipe.prediction_type, "num_train_timesteps": recipe.num_train_timesteps,
        "train_config": run_meta["train_config"], "steps": steps_total,
        "images_seen": images_before + run_meta["step"] * train_cfg.batch_size,
        "wall_clock_s": round(lineage["wall_clock_s"] + run_meta.get("seconds", 0.0), 1),
        "device": lineage.get("device", "unknown"), "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "final_loss_avg100": round(sum(losses) / max(1, len(losses)), 5),
        "changes": _history(lineage, train_cfg),
    }
    if recipe.latent_vae:  # which decoder this latent model belongs to, and its scale
        from minildm.checkpoints import find, load_tensors as load_st, sha256_file
        vae_path = find(recipe.latent_vae)
        meta |= {"latent_vae": recipe.latent_vae, "latent_vae_sha256": sha256_file(vae_path),
                 "latent_scale": load_st(vae_path)[1]["meta"]["latent_scale"], "clip_sample": False}
    return save_model(ema, Path(out_dir) / (export_name or name), meta=meta, dtype=torch.float16)
