"""Latent diffusion: a condition -> a UNet denoising in the VAE's latent space -> `vae.decode(z / latent_scale)`.

The loop has the shape of CompVis' `LatentDiffusion.sample -> p_sample_loop -> p_sample` and of a diffusers
pipeline's `__call__`, and any scheduler with `set_timesteps`, `timesteps`, `init_noise_sigma` and
`step(...).prev_sample` drives it — minildm's DDPM/DDIM or diffusers' `DDIMScheduler`,
`DPMSolverMultistepScheduler`, ...:

    z_T ~ N(0, I) * scheduler.init_noise_sigma                          # prepare latents
    for t in scheduler.timesteps:
        z_in = scheduler.scale_model_input(cat([z_t, z_t]), t)          # identity for DDPM/DDIM/DPM-Solver
        eps_uncond, eps_cond = unet(z_in, t, cat([null, labels])).chunk(2)
        eps = eps_uncond + s * (eps_cond - eps_uncond)                    # the CFG line
        z_t = scheduler.step(eps, t, z_t).prev_sample
    images = vae.decode(z_0 / latent_scale)                              # back to pixels

`encode_latents` turns a dataset into scaled latents once (the cache latent training reads).

References:
    Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models", sec. 3 and
    appendix G (the latent scale); CompVis/latent-diffusion `ldm/models/diffusion/ddpm.py` (LatentDiffusion)
    and `ldm/models/diffusion/ddim.py` (DDIMSampler.sample -> ddim_sampling -> p_sample_ddim).
    diffusers' `StableDiffusionPipeline.__call__` (prepare latents, the doubled batch, decode by 1 / scale).
    Kynkäänniemi et al. (2024), "Applying Guidance in a Limited Interval Improves Sample and Distribution
    Quality in Diffusion Models", arXiv:2404.07724 (`guidance_interval`).

Derived in notebooks/04_latent_diffusion.ipynb.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from minildm.pipelines.diffusion import initial_noise
from minildm.pipelines.guided import _check_guided_args, check_guidance_interval  # noqa: F401 (re-exported)


class LatentSampleOutput(NamedTuple):
    images: torch.Tensor     # (B, 1, H, W) decoded, in [-1, 1]
    latents: torch.Tensor    # (B, C, h, w) the final scaled latents z_0 (before `/ latent_scale`)


@torch.no_grad()
def encode_latents(vae: torch.nn.Module, x0: torch.Tensor, latent_scale: float, batch_size: int = 500,
                   device=None, progress: bool = True) -> torch.Tensor:
    """Images `(N, C, H, W)` in [-1, 1] -> scaled latents `mode(q(z|x)) * latent_scale`, `(N, C_z, H/f, W/f)`, on the CPU.

    The posterior mode, not a sample: with LDM's tiny KL weight the posterior std is small, and a fixed cache
    makes latent training as cheap as training on a tensor. Derived in notebooks/04_latent_diffusion.ipynb.
    """
    if not isinstance(latent_scale, (int, float)) or isinstance(latent_scale, bool) or not latent_scale > 0:
        raise ValueError(f"latent_scale must be a positive number (vae.meta['latent_scale']), got {latent_scale!r}.")
    device = torch.device(device) if device is not None else next(vae.parameters()).device
    vae.eval()
    out = []
    for i in tqdm(range(0, len(x0), batch_size), desc="encoding latents", disable=not progress, leave=False):
        out.append(vae.encode(x0[i:i + batch_size].to(device)).mode().cpu() * latent_scale)  # (b, C_z, h, w)
    return torch.cat(out)


@torch.no_grad()
def latent_guided_sample(unet: torch.nn.Module, vae: torch.nn.Module, scheduler, labels: torch.Tensor,
                         guidance_scale: float = 3.0, generator: torch.Generator | None = None,
                         num_inference_steps: int | None = 50, latent_scale: float | None = None,
                         device=None, progress: bool = True,
                         guidance_interval: tuple[int, int] | None = None) -> LatentSampleOutput:
    """Class-conditional latent diffusion with classifier-free guidance, decoded to images.

    `unet` is a class-conditional `UNet` on latents (`in_channels` = the VAE's `latent_channels`); `vae` decodes
    `z / latent_scale` (default `vae.meta['latent_scale']`). `guidance_scale` s: 1 conditional, 0 unconditional.
    `scheduler`: minildm's or a diffusers scheduler (see the module docstring).
    `guidance_interval=(lo, hi)`: guide only at timesteps lo < t <= hi and sample conditionally (s = 1) elsewhere
    (Kynkäänniemi et al. 2024): guidance at the noisiest steps pulls every sample of a class towards the same
    layout, and at the last steps it does little. None (default) guides at every step.
    Derived in notebooks/04_latent_diffusion.ipynb.
    """
    num_classes, guidance_scale = _check_guided_args(unet, labels, guidance_scale)
    lo, hi = check_guidance_interval(guidance_interval)
    c = unet.config
    vae_channels = vae.config.latent_channels
    if c.in_channels != vae_channels:
        raise ValueError(f"the UNet takes {c.in_channels} channels but the VAE's latents have {vae_channels}: "
                         f"pair the latent model with the VAE it was trained on.")
    if latent_scale is None:
        latent_scale = getattr(vae, "meta", {}).get("latent_scale")
        if latent_scale is None:
            raise ValueError("this VAE has no meta['latent_scale']; pass latent_scale= (minildm.models.vae.latent_scale).")
    config = getattr(scheduler, "config", None)  # diffusers keeps its settings in .config, minildm on the object
    clip = config.get("clip_sample", False) if isinstance(config, dict) else getattr(scheduler, "clip_sample", False)
    if clip:
        raise ValueError("the scheduler clips pred_x0 to [-1, 1], but scaled latents are unit-variance, not images: "
                         "build it with clip_sample=False (as Stable Diffusion's schedulers are).")
    device = torch.device(device) if device is not None else next(unet.parameters()).device
    unet.eval(), vae.eval()
    # 1. prepare the latents, as StableDiffusionPipeline.prepare_latents
    scheduler.set_timesteps(num_inference_steps)
    labels = labels.to(device).long()                                                # (B,)
    cond_in = torch.cat([torch.full_like(labels, num_classes), labels])              # (2B,) [uncond, cond]
    shape = (labels.shape[0], c.in_channels, c.image_size, c.image_size)             # (B, C_z, h, w)
    z_t = initial_noise(shape, generator, device) * scheduler.init_noise_sigma       # z_T ~ N(0, sigma_max^2 I)
    # 2. the denoising loop (CompVis p_sample_loop; each iteration is one p_sample)
    for t in tqdm(scheduler.timesteps, desc="latent sampling", disable=not progress, leave=False):
        z_in = torch.cat([z_t, z_t])                                                 # (2B, C_z, h, w)
        if hasattr(scheduler, "scale_model_input"):
            z_in = scheduler.scale_model_input(z_in, t)                              # diffusers' Euler-type scaling
        eps_uncond, eps_cond = unet(z_in, t.to(device), cond_in).chunk(2)            # (B, C_z, h, w) each
        s = guidance_scale if lo < int(t) <= hi else 1.0                             # s = 1 outside the interval
        eps = eps_uncond + s * (eps_cond - eps_uncond)                               # the CFG line
        z_t = scheduler.step(eps, t, z_t, generator=generator).prev_sample           # z_{t-1}
    # 3. decode with 1 / latent_scale
    images = vae.decode(z_t / latent_scale).clamp(-1, 1)                            # (B, 1, H, W)
    return LatentSampleOutput(images, z_t)


__all__ = ["LatentSampleOutput", "check_guidance_interval", "encode_latents", "latent_guided_sample"]
