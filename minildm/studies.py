"""Measured studies: chapter 04's pixel vs latent diffusion at equal training wall-clock and its cost table, and
chapter 02's minildm vs diffusers UNet at an equal number of training images.

An *arm* is a diffusion recipe trained from scratch with a wall-clock budget: `train_arm` stops at each mark
(e.g. 5, 15, 30, 60 minutes of training; resuming from the run's checkpoint between marks is exact) and
exports a snapshot of the EMA weights; `eval_arm` samples every snapshot with CFG (DDIM-50) and scores it
with the harness (feature-FID against the test set, class accuracy). The pixel recipe `ddpm_cond` is f = 1;
`ldm_cond` is f = 4; `ldm_f2` (with `vae_f2`) is f = 2: FID against training time for each f is a miniature
of the LDM paper's downsampling-factor study. `cost_table` measures, in one process and in alternating rounds
so machine load hits both alike: parameters, training images/s, sampling seconds per image, and memory.
With `--steps` instead of `--minutes` an arm is trained from scratch for that many steps (the same images for
`ddpm_cond` and its diffusers peer `ddpm_cond_peer`) and scored into `results/equal_images.json`.

    python -m minildm.studies train ddpm_cond --minutes 15 60     # one arm per process; two run side by side
    python -m minildm.studies eval ddpm_cond --minutes 15 60 --n 5000
    python -m minildm.studies cost
    python -m minildm.studies train ddpm_cond_peer --steps 1000   # then: eval ddpm_cond_peer --steps 1000

References:
    Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022, §4.1 and
    Fig. 6 (FID against training progress for f in {1, 2, 4, 8, 16, 32}).
Derived in notebooks/04_latent_diffusion.ipynb (equal time) and notebooks/02_class_conditional.ipynb (equal images).
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import shutil
import time
from pathlib import Path

import torch

from minildm import checkpoints, metrics
from minildm.bench import guided_batched, latent_batched, schedulers_for
from minildm.speed import compare_throughput, num_parameters
from minildm.data import load_tensors
from minildm.models.unet import UNet
from minildm.recipes import DIFFUSION_RECIPES, device_description, export_run, latent_dataset, train_recipe
from minildm.training import train_diffusion

ROOT = Path(__file__).resolve().parent.parent
STUDY_DIR = Path("runs/equal_time")
RESULTS = ROOT / "results" / "equal_time.json"
BUDGET_DIR = Path("runs/equal_images")
BUDGET_RESULTS = ROOT / "results" / "equal_images.json"
COST_RESULTS = ROOT / "results" / "cost_table.json"
WIDTH_RESULTS = ROOT / "results" / "width_study.json"  # tools/width_study.py: ddpm_cond_wide vs ddpm_cond


def _recipe(name: str):
    if name not in DIFFUSION_RECIPES:
        raise ValueError(f"unknown diffusion recipe {name!r}: choose from {sorted(DIFFUSION_RECIPES)}.")
    return DIFFUSION_RECIPES[name]


def snapshot_path(name: str, minutes: float, run_dir: str | Path = STUDY_DIR) -> Path:
    return Path(run_dir) / name / "snapshots" / f"{name}_{minutes:g}min.safetensors"


def train_arm(name: str, minutes: list[float], run_dir: str | Path = STUDY_DIR, device=None,
              progress: bool = True) -> list[Path]:
    """Train recipe `name` from scratch until each wall-clock mark (minutes of training, cumulative) and export
    a snapshot at each. Rerunning continues where the run stopped; marks already passed are skipped."""
    recipe = _recipe(name)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    state = Path(run_dir) / name / "state"
    state.parent.mkdir(parents=True, exist_ok=True)
    lineage = state.with_name("lineage.json")
    if not lineage.exists():  # export_run reads it: a from-scratch run on this device
        lineage.write_text(json.dumps({"init_from": None, "steps_before": 0, "wall_clock_s": 0.0,
                                       "device": device_description(device),
                                       "changes": [f"trained by minildm.studies at equal wall-clock ({minutes} min)"]},
                                      indent=2))
    dataset = latent_dataset(recipe.latent_vae) if recipe.latent_vae else load_tensors("train")
    paths = []
    for mark in sorted(minutes):
        done = json.loads(state.with_name("state.json").read_text()).get("seconds", 0.0) \
            if state.with_name("state.json").exists() else 0.0
        if done < mark * 60:
            model = UNet(recipe.model)
            # constant lr: an arm is cut at a minute mark, not at the end of a schedule
            train_diffusion(model, recipe.scheduler(), dataset, dataclasses.replace(recipe.train, decay_steps=0),
                            device=device, checkpoint=state,
                            progress=progress, max_seconds=mark * 60 - done)
        out = snapshot_path(name, mark, run_dir)
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            export_run(name, run_dir, out.parent, export_name=out.stem)
        paths.append(out)
    return paths


def load_pair(path: str | Path, device=None):
    """A diffusion checkpoint and, for a latent model, the VAE it was trained on (sha256 checked); else None."""
    unet = checkpoints.load_model(UNet, Path(path), device=device or "cpu")
    return unet, checkpoints.matching_vae(unet, device or "cpu", str(path))


def sample_images(unet, vae, labels, guidance_scale: float = 2.0, steps: int = 50, seed: int = 0, device=None):
    """CFG samples (DDIM) from a pixel model (`vae=None`) or a latent model (decoded): CPU images in [-1, 1]."""
    ddim = schedulers_for(unet, guided=True)[1]
    if vae is None:
        return guided_batched(unet, ddim, labels, guidance_scale, steps, seed=seed, device=device)
    return latent_batched(unet, vae, ddim, labels, guidance_scale, steps, seed=seed, device=device)


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def score(unet, vae, n: int, guidance_scale: float, steps: int = 50, device=None) -> dict:
    """Harness numbers of one checkpoint: n CFG samples (DDIM, seed 0, every class equally often), feature-FID
    against the test set with its real-vs-real floor at the same n, class accuracy, sampling seconds per image."""
    labels = torch.arange(n) % unet.config.num_classes
    start = time.perf_counter()
    images = sample_images(unet, vae, labels, guidance_scale, steps, device=device)
    seconds = time.perf_counter() - start
    acc = metrics.class_accuracy(images, labels)
    fid = metrics.fid_report(images)
    return {"steps": unet.meta["steps"], "images_seen": unet.meta["images_seen"],
            "train_seconds": unet.meta["wall_clock_s"], "n_samples": n, "fid": fid["fid"],
            "fid_floor": fid["fid_floor"], "fid_ratio": fid["fid"] / fid["fid_floor"],
            "class_accuracy": round(acc["overall"], 4), "guidance_scale": guidance_scale,
            "sampler": f"ddim-{steps}", "params": num_parameters(unet), "sample_s_per_img": round(seconds / n, 4),
            "train_device": unet.meta["device"], "date": unet.meta["date"]}


def _write_row(out: Path, key: str, row: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:  # arms are evaluated side by side: one writer at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = _load_results(out)
        results[key] = row
        write_json_atomic(out, dict(sorted(results.items())))


def eval_arm(name: str, minutes: list[float], n: int = 1000, guidance_scale: float = 2.0, steps: int = 50,
             run_dir: str | Path = STUDY_DIR, device=None, out: Path = RESULTS) -> dict:
    """Score each snapshot of an arm (FID with n samples, class accuracy); rows are written as they finish."""
    rows = {}
    for mark in sorted(minutes):
        path = snapshot_path(name, mark, run_dir)
        if not path.exists():
            raise FileNotFoundError(f"no snapshot {path}: train it first with "
                                    f"`python -m minildm.studies train {name} --minutes {mark:g}`.")
        unet, vae = load_pair(path, device)
        row = {"recipe": name, "f": 32 // unet.config.image_size, "train_minutes": mark,
               **score(unet, vae, n, guidance_scale, steps, device)}
        _write_row(out, f"{name} / {mark:g} min / n={n}", row)
        rows[mark] = row
        print(f"{name} at {mark:g} min ({row['steps']} steps): FID {row['fid']:.3f} (n={n}), "
              f"accuracy {row['class_accuracy']:.3f}", flush=True)
    return rows


def budget_snapshot(name: str, steps: int, run_dir: str | Path = BUDGET_DIR) -> Path:
    return Path(run_dir) / f"{steps}steps" / "snapshots" / f"{name}.safetensors"


def train_budget_arm(name: str, steps: int, run_dir: str | Path = BUDGET_DIR, device=None,
                     progress: bool = True) -> Path:
    """Chapter 02's same-budget comparison, from scratch: recipe `name` trained for `steps` steps (its own lr
    schedule, the cosine decay over the last min(decay_steps, steps)) and exported. `ddpm_cond` and
    `ddpm_cond_peer` share the TrainConfig and its seeds, so at one `steps` they see the same images in the same
    order, with the same noise, timesteps and dropped labels: the arms differ in the network alone."""
    out = budget_snapshot(name, steps, run_dir)
    if out.exists():
        return out
    train_recipe(name, steps, run_dir=out.parent.parent, device=device, export=False, init_from_shipped=False,
                 progress=progress)  # resumes exactly if stopped
    return export_run(name, out.parent.parent, out.parent)


def eval_budget_arm(name: str, steps: int, n: int = 1000, guidance_scale: float = 1.5, run_dir: str | Path = BUDGET_DIR,
                    device=None, out: Path = BUDGET_RESULTS) -> dict:
    """Score the arm `train_budget_arm` exported (DDIM-50 with CFG, as `minildm bench`)."""
    path = budget_snapshot(name, steps, run_dir)
    if not path.exists():
        raise FileNotFoundError(f"no snapshot {path}: train it first with "
                                f"`python -m minildm.studies train {name} --steps {steps}`.")
    model = checkpoints.load_model(_recipe(name).model_class, path, device=device or "cpu")
    row = {"recipe": name, **score(model, None, n, guidance_scale, device=device)}
    _write_row(out, f"{name} / {steps} steps / s={guidance_scale:g} / n={n}", row)
    print(f"{name} at {steps} steps ({row['images_seen']:,} images): FID {row['fid']:.3f}, floor "
          f"{row['fid_floor']:.3f} (n={n}), accuracy {row['class_accuracy']:.3f}", flush=True)
    return row


def equal_images_summary(path: Path = BUDGET_RESULTS, mine: str = "ddpm_cond", other: str = "ddpm_cond_peer") -> str | None:
    """ddpm_cond vs its diffusers peer trained from scratch on the same images (`minildm.studies --steps`), at the
    largest budget where both were scored alike: "FID ratio 3.10 vs 4.20, accuracy 0.900 vs 0.710: better on both
    (128,000 images each; n = 1,000, s = 1.5, ddim-50)". Likewise any two recipes `mine` vs `other` in the rows
    at `path` (e.g. results/width_study.json: ddpm_cond_wide vs ddpm_cond, tools/width_study.py)."""
    rows = list(json.loads(path.read_text()).values()) if path.exists() else []
    alike = lambda r: (r["images_seen"], r["n_samples"], r["guidance_scale"], r["sampler"])  # noqa: E731
    pairs = {alike(a): (a, b) for a in rows for b in rows
             if a["recipe"] == mine and b["recipe"] == other and alike(a) == alike(b)}
    if not pairs:
        return None
    a, b = pairs[max(pairs)]
    better = a["fid_ratio"] < b["fid_ratio"] and a["class_accuracy"] > b["class_accuracy"]
    return (f"FID ratio {a['fid_ratio']:.2f} vs {b['fid_ratio']:.2f}, accuracy {a['class_accuracy']:.3f} vs "
            f"{b['class_accuracy']:.3f}: {'better on both' if better else 'not better on both'} "
            f"({a['images_seen']:,} images each; n = {a['n_samples']:,}, s = {a['guidance_scale']:g}, {a['sampler']})")


def equal_time_ratio(minutes: float, path: Path = RESULTS) -> float | None:
    """Latent FID over pixel FID at equal training wall-clock, from `python -m minildm.studies eval` (n >= 5,000)."""
    rows = json.loads(path.read_text()).values() if path.exists() else []
    at = {r["recipe"]: r["fid"] for r in rows if r["train_minutes"] == minutes and r["n_samples"] >= 5000}
    return round(at["ldm_cond"] / at["ddpm_cond"], 3) if {"ldm_cond", "ddpm_cond"} <= set(at) else None


def activation_bytes(model, x_t, t, cond) -> int:
    """Bytes of the activations a training step keeps for backward, counted exactly: every tensor autograd
    saves, each storage once, the model's weights excluded (they do not grow with the batch)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x_t, t, cond).pow(2).mean()
    return sum(seen.values())


def cost_table(batch_size: int = 128, sample_batch: int = 64, steps: int = 50, guidance_scale: float = 2.0,
               rounds: int = 3, device=None) -> dict:
    """Pixel (`ddpm_cond`) against latent (`ldm_cond` + its VAE decoder) on this machine, in one process.

    Training images/s: fresh copies of both UNets, alternating rounds, the recipes' batch size. Sampling
    seconds/image: CFG DDIM-`steps` on a batch of `sample_batch`, the latent time including the VAE decode,
    alternating rounds, median. Memory: parameters + AdamW state, and the activations a training step keeps for
    backward at `batch_size` (counted with saved-tensor hooks; on a GPU also the peak allocated)."""
    device = torch.device(device or "cpu")
    pixel, _ = load_pair(checkpoints.find("ddpm_cond"), device)
    latent, vae = load_pair(checkpoints.find("ldm_cond"), device)
    rates = compare_throughput({"latent": UNet(latent.config).to(device), "pixel": UNet(pixel.config).to(device)},
                               rounds=rounds, batch_size=batch_size)
    labels = torch.arange(sample_batch) % 10
    times = {"pixel": [], "latent": []}
    for _ in range(rounds):
        for key, (unet, dec) in {"pixel": (pixel, None), "latent": (latent, vae)}.items():
            start = time.perf_counter()
            sample_images(unet, dec, labels, guidance_scale, steps, device=device)
            times[key].append((time.perf_counter() - start) / sample_batch)
    row = {"device": device_description(device), "batch_size": batch_size, "sample_batch": sample_batch,
           "sampler": f"ddim-{steps}, CFG s={guidance_scale:g}", "date": time.strftime("%Y-%m-%d")}
    for key, unet in {"pixel": pixel, "latent": latent}.items():
        shape = (batch_size, unet.config.in_channels, unet.config.image_size, unet.config.image_size)
        x_t = torch.randn(shape, device=device)
        t = torch.randint(0, 1000, (batch_size,), device=device)
        cond = torch.randint(0, 10, (batch_size,), device=device)
        params = num_parameters(unet)
        row[key] = {"params": params, "input_shape": list(shape[1:]), "train_img_per_s": round(rates[key]),
                    "sample_s_per_img": round(sorted(times[key])[len(times[key]) // 2], 4),
                    "params_and_adam_mib": round(params * 4 * 4 / 2**20, 1),  # weights, grads, two moments (fp32)
                    "activation_mib": round(activation_bytes(UNet(unet.config).to(device), x_t, t, cond) / 2**20, 1)}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            UNet(unet.config).to(device)(x_t, t, cond).pow(2).mean().backward()
            row[key]["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    row["latent"]["vae_decoder_params"] = num_parameters(vae.decoder) if hasattr(vae, "decoder") else None
    row["train_speedup"] = round(row["latent"]["train_img_per_s"] / row["pixel"]["train_img_per_s"], 2)
    row["sample_speedup"] = round(row["pixel"]["sample_s_per_img"] / row["latent"]["sample_s_per_img"], 2)
    row["activation_ratio"] = round(row["pixel"]["activation_mib"] / row["latent"]["activation_mib"], 2)
    return row


def promote(name: str = "ldm_cond", run_dir: str | Path = STUDY_DIR, runs: str | Path = "runs") -> Path:
    """Make an arm's run the recipe's run (`runs/<name>`) and export it as the shipped checkpoint."""
    src, dst = Path(run_dir) / name, Path(runs) / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("snapshots"))
    return export_run(name, runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minildm.studies", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd in ("train", "eval"):
        p = sub.add_parser(cmd)
        p.add_argument("recipe")
        budget = p.add_mutually_exclusive_group(required=True)
        budget.add_argument("--minutes", type=float, nargs="+", help="wall-clock marks (chapter 04's equal time)")
        budget.add_argument("--steps", type=int, help="a step budget from scratch (chapter 02's equal images)")
        p.add_argument("--n", type=int, default=1000)
        p.add_argument("--guidance-scale", type=float, default=None, help="default 2 (--minutes), 1.5 (--steps)")
    cost = sub.add_parser("cost")
    cost.add_argument("--rounds", type=int, default=3)
    sub.add_parser("promote").add_argument("recipe", nargs="?", default="ldm_cond")
    for p in sub.choices.values():
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "train" and args.steps:
        print(train_budget_arm(args.recipe, args.steps, device=args.device))
    elif args.command == "train":
        for path in train_arm(args.recipe, args.minutes, device=args.device):
            print(path)
    elif args.command == "eval" and args.steps:
        eval_budget_arm(args.recipe, args.steps, n=args.n, guidance_scale=args.guidance_scale or 1.5,
                        device=args.device)
    elif args.command == "eval":
        eval_arm(args.recipe, args.minutes, n=args.n, guidance_scale=args.guidance_scale or 2.0, device=args.device)
    elif args.command == "cost":
        row = cost_table(rounds=args.rounds, device=args.device)
        write_json_atomic(COST_RESULTS, row)
        print(json.dumps(row, indent=2))
    else:
        print(promote(args.recipe))


if __name__ == "__main__":
    main()
