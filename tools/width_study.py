"""Study: does width close ddpm_cond's FID gap? (chapter 02, issue 5)

    python -m minildm train ddpm_cond_wide --threads 2 --until 5000 --no-export      # ~1.4 h on 2 CPU threads
    python -m minildm train ddpm_cond_wide --export-only --export-name ddpm_cond_wide_5000 --out-dir runs/width
    python tools/width_study.py 5000          # scores both widths at 5,000 steps (~20 min on 2 CPU threads)

tools/fid_gap_analysis.py puts ddpm_cond's FID gap in the covariance term and no sampler setting closes it, which
points at capacity. This compares ddpm_cond (base_channels 16, 2.24M parameters) with `ddpm_cond_wide` (32,
7.95M; the diffusers recipe's widths 32-64-128-256) at an equal number of training steps of the same recipe:
batch 128, lr 1e-3 after a 500-step warm-up and constant until the decay at the end of the run (so a mid-run
snapshot of either has seen the same learning rates), EMA 0.999, p_uncond 0.1, seed 0, hence the same images,
timesteps, noise and dropped labels in the same order: the arms differ in the width alone. ddpm_cond's snapshots
are the weights it shipped at that step, read from the git history (`SNAPSHOTS`); the wide one is exported from
its run by the commands above. Both are scored like the bench row `ddim-50 / s=1.25 / n=1000` (DDIM-50, s = 1.25,
seed 0, every class equally often; FID beside the real-vs-real floor at the same n) into results/width_study.json.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from minildm import checkpoints  # noqa: E402
from minildm.models.unet import UNet  # noqa: E402
from minildm.studies import WIDTH_RESULTS, _write_row, score  # noqa: E402

SNAPSHOTS = {2000: "74170b7", 5000: "e5fde1b"}  # ddpm_cond as shipped at that step (the first run: constant lr)


def ddpm_cond_at(step: int, folder: Path) -> Path:
    """ddpm_cond's weights as committed at `step` (safetensors + JSON from `git show`; sha256 checked on load)."""
    if step not in SNAPSHOTS:
        raise SystemExit(f"no ddpm_cond snapshot at step {step} in the git history; choose from {sorted(SNAPSHOTS)}.")
    for ext in ("safetensors", "json"):
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{SNAPSHOTS[step]}:data/checkpoints/ddpm_cond.{ext}"],
                              check=True, capture_output=True).stdout
        (folder / f"ddpm_cond.{ext}").write_bytes(blob)
    return folder / "ddpm_cond.safetensors"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", type=int, help="the training step of both snapshots (2000 or 5000)")
    p.add_argument("--arms", nargs="+", default=["ddpm_cond", "ddpm_cond_wide"], choices=["ddpm_cond", "ddpm_cond_wide"])
    p.add_argument("--wide-dir", default="runs/width", help="where the wide snapshot was exported (see above)")
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--guidance-scale", type=float, default=1.25)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for arm in args.arms:
            if arm == "ddpm_cond":
                path = ddpm_cond_at(args.step, Path(tmp))
            else:
                path = Path(args.wide_dir) / f"ddpm_cond_wide_{args.step}.safetensors"
                if not path.exists():
                    raise SystemExit(f"no {path}: train and export it first (the commands at the top of {__file__}).")
            model = checkpoints.load_model(UNet, path)
            if model.meta["steps"] != args.step:
                raise SystemExit(f"{path} is at step {model.meta['steps']}, not {args.step}.")
            row = {"recipe": arm, **score(model, None, args.n, args.guidance_scale),
                   "checkpoint_sha256": checkpoints.sha256_file(path)}
            _write_row(WIDTH_RESULTS, f"{arm} / {args.step} steps / s={args.guidance_scale:g} / n={args.n}", row)
            print(f"{arm} at {args.step} steps ({row['params'] / 1e6:.2f}M parameters): FID {row['fid']:.3f}, floor "
                  f"{row['fid_floor']:.3f}, ratio {row['fid_ratio']:.2f}, accuracy {row['class_accuracy']:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
