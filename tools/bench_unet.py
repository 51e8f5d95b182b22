"""Training throughput of minildm's default UNet against diffusers `UNet2DModel` peers, on this machine.

    python tools/bench_unet.py                          # batch 128, 32x32x1, 10 timed steps x 3 rounds
    python tools/bench_unet.py --steps 5 --rounds 1     # quicker
    python tools/bench_unet.py --peer large --threads 2

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
import torch

from minildm.speed import PEERS, diffusers_peer, num_parameters, train_throughput  # noqa: E402  (one copy)


def main(argv: list[str] | None = None) -> None:
    from minildm.models import UNet, UNetConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    p.add_argument("--peer", nargs="+", choices=sorted(PEERS), default=["same-layout", "classic"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    config = UNetConfig()
    torch.manual_seed(0)
    models = {"minildm": UNet(config)}
    for name in args.peer:
        torch.manual_seed(0)
        models[f"diffusers {name}"] = diffusers_peer(name, config.image_size, config.in_channels)
    rates = {name: [] for name in models}
    for r in range(args.rounds):
        for name, model in models.items():
            rate = train_throughput(model, args.batch_size, config.image_size, config.in_channels, args.steps,
                                    args.warmup if r == 0 else 1)
            rates[name].append(rate)
            print(f"round {r + 1}/{args.rounds}  {name:22s} {rate:7.1f} img/s", flush=True)
    median = {name: statistics.median(v) for name, v in rates.items()}
    print(f"\nbatch {args.batch_size}, {config.image_size}x{config.image_size}x{config.in_channels}, "
          f"{torch.get_num_threads()} threads, forward + MSE + backward + AdamW, median of {args.rounds} rounds")
    for name, model in models.items():
        ratio = median["minildm"] / median[name]
        print(f"{name:22s} {num_parameters(model) / 1e6:5.2f}M params  {median[name]:7.1f} img/s  "
              f"minildm is {ratio:.2f}x")


if __name__ == "__main__":
    main()
