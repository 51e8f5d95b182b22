"""Study: where does ddpm_cond's feature-FID gap come from? (chapter 02, issue 5)

    python tools/fid_gap_analysis.py                 # DDIM-100, s = 1.25, n = 5,000, seed 0 (~50 min on 2 CPU threads)

Samples exactly as `python -m minildm bench ddpm_cond --steps 100 --guidance-scale 1.25 -n 5000` (same sampler,
same seeded noise; the FID printed first must equal that bench row's), caches them in runs/ (git-ignored) and
asks four questions of them, all in the classifier's feature space (`minildm.metrics`):

1. Is the gap in the means or in the covariances? FID = |mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2))
   (Heusel et al. 2017, eq. (6)); both terms for the samples and for the real-vs-real floor.
2. Which classes? Per class, FID of its 500 samples against the test images of that class, beside the FID of
   the floor's training images of that class against the same test images.
3. Does 8-bit rounding (the real images are uint8) change it?
4. Is it background haze? Pixel brightness and the share of black pixels per class, and the FID after
   pixels darker than k/255 are set to black (a diagnostic, not a post-processing the course uses).

The answers are written to results/fid_gap_analysis.json.

References:
    Heusel et al. (2017), "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
    NeurIPS, arXiv:1706.08500.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from minildm import checkpoints, metrics  # noqa: E402
from minildm.bench import guided_batched, schedulers_for  # noqa: E402
from minildm.studies import write_json_atomic  # noqa: E402
from minildm.data import NUM_CLASSES, load_tensors, to_uint8  # noqa: E402
from minildm.models.unet import UNet  # noqa: E402

RESULTS = ROOT / "results" / "fid_gap_analysis.json"
BLACK = -0.99  # a pixel this dark or darker counts as black (real backgrounds are exactly -1)


def frechet_terms(a: torch.Tensor, b: torch.Tensor) -> dict:
    """FID between two `(N, D)` feature sets, split into its mean and covariance terms (Heusel eq. (6))."""
    (m1, s1), (m2, s2) = [(f.double().mean(0).numpy(), np.cov(f.double().numpy(), rowvar=False)) for f in (a, b)]
    covmean = scipy.linalg.sqrtm(s1 @ s2).real  # (D, D)
    mean_term = float(((m1 - m2) ** 2).sum())
    cov_term = float(np.trace(s1 + s2 - 2 * covmean))
    return {"fid": mean_term + cov_term, "mean_term": mean_term, "cov_term": cov_term}


def samples(n: int, steps: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The bench row's samples, their labels and the sha256 of the checkpoint that made them (cached in runs/)."""
    cache = ROOT / "runs" / f"samples_ddpm_cond_ddim{steps}_s{scale:g}_seed{seed}_n{n}.pt"
    path = checkpoints.find("ddpm_cond")
    model, sha256 = checkpoints.load_model(UNet, path).eval(), checkpoints.sha256_file(path)
    labels = torch.arange(n) % model.config.num_classes  # every class equally often, as the bench
    if cache.exists():
        saved = torch.load(cache, weights_only=True)
        if saved.get("sha256") == sha256:  # the labels follow from n, named in the file
            return saved["images"], labels, sha256
    _, ddim = schedulers_for(model, guided=True)
    images = guided_batched(model, ddim, labels, scale, steps, seed=seed)
    cache.parent.mkdir(exist_ok=True)
    torch.save({"images": images, "sha256": sha256}, cache.with_suffix(".tmp"))
    cache.with_suffix(".tmp").replace(cache)  # never a half-written cache
    return images, labels, sha256


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=5000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--guidance-scale", type=float, default=1.25)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    x, y, sha256 = samples(args.n, args.steps, args.guidance_scale, args.seed)
    test_x, test_y = load_tensors("test").tensors[:2]
    train_x, train_y = load_tensors("train").tensors[:2]
    subset = metrics.train_subset(len(train_x), args.n, 0)  # the floor's images (fid_floor, seed 0)
    real_x, real_y = train_x[subset], train_y[subset]
    feats = metrics.extract_features
    f_test, f_gen, f_real = feats(test_x), feats(x), feats(real_x)
    uint8 = to_uint8(x).float() / 127.5 - 1  # as saved to an 8-bit PNG, back in [-1, 1]
    out = {"settings": {**vars(args), "checkpoint_sha256": sha256},
           "generated": frechet_terms(f_gen, f_test), "generated_uint8": frechet_terms(feats(uint8), f_test),
           "floor": frechet_terms(f_real, f_test), "per_class": [], "haze": {}}
    for c in range(NUM_CLASSES):
        g, r, t = (y == c), (real_y == c), (test_y == c)
        fid_g = frechet_terms(f_gen[g], f_test[t])["fid"]
        fid_r = frechet_terms(f_real[r], f_test[t])["fid"]
        out["per_class"].append({
            "class": c, "fid": fid_g, "floor": fid_r, "ratio": fid_g / fid_r, "n_floor": int(r.sum()),
            "brightness": ((x[g] + 1) / 2).mean().item(), "brightness_real": ((test_x[t] + 1) / 2).mean().item(),
            "black_share": (x[g] <= BLACK).float().mean().item(),
            "black_share_real": (test_x[t] <= BLACK).float().mean().item()})
    for k in (2, 5, 10):  # pixels darker than k/255 -> black
        dark = torch.where(x < -1 + 2 * k / 255, torch.full_like(x, -1.0), x)
        out["haze"][f"fid_below_{k}_set_black"] = frechet_terms(feats(dark), f_test)["fid"]
    write_json_atomic(RESULTS, out)
    g, f = out["generated"], out["floor"]
    print(f"FID {g['fid']:.4f} = mean {g['mean_term']:.4f} + cov {g['cov_term']:.4f}; floor {f['fid']:.4f} = "
          f"{f['mean_term']:.4f} + {f['cov_term']:.4f}; uint8 {out['generated_uint8']['fid']:.4f}")
    for row in out["per_class"]:
        print(f"class {row['class']}: FID {row['fid']:.3f} floor {row['floor']:.3f} ratio {row['ratio']:.2f} "
              f"brightness {row['brightness']:.4f} ({row['brightness_real']:.4f} real) black "
              f"{row['black_share']:.3f} ({row['black_share_real']:.3f} real)")
    print("haze:", {k: round(v, 4) for k, v in out["haze"].items()}, f"-> {RESULTS}")
    return out


if __name__ == "__main__":
    main()
