"""Training throughput of minildm's default UNet against diffusers `UNet2DModel` peers, on this machine.

    python tools/bench_unet.py                          # batch 128, 32x32x1, 10 timed steps x 3 rounds
    python tools/bench_unet.py --steps 5 --rounds 1     # quicker
    python tools/bench_unet.py --peer large --threads 2
    python tools/bench_unet.py --recipe ddpm_cond_wide --precision fp32 bf16 --peer --threads 2   # bf16 autocast

One "step" is what training does: forward, MSE loss, backward, AdamW step. All models see the same batch
on the same machine; the measurement alternates between them in rounds and reports each model's median
round, so that load from other processes hits them alike. On a shared machine compare ratios, not img/s.

The peers (`PEERS`, all with `layers_per_block=1`, `norm_num_groups=8`, `attention_head_dim=32`), at a
parameter count similar to minildm's default (2.24M):
    same-layout  2.74M  minildm's layout built from diffusers' blocks: widths 16-32-64-128 at 32-16-8-4,
                        self-attention at 8x8 and 4x4. What remains different is block design: diffusers
                        has 2 res blocks per level on the way up (minildm 1), a stride-2 3x3 conv to
                        downsample (minildm: pixel-unshuffle + 1x1), an up-sampling conv that keeps the
                        wide channel count, full attention at 8x8 (minildm: linear).
    classic      2.73M  the usual small DDPM UNet: widths 32-64-128 at 32-16-8, self-attention at 8x8.
    large        4.33M  4 levels 32-64-128-128, self-attention at 8x8.

Used in notebooks/01_ddpm_from_scratch.ipynb (the cost of a training step).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from minildm.speed import PEERS, diffusers_peer, num_parameters, train_throughput  # noqa: E402  (one copy)
from minildm.recipes import DIFFUSION_RECIPES
from minildm.training import PRECISIONS


def main(argv: list[str] | None = None) -> None:
    from minildm.models import UNet, UNetConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    p.add_argument("--peer", nargs="*", choices=sorted(PEERS), default=["same-layout", "classic"],
                   help="diffusers peers to time beside minildm (`--peer` alone: none)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--recipe", default=None, choices=sorted(DIFFUSION_RECIPES),
                   help="time this diffusion recipe's UNet (default: the default UNetConfig)")
    p.add_argument("--out", default=None, help="also write the medians (img/s) and the setting to this JSON file")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"],
                   help="also time minildm under bf16 autocast (`minildm train --precision bf16`)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.recipe:
        config = DIFFUSION_RECIPES[args.recipe].model
    else:
        config = UNetConfig()
    torch.manual_seed(0)
    models = {"minildm": UNet(config)}
    arms = {"minildm": ("minildm", "fp32")} if "fp32" in args.precision else {}
    arms |= {"minildm bf16": ("minildm", "bf16")} if "bf16" in args.precision else {}
    for name in args.peer:
        torch.manual_seed(0)
        models[f"diffusers {name}"] = diffusers_peer(name, config.image_size, config.in_channels)
        arms[f"diffusers {name}"] = (f"diffusers {name}", "fp32")
    rates = {name: [] for name in arms}
    for r in range(args.rounds):
        for name, (model_name, precision) in arms.items():
            rate = train_throughput(models[model_name], args.batch_size, config.image_size, config.in_channels,
                                    args.steps, args.warmup if r == 0 else 1, precision=precision)
            rates[name].append(rate)
            print(f"round {r + 1}/{args.rounds}  {name:22s} {rate:7.1f} img/s", flush=True)
    median = {name: statistics.median(v) for name, v in rates.items()}
    print(f"\nbatch {args.batch_size}, {config.image_size}x{config.image_size}x{config.in_channels}, "
          f"{torch.get_num_threads()} threads, forward + MSE + backward + AdamW, median of {args.rounds} rounds")
    first = next(iter(arms))
    for name, (model_name, _) in arms.items():
        ratio = median[first] / median[name]
        print(f"{name:22s} {num_parameters(models[model_name]) / 1e6:5.2f}M params  {median[name]:7.1f} img/s  "
              f"{first} is {ratio:.2f}x")
    if args.out:
        from minildm.recipes import device_description
        from minildm.studies import write_json_atomic
        write_json_atomic(Path(args.out), {
            "command": "python tools/bench_unet.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "model_config": args.recipe or "UNetConfig()", "batch_size": args.batch_size, "threads": torch.get_num_threads(),
            "rounds": args.rounds, "device": device_description(torch.device("cpu")), "torch": torch.__version__,
            "median_img_per_s": {k: round(v, 1) for k, v in median.items()}})


if __name__ == "__main__":
    main()
