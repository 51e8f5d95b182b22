"""Training and sampling speed: minildm's models against their diffusers peers, timed on this machine.

`minildm bench` copies these numbers into its rows (`train_speed`); `tools/bench_unet.py` compares layouts.
Speed is measured here, in benchmarks that write results, never in timed tests.

References:
    von Platen et al., diffusers (`UNet2DModel`, the peer); see `minildm.models.peers`.

Used by notebooks/01_ddpm_from_scratch.ipynb and 02_class_conditional.ipynb (their metrics tables' speed columns).
"""
from __future__ import annotations

import statistics
import time

import torch

from minildm import checkpoints
from minildm.models.peers import LAYOUTS as PEERS  # noqa: F401  (re-exported for tools/bench_unet.py)
from minildm.models.peers import DiffusersUNet, PeerConfig
from minildm.models.unet import UNet
from minildm.pipelines.diffusion import sample_batched
from minildm.training import precision_context


def diffusers_peer(name: str = "same-layout", image_size: int = 32, channels: int = 1):
    """The diffusers `UNet2DModel` that minildm's pixel UNet is compared with (see `models/peers.py`)."""
    return DiffusersUNet(PeerConfig(layout=name, in_channels=channels, out_channels=channels, image_size=image_size))


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_throughput(model: torch.nn.Module, batch_size: int = 128, image_size: int | None = None,
                     channels: int | None = None, steps: int = 10, warmup: int = 3, seed: int = 0,
                     precision: str = "fp32") -> float:
    """Images/s of training steps (forward + MSE + backward + AdamW) after `warmup` steps.

    Works for minildm's `UNet` and diffusers' `UNet2DModel` (whose output is `.sample`); `image_size` and
    `channels` default to the model config's (a latent model trains on `(B, 4, 8, 8)`, a pixel one on `(B, 1, 32, 32)`).
    `precision="bf16"`: the forward pass under bf16 autocast, as `minildm train --precision bf16` runs it.
    """
    config = getattr(model, "config", None)
    image_size = image_size or getattr(config, "image_size", 32)
    channels = channels or getattr(config, "in_channels", 1)
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x_t = torch.randn(batch_size, channels, image_size, image_size, device=device)
    t = torch.randint(0, 1000, (batch_size,), device=device)
    eps = torch.randn_like(x_t)
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    cond = (torch.randint(0, num_classes + 1, (batch_size,), device=device),) if num_classes else ()  # class models

    def step():
        with precision_context(precision, device):
            out = model(x_t, t, *cond)
        loss = torch.nn.functional.mse_loss(getattr(out, "sample", out).float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch_size * steps / (time.perf_counter() - start)


def compare_throughput(models: dict, rounds: int = 3, warmup: int = 3, **kw) -> dict:
    """Median images/s per model, measured in alternating rounds so machine load hits all alike."""
    rates = {name: [] for name in models}
    for r in range(rounds):
        for name, model in models.items():
            rates[name].append(train_throughput(model, warmup=warmup if r == 0 else 1, **kw))
    return {name: statistics.median(v) for name, v in rates.items()}


@torch.no_grad()
def sample_seconds_per_image(model, scheduler, steps: int | None, n: int = 16, device=None) -> float:
    start = time.perf_counter()
    sample_batched(model, scheduler, n, batch_size=n, seed=0, num_inference_steps=steps, device=device,
                   progress=False)
    return (time.perf_counter() - start) / n


def train_speed(name: str, device, quick: bool) -> dict:
    """Training images/s of a pixel model against its diffusers peer, in alternating rounds on this machine.

    ddpm: `UNet2DModel` in the same layout (chapter 01); ddpm_cond: chapter 02's standard recipe (`UNet2DModel`,
    widths 32-64-128-256, class embeddings). `run` times each model once and copies the numbers into its rows."""
    config = checkpoints.load_model(UNet, checkpoints.find(name)).config
    if name == "ddpm":
        peer, what = diffusers_peer("same-layout"), "diffusers UNet2DModel (same layout, %d params)"
    else:
        peer = DiffusersUNet(PeerConfig(layout="hf-course", num_classes=config.num_classes))
        what = "diffusers UNet2DModel (chapter 02's standard recipe, %d params)"
    rates = compare_throughput({"minildm": UNet(config).to(device), "diffusers": peer.to(device)},
                               rounds=1 if quick else 3, steps=2 if quick else 10, batch_size=16 if quick else 128)
    return {"train_img_per_s": round(rates["minildm"], 1), "peer": what % num_parameters(peer),
            "peer_train_img_per_s": round(rates["diffusers"], 1),
            "speedup_vs_peer": round(rates["minildm"] / rates["diffusers"], 2)}
