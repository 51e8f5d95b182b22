"""Probe: does autoguidance by an earlier, less-trained `ddpm_cond` help the shipped one? (chapter 02, issue 5)

    python tools/autoguidance_probe.py --seed 0 1                 # CFG s = 1.25 + autoguidance w = 1.5, n = 1,000
    python tools/autoguidance_probe.py --seed 0 --w 2 --cfg 1     # autoguidance alone

Autoguidance (Karras et al. 2024) guides a model with a worse version of itself instead of with its own
unconditional prediction. Both run with the labels; per step

    eps_good = eps_uncond + s * (eps_cond - eps_uncond)      # the shipped model, CFG as in guided_sample
    eps_bad  = bad(x_t, t, labels)                           # the earlier checkpoint, conditional
    eps      = eps_bad + w * (eps_good - eps_bad)            # w = 1 is plain CFG

The "bad" model is the `ddpm_cond` checkpoint of an earlier commit (default e5fde1b: 5,000 steps, 640,000
images, the same 2.2M-parameter UNet), read with `git show` into a temporary folder and checked against its
recorded sha256. Sampling is DDIM-100 with eps from the clipped x0, the same sampler and seeded noise as
`python -m minildm bench ddpm_cond --steps 100 --guidance-scale 1.25 -n 1000 [--seed 1]`, so each row pairs
with that bench row image for image (same x_T). Rows are merged into results/autoguidance_probe.json, keyed by
their settings. A study, not a shipped sampler: it needs the repository's git history.

References:
    Karras et al. (2024), "Guiding a Diffusion Model with a Bad Version of Itself", arXiv:2406.02507, eq. (2).
    Ho, Salimans (2022), "Classifier-Free Diffusion Guidance", arXiv:2207.12598, eq. (6).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from minildm import checkpoints, metrics  # noqa: E402
from minildm.studies import _write_row  # noqa: E402  (merge one row, locked and atomic)
from minildm.bench import schedulers_for  # noqa: E402
from minildm.models.unet import UNet  # noqa: E402
from minildm.pipelines.diffusion import initial_noise  # noqa: E402

RESULTS = ROOT / "results" / "autoguidance_probe.json"


def bad_model(commit: str, folder: Path) -> UNet:
    """The ddpm_cond checkpoint as committed in `commit`, sha256-checked by load_model."""
    for suffix in ("json", "safetensors"):
        path = f"data/checkpoints/ddpm_cond.{suffix}"
        try:
            blob = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True,
                                  capture_output=True).stdout
        except subprocess.CalledProcessError as err:
            raise SystemExit(f"cannot read {path} at commit {commit} ({err.stderr.decode().strip()}); this probe "
                             "needs a clone with the git history (not a shallow one).")
        (folder / f"ddpm_cond.{suffix}").write_bytes(blob)
    return checkpoints.load_model(UNet, folder / "ddpm_cond.safetensors")


@torch.no_grad()
def autoguided(good, bad, scheduler, labels, s, w, steps, generator) -> torch.Tensor:
    """One batch of images `(B, C, H, W)`, CFG on the good model and autoguidance by the bad one."""
    scheduler.set_timesteps(steps)
    null = torch.full_like(labels, good.config.num_classes)                          # (B,) the null class
    c, size = good.config.in_channels, good.config.image_size
    x_t = initial_noise((len(labels), c, size, size), generator, "cpu") * scheduler.init_noise_sigma  # (B, C, H, W)
    for t in tqdm(scheduler.timesteps, desc="autoguided sampling", leave=False):
        eps_uncond, eps_cond = good(torch.cat([x_t, x_t]), t, torch.cat([null, labels])).chunk(2)  # (B, C, H, W)
        eps_good = eps_uncond + s * (eps_cond - eps_uncond)                           # CFG (Ho & Salimans eq. 6)
        eps_bad = bad(x_t, t, labels)                                                 # (B, C, H, W)
        eps = eps_bad + w * (eps_good - eps_bad)                                      # Karras et al. eq. (2)
        x_t, _ = scheduler.step(eps, t, x_t, generator=generator)
    return x_t.clamp(-1, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bad-commit", default="e5fde1b")
    p.add_argument("--w", type=float, default=1.5)
    p.add_argument("--cfg", type=float, default=1.25)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, nargs="+", default=[0])
    args = p.parse_args()
    good_path = checkpoints.find("ddpm_cond")
    good, good_sha256 = checkpoints.load_model(UNet, good_path).eval(), checkpoints.sha256_file(good_path)
    with tempfile.TemporaryDirectory() as tmp:
        bad = bad_model(args.bad_commit, Path(tmp)).eval()
    _, ddim = schedulers_for(good, guided=True)
    labels_all = torch.arange(args.n) % good.config.num_classes                      # as bench_ddpm_cond
    for seed in args.seed:
        generator, start = torch.Generator().manual_seed(seed), time.perf_counter()
        images = torch.cat([autoguided(good, bad, ddim, labels_all[i:i + 500], args.cfg, args.w, args.steps, generator)
                            for i in tqdm(range(0, args.n, 500), desc=f"seed {seed}")])
        acc = metrics.class_accuracy(images, labels_all)["overall"]
        row = {**metrics.fid_report(images), "class_accuracy": round(acc, 4), "guidance_scale": args.cfg,
               "autoguidance_w": args.w, "bad_commit": args.bad_commit, "bad_steps": bad.meta["steps"],
               "good_sha256": good_sha256, "sampler": "ddim",
               "steps": args.steps, "seed": seed, "seconds": round(time.perf_counter() - start)}
        key = f"s={args.cfg:g} / w={args.w:g} / bad={args.bad_commit} / ddim-{args.steps} / n={args.n} / seed={seed}"
        _write_row(RESULTS, key, row)                                                 # never half-written
        print(key, f"FID {row['fid']:.3f} floor {row['fid_floor']:.3f} ratio {row['fid_ratio']:.2f} "
                   f"accuracy {acc:.3f}", flush=True)


if __name__ == "__main__":
    main()
