"""Sampling loops for pixel-space diffusion: DDPM Algorithm 2, and DDIM with the same few lines.

    x_T ~ N(0, I)
    for t in scheduler.timesteps:                     # T-1, ..., 0 (DDPM) or a subsequence (DDIM)
        model_output = model(x_t, t, cond)
        x_t, pred_x0 = scheduler.step(model_output, t, x_t)
    return x_0

The scheduler decides what one step means (DDPM eq. (11) plus noise, or DDIM eq. (12)); the loop is the
same, and it stays visible here rather than hidden behind a helper. Guided (classifier-free) sampling
lives in `pipelines/guided.py`, with its CFG line written out.

References:
    Ho, Jain, Abbeel (2020), "Denoising Diffusion Probabilistic Models", Algorithm 2.
    Song, Meng, Ermon (2021), "Denoising Diffusion Implicit Models", eq. (12).
    diffusers' DDPMPipeline.__call__ (the same loop with a progress bar).

Derived in notebooks/01_ddpm_from_scratch.ipynb.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from tqdm.auto import tqdm


class SampleOutput(NamedTuple):
    images: torch.Tensor               # (B, C, H, W), in [-1, 1] for pixel models
    intermediates: list | None         # x_t after each step (CPU), when asked for: frames for a GIF
    pred_x0s: list | None              # the model's x0 estimate after each step, when asked for


def initial_noise(shape: tuple, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    """x_T ~ N(0, I), drawn on the CPU so that a seed gives the same images on every device."""
    return torch.randn(shape, generator=generator, dtype=dtype).to(device)


def check_sampling_args(model, shape: tuple, cond, num_inference_steps: int | None) -> None:
    config = model.config
    if len(shape) != 4:
        raise ValueError(f"shape must be (B, C, H, W), got {shape}.")
    if shape[1] != config.in_channels:
        raise ValueError(f"shape has {shape[1]} channels but the model expects {config.in_channels}.")
    if cond is not None and len(cond) != shape[0]:
        raise ValueError(f"{len(cond)} conditions for a batch of {shape[0]}: give one per image.")
    if num_inference_steps is not None and num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}.")


@torch.no_grad()
def sample(model: torch.nn.Module, scheduler, num_images: int, generator: torch.Generator | None = None,
           cond: torch.Tensor | None = None, num_inference_steps: int | None = None,
           device: str | torch.device | None = None, return_intermediates: bool = False,
           intermediate_every: int = 1, progress: bool = True) -> SampleOutput:
    """Draw `num_images` samples with any minildm scheduler (DDPM: all T steps by default; DDIM: pass steps).

    `cond` is one condition per image for conditional models (class labels `(B,)`), else None.
    Derived in notebooks/01_ddpm_from_scratch.ipynb (Algorithm 2).
    """
    config = model.config
    device = torch.device(device) if device is not None else next(model.parameters()).device
    shape = (num_images, config.in_channels, config.image_size, config.image_size)
    check_sampling_args(model, shape, cond, num_inference_steps)
    model.eval()
    scheduler.set_timesteps(num_inference_steps)
    cond = cond.to(device) if cond is not None else None
    x_t = initial_noise(shape, generator, device) * scheduler.init_noise_sigma       # x_T ~ N(0, I)
    frames, pred_x0s = ([x_t.cpu()], []) if return_intermediates else (None, None)
    for i, t in enumerate(tqdm(scheduler.timesteps, desc="sampling", disable=not progress, leave=False)):
        model_output = model(x_t, t.to(device), cond)                                  # eps, x0 or v
        x_t, pred_x0 = scheduler.step(model_output, t, x_t, generator=generator)       # x_{t-1}
        if return_intermediates and ((i + 1) % intermediate_every == 0 or i == len(scheduler.timesteps) - 1):
            frames.append(x_t.cpu())
            pred_x0s.append(pred_x0.cpu())
    return SampleOutput(x_t.clamp(-1, 1), frames, pred_x0s)


@torch.no_grad()
def sample_batched(model, scheduler, num_images: int, batch_size: int = 500, seed: int = 0, cond=None,
                   num_inference_steps: int | None = None, device=None, progress: bool = True) -> torch.Tensor:
    """Many samples in batches (for metrics), one seeded generator for the whole run. Returns CPU images."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in tqdm(range(0, num_images, batch_size), desc=f"sampling {num_images}", disable=not progress):
        n = min(batch_size, num_images - start)
        c = cond[start:start + n] if cond is not None else None
        out.append(sample(model, scheduler, n, generator, c, num_inference_steps, device,
                          progress=progress).images.cpu())  # the step bar: a DDPM-1000 batch takes minutes on CPU
    return torch.cat(out)
