"""`minildm bench`: every shipped checkpoint measured the same way, written to results/metrics.json.

For each model: generate n samples (default 5,000; the sampler and step count are recorded), compute the
harness metrics (feature-FID with its real-vs-real floor at the same n, class accuracy for conditional
models), and time training images/s and sampling seconds per image on this machine, side by side with the
peer each chapter names (diffusers' `UNet2DModel` for the pixel UNet). Rows are merged into
`results/metrics.json` (a row is replaced only when it is measured again) and rendered as
`results/metrics.md`, which is copied into README.md between the `results` markers.

References:
    Heusel et al. (2017) FID; Binkowski et al. (2018) on domain-specific features. See minildm.metrics.

Used by every chapter's closing metrics table; documented in README.md.
"""
from __future__ import annotations

import datetime
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from minildm import checkpoints, metrics
from minildm.models.unet import UNet
from minildm.pipelines.diffusion import sample_batched
from minildm.pipelines.guided import guided_sample
from minildm.recipes import device_description
from minildm.schedulers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from minildm.schedulers.schedules import TIMESTEP_SPACINGS
from minildm.speed import (PEERS, compare_throughput, diffusers_peer, num_parameters,  # noqa: F401  (re-exported)
                           sample_seconds_per_image, train_speed, train_throughput)

from minildm.results import (README_END, README_START, RESULTS, ROOT, markdown_table, row_key,  # noqa: F401
                             update_readme, write_results)

def schedulers_for(model, guided: bool = False, spacing: str = "leading",
                   eta: float = 0.0, clipped_eps: bool = False) -> tuple[DDPMScheduler, DDIMScheduler]:
    """The DDPM and DDIM schedulers a shipped model was trained for (from its checkpoint metadata).

    `guided=True` or `clipped_eps=True`: DDIM recomputes eps from the clipped x0 (`use_clipped_model_output`,
    as guided-diffusion's DDIM always does), which CFG needs and which also helps unguided pixel sampling
    (measured in notebooks/01_ddpm_from_scratch.ipynb).
    `spacing` and `eta`: DDIM's timestep spacing and noise (defaults: diffusers' "leading", deterministic 0).
    """
    meta = model.meta
    kw = dict(num_train_timesteps=meta["num_train_timesteps"], beta_schedule=meta["beta_schedule"],
              prediction_type=meta["prediction_type"],
              clip_sample=meta.get("latent_vae") is None)  # latents are unit-variance, not [-1, 1] images
    return DDPMScheduler(**kw), DDIMScheduler(**kw, use_clipped_model_output=guided or clipped_eps, timestep_spacing=spacing, eta=eta)


def dpm_solver_for(model) -> DPMSolverMultistepScheduler:
    """DPM-Solver++(2M) for a shipped pixel model (diffusers' defaults: "linspace" timesteps; x0 clipped to [-1, 1])."""
    meta = model.meta
    return DPMSolverMultistepScheduler(num_train_timesteps=meta["num_train_timesteps"],
                                       beta_schedule=meta["beta_schedule"], prediction_type=meta["prediction_type"])


def ddim_fields(sampler: str, spacing: str, eta: float) -> dict:
    """The DDIM settings a row records (its key names them when they are not the defaults; see row_key)."""
    return {"timestep_spacing": spacing, "eta": eta} if sampler == "ddim" else {}


def seed_field(seed: int) -> dict:
    """The sampling seed, recorded (and named in the row key) only when it is not the default 0."""
    return {"seed": seed} if seed else {}


def bench_ddpm(n: int, sampler: str, steps: int, device, quick: bool, spacing: str = "leading",
               eta: float = 0.0, clipped_eps: bool = False, seed: int = 0) -> dict:
    model = checkpoints.load_model(UNet, checkpoints.find("ddpm"), device=device)
    ddpm, ddim = schedulers_for(model, spacing=spacing, eta=eta, clipped_eps=clipped_eps)
    scheduler, steps_arg = (ddim, steps) if sampler == "ddim" else (ddpm, None)
    images = sample_batched(model, scheduler, n, batch_size=500, seed=seed, num_inference_steps=steps_arg,
                            device=device)
    return {
        **metrics.fid_report(images), "model": "ddpm", "sampler": sampler,
        "steps": steps if sampler == "ddim" else 1000,
        **ddim_fields(sampler, spacing, eta), **seed_field(seed), "params": num_parameters(model),
        **({"ddim_eps_from_clipped_x0": clipped_eps} if sampler == "ddim" else {}),
        "sample_s_per_img": round(sample_seconds_per_image(model, scheduler, steps_arg,
                                                           n=4 if quick else 32, device=device), 4),
        # both samplers timed side by side on the same machine (16 images each; skipped in quick mode)
        "sample_s_per_img_ddim50": None if quick else round(sample_seconds_per_image(model, ddim, 50, 16, device), 4),
        "sample_s_per_img_ddpm1000": None if quick else round(sample_seconds_per_image(model, ddpm, None, 16, device), 4),
    }


@torch.no_grad()
def guided_batched(model, scheduler, labels, guidance_scale, steps, seed=0, batch_size=500, device=None,
                   guidance_interval=None):
    """Many CFG samples in batches with one seeded generator (for metrics). Returns CPU images."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in tqdm(range(0, len(labels), batch_size), desc=f"sampling {len(labels)} (s={guidance_scale:g})"):
        out.append(guided_sample(model, scheduler, labels[start:start + batch_size], guidance_scale, generator,
                                 steps, device, guidance_interval=guidance_interval).images.cpu())  # with its step bar
    return torch.cat(out)


def interval_field(guidance_interval) -> dict:
    """The t range CFG was limited to (`guided_sample`), recorded (and named in the row key) only when given."""
    return {"guidance_interval": list(guidance_interval)} if guidance_interval else {}


def bench_ddpm_cond(n: int, sampler: str, steps: int, device, quick: bool, guidance_scale: float = 3.0,
                    spacing: str = "leading", eta: float = 0.0, seed: int = 0, guidance_interval=None,
                    name: str = "ddpm_cond") -> dict:
    """Chapter 02: guided samples of the class-conditional model, and its training speed against the chapter's
    standard diffusers recipe (`UNet2DModel`, widths 32-64-128-256, class embeddings; `models/peers.py`).

    `name="ddpm_cond_peer"`: that standard recipe itself, trained with `minildm train ddpm_cond_peer` (the
    same-budget comparison), measured the same way."""
    from minildm.recipes import DIFFUSION_RECIPES
    model = checkpoints.load_model(DIFFUSION_RECIPES[name].model_class, checkpoints.find(name), device=device)
    ddpm, ddim = schedulers_for(model, guided=True, spacing=spacing, eta=eta)
    scheduler, steps_arg = {"ddim": (ddim, steps), "ddpm": (ddpm, None), "dpm++2m": (dpm_solver_for(model), steps)}[sampler]
    labels = torch.arange(n) % model.config.num_classes  # every class equally often
    start = time.perf_counter()
    images = guided_batched(model, scheduler, labels, guidance_scale, steps_arg, seed=seed, device=device,
                            guidance_interval=guidance_interval)
    seconds = time.perf_counter() - start
    acc = metrics.class_accuracy(images, labels)
    return {**metrics.fid_report(images), "model": name, "sampler": sampler,
            "train_images_seen": model.meta.get("images_seen"),  # the budget, for same-budget comparisons
            "steps": 1000 if sampler == "ddpm" else steps, "guidance_scale": guidance_scale,
            "ddim_eps_from_clipped_x0": sampler == "ddim", **ddim_fields(sampler, spacing, eta), **seed_field(seed),
            **({"solver_timestep_spacing": scheduler.timestep_spacing} if sampler == "dpm++2m" else {}),
            **interval_field(guidance_interval), "params": num_parameters(model),
            "class_accuracy": round(acc["overall"], 4),
            "class_accuracy_per_class": [round(a, 4) for a in acc["per_class"]],
            "confusion": acc["confusion"], "sample_s_per_img": round(seconds / n, 4)}


@torch.no_grad()
def reconstruct(vae, x: torch.Tensor, batch_size: int = 500, device=None) -> torch.Tensor:
    """Deterministic reconstructions `decode(mode(encode(x)))` of images `(N, C, H, W)`, clamped to [-1, 1]."""
    device = device or next(vae.parameters()).device
    vae.eval()
    return torch.cat([vae.decode(vae.encode(x[i:i + batch_size].to(device)).mode()).clamp(-1, 1).cpu()
                      for i in range(0, len(x), batch_size)])


def reconstruction_report(reconstructions: torch.Tensor, originals: torch.Tensor, labels: torch.Tensor) -> dict:
    """Chapter 03's harness numbers for an autoencoder, on the 28x28 image area (the 2-pixel padding is cut off
    so that trivially reconstructed background does not inflate PSNR): PSNR, SSIM, reference-classifier accuracy
    on the reconstructions, and reconstruction feature-FID against the test set with its floor at the same n."""
    acc = metrics.class_accuracy(reconstructions, labels)["overall"]
    return {**metrics.fid_report(reconstructions), "psnr_db": round(metrics.psnr(reconstructions, originals, border=2), 3),
            "ssim": round(metrics.ssim(reconstructions, originals, border=2), 4), "class_accuracy": round(acc, 4)}


def bench_vae(n: int, sampler: str, steps: int, device, quick: bool, name: str = "vae") -> dict:
    """A VAE checkpoint on the test set: all 10,000 images (`n` in quick mode), reconstructed deterministically.

    `name`: "vae" (the shipped one) or any checkpoint `vae_*` that `checkpoints.find` locates, e.g. a training
    snapshot exported to a folder named by $MINILDM_CHECKPOINTS (notebook 03's table of variants)."""
    from minildm.models.vae import VAE
    from minildm.data import load_tensors
    vae = checkpoints.load_model(VAE, checkpoints.find(name), device=device)
    x, labels = load_tensors("test", limit=n if quick else None).tensors
    start = time.perf_counter()
    rec = reconstruct(vae, x, device=device)
    seconds = time.perf_counter() - start
    scale = vae.meta["latent_scale"]
    z = torch.cat([vae.encode(x[i:i + 500].to(device)).mode().cpu() for i in range(0, len(x), 500)]) * scale
    return {**reconstruction_report(rec, x, labels), "model": name, "sampler": "reconstruction", "steps": 0,
            "train_steps": vae.meta.get("steps"), "train_config": vae.meta.get("train_config"),
            "params": num_parameters(vae), "latent_scale": scale, "scaled_latent_std": round(z.std().item(), 4),
            "scaled_latent_mean": round(z.mean().item(), 4), "sample_s_per_img": round(seconds / len(x), 5)}


def load_latent_pair(name: str = "ldm_cond", device=None):
    """A latent model and the VAE it was trained on; refuses a VAE whose sha256 differs from the recorded one."""
    unet = checkpoints.load_model(UNet, checkpoints.find(name), device=device or "cpu")
    vae = checkpoints.matching_vae(unet, device or "cpu", name)
    if vae is None:
        raise checkpoints.CheckpointError(f"{name} is not a latent model (no meta['latent_vae']).")
    return unet, vae


@torch.no_grad()
def latent_batched(unet, vae, scheduler, labels, guidance_scale, steps, seed=0, batch_size=500, device=None,
                   guidance_interval=None):
    """Many latent CFG samples in batches with one seeded generator (for metrics). Returns CPU images."""
    from minildm.pipelines.latent import latent_guided_sample
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([latent_guided_sample(unet, vae, scheduler, labels[i:i + batch_size], guidance_scale, generator,
                                           steps, device=device, progress=False,
                                           guidance_interval=guidance_interval).images.cpu()
                      for i in range(0, len(labels), batch_size)])


def bench_ldm_cond(n: int, sampler: str, steps: int, device, quick: bool, guidance_scale: float = 3.0,
                   spacing: str = "leading", eta: float = 0.0, seed: int = 0, guidance_interval=None) -> dict:
    """Chapter 04: the latent model's samples (decoded) and its cost against the pixel model of chapter 02.

    `guidance_interval=(lo, hi)`: CFG only at lo < t <= hi (see `latent_guided_sample`); the row records it."""
    unet, vae = load_latent_pair("ldm_cond", device)
    ddpm, ddim = schedulers_for(unet, guided=True, spacing=spacing, eta=eta)
    scheduler, steps_arg = (ddim, steps) if sampler == "ddim" else (ddpm, None)
    labels = torch.arange(n) % unet.config.num_classes
    start = time.perf_counter()
    images = latent_batched(unet, vae, scheduler, labels, guidance_scale, steps_arg, seed=seed, device=device,
                            guidance_interval=guidance_interval)
    seconds = time.perf_counter() - start
    acc = metrics.class_accuracy(images, labels)
    row = {**metrics.fid_report(images), "model": "ldm_cond", "sampler": sampler,
           "steps": steps if sampler == "ddim" else 1000, "guidance_scale": guidance_scale,
           **ddim_fields(sampler, spacing, eta), **seed_field(seed), "params": num_parameters(unet),
           **interval_field(guidance_interval), "class_accuracy": round(acc["overall"], 4),
           "class_accuracy_per_class": [round(a, 4) for a in acc["per_class"]], "confusion": acc["confusion"],
           "sample_s_per_img": round(seconds / n, 4)}
    # the floor the autoencoder sets: its reconstructions of n test images, FID at the same n
    from minildm.data import load_tensors
    x_test = load_tensors("test", limit=n).tensors[0]
    row["vae_recon_fid_same_n"] = metrics.fid(reconstruct(vae, x_test, device=device))
    row["fid_over_vae_recon_fid"] = round(row["fid"] / row["vae_recon_fid_same_n"], 3)
    # how much that floor moves with the images reconstructed: the pixel floor's n training images (seeds 0 and 1)
    x_train = load_tensors("train").tensors[0]
    row["vae_recon_fid_train_same_n"] = [
        metrics.fid(reconstruct(vae, x_train[metrics.train_subset(len(x_train), n, seed)], device=device))
        for seed in (0, 1)]
    if not quick:  # chapter 04's cost table (minildm.studies.cost_table): same machine, alternating rounds
        from minildm.studies import cost_table
        cost = cost_table(device=device, steps=steps, guidance_scale=guidance_scale)
        row |= {"train_img_per_s": cost["latent"]["train_img_per_s"],
                "pixel_train_img_per_s": cost["pixel"]["train_img_per_s"], "train_speedup_vs_pixel": cost["train_speedup"],
                "sample_batch": cost["sample_batch"], "sample_s_per_img_batch": cost["latent"]["sample_s_per_img"],
                "pixel_sample_s_per_img_batch": cost["pixel"]["sample_s_per_img"],
                "sample_speedup_vs_pixel": cost["sample_speedup"]}
    return row


def bench_ldm_text(n: int, sampler: str, steps: int, device, quick: bool, guidance_scale: float = 4.0,
                   split: str = "train", name: str = "ldm_text") -> dict:
    """Chapter 05: a text-to-image model on a prompt set (held-in or held-out wording); see minildm.text_eval."""
    from minildm.text_eval import bench_text
    if sampler != "ddim":
        raise ValueError("text models are measured with DDIM (--sampler ddim).")
    return bench_text(name, n, steps, guidance_scale, device, split)


BENCHES = {"ddpm": bench_ddpm, "ddpm_cond": bench_ddpm_cond, "vae": bench_vae, "ldm_cond": bench_ldm_cond,
           "ddpm_cond_peer": lambda *a, **kw: bench_ddpm_cond(*a, **kw, name="ddpm_cond_peer"),
           "ddpm_cond_wide": lambda *a, **kw: bench_ddpm_cond(*a, **kw, name="ddpm_cond_wide"),
           "ldm_text": bench_ldm_text,
           "ldm_text_tiny": lambda *a, **kw: bench_ldm_text(*a, **kw, name="ldm_text_tiny")}
TEXT_MODELS = ("ldm_text", "ldm_text_tiny")
DDIM_OPTION_MODELS = ("ddpm", "ddpm_cond", "ddpm_cond_peer", "ddpm_cond_wide", "ldm_cond")  # the benches that take --spacing and --eta
GUIDED_MODELS = ("ddpm_cond", "ddpm_cond_peer", "ddpm_cond_wide", "ldm_cond")  # class-conditional: a row per guidance scale
PIXEL_GUIDED_MODELS = ("ddpm_cond", "ddpm_cond_peer", "ddpm_cond_wide")  # the ones --sampler dpm++2m applies to
SAMPLERS = ("ddim", "ddpm", "dpm++2m")


def shipped_models() -> list[str]:
    return [name for name in BENCHES if (checkpoints.SHIPPED_DIR / f"{name}.safetensors").exists()]


def run(models: list[str] | None = None, n: int = 5000, sampler: str = "ddim", steps: int = 50,
        out_dir: str | Path = RESULTS, device=None, quick: bool = False, readme: bool = True,
        guidance_scale: float | list[float] = 3.0, spacing: str = "leading", eta: float = 0.0,
        clipped_eps: bool = False, seed: int = 0, guidance_interval: tuple[int, int] | None = None) -> list[dict]:
    """Measure the given models (default: all shipped) and merge the rows into `out_dir/metrics.json`.

    `sampler`: "ddim" (`steps` steps), "ddpm" (all T steps) or "dpm++2m" (DPM-Solver++(2M), `steps` steps; the
    pixel class-conditional models only).
    `guidance_scale`: one CFG scale or a list (a sweep: one row per scale) for class-conditional models.
    `spacing`, `eta`: DDIM's timestep spacing and noise, for ddpm, ddpm_cond and ldm_cond (row keys name
    them when they differ from "leading" and 0).
    `clipped_eps`: unguided DDIM (ddpm) recomputes eps from the clipped x0, as guided sampling always does.
    `seed`: the sampling seed for ddpm, ddpm_cond and ldm_cond (row keys name it when it is not 0).
    `guidance_interval`: (lo, hi) for ddpm_cond and ldm_cond: CFG only at lo < t <= hi (row keys name it).
    """
    scales = [guidance_scale] if isinstance(guidance_scale, (int, float)) else list(guidance_scale)
    models = models or shipped_models()
    unknown = sorted(m for m in set(models) - set(BENCHES) if not m.startswith("vae_"))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}: choose from {sorted(BENCHES)}.")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}.")
    if sampler == "dpm++2m" and set(models) - set(PIXEL_GUIDED_MODELS):
        raise ValueError(f"--sampler dpm++2m is measured for {', '.join(PIXEL_GUIDED_MODELS)} only, not for "
                         f"{sorted(set(models) - set(PIXEL_GUIDED_MODELS))}.")
    if n < 2:
        raise ValueError(f"n={n}: FID needs at least 2 samples (5,000 recommended).")
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}: choose one of {TIMESTEP_SPACINGS}.")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta={eta} is outside [0, 1] (0 = deterministic DDIM, 1 = DDPM-like noise).")
    ddim_kw = {} if (spacing, eta) == ("leading", 0.0) else {"spacing": spacing, "eta": eta}
    if ddim_kw and sampler != "ddim":
        raise ValueError("--spacing and --eta are DDIM settings: use them with --sampler ddim.")
    if ddim_kw and set(models) - set(DDIM_OPTION_MODELS):
        raise ValueError(f"--spacing and --eta apply to {DDIM_OPTION_MODELS} only, not to "
                         f"{sorted(set(models) - set(DDIM_OPTION_MODELS))}.")
    if clipped_eps and (sampler != "ddim" or set(models) != {"ddpm"}):
        raise ValueError("--clipped-eps is a DDIM setting of the unguided model: use it with ddpm and --sampler ddim "
                         "(guided models always recompute eps from the clipped x0).")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}: give a non-negative integer.")
    if seed and set(models) - set(DDIM_OPTION_MODELS):
        raise ValueError(f"--seed applies to {DDIM_OPTION_MODELS} only, not to "
                         f"{sorted(set(models) - set(DDIM_OPTION_MODELS))}.")
    ddim_kw |= {"clipped_eps": True} if clipped_eps else {}
    if guidance_interval is not None:
        if set(models) - set(GUIDED_MODELS):
            raise ValueError(f"--guidance-interval applies to {', '.join(GUIDED_MODELS)} only, not to "
                             f"{sorted(set(models) - set(GUIDED_MODELS))}.")
        from minildm.pipelines.guided import check_guidance_interval
        interval_kw = {"guidance_interval": check_guidance_interval(guidance_interval)}
    else:
        interval_kw = {}
    sample_kw = {**seed_field(seed), **interval_kw}
    if n < 5000:
        warnings.warn(f"n={n} < 5000: FID is biased upwards and noisy at small n; compare it only with the "
                      f"floor at the same n (reported beside it).", stacklevel=2)
    device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    guided = GUIDED_MODELS
    jobs = []
    for name in models:  # a row per scale for guided models; and per prompt set for text models
        if name in TEXT_MODELS:
            jobs += [(name, {"guidance_scale": s, "split": split}) for s in scales for split in ("train", "heldout")]
        else:
            jobs += ([(name, {"guidance_scale": s, **ddim_kw, **sample_kw}) for s in scales] if name in guided
                     else [(name, {**ddim_kw, **sample_kw})])
    speeds = {}  # training speed against the diffusers peer: timed once per model, copied into each of its rows
    for name, kwargs in jobs:
        if name.startswith("vae_"):  # a VAE variant checkpoint
            row = bench_vae(n, sampler, steps, device, quick, name=name)
        else:
            row = BENCHES[name](n, sampler, steps, device, quick, **kwargs)
        if name in ("ddpm", "ddpm_cond"):
            if name not in speeds:
                speeds[name] = train_speed(name, device, quick)
            row |= speeds[name]
        row |= {"device": device_description(device), "date": datetime.date.today().isoformat(),
                "checkpoint_sha256": checkpoints.sha256_file(checkpoints.find(name))}  # which weights were measured
        rows.append(row)
        print(f"{row_key(row)}: n={row['n_samples']} FID {row['fid']:.3f} floor {row['fid_floor']:.3f} "
              f"ratio {row['fid_ratio']:.2f}", flush=True)
        json_path, md_path = write_results([row], Path(out_dir))  # each row as soon as it is measured
    if readme and Path(out_dir).resolve() == RESULTS.resolve():
        update_readme(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    return rows
