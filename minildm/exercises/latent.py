"""Exercise of notebooks/04_latent_diffusion.ipynb: the latent sampling loop with CFG, decode included.

References: Rombach et al. (2022), sec. 3.3 and appendix G (decode z / scale); Ho & Salimans (2022), eq. (6).
"""
from __future__ import annotations

from typing import Callable

import torch

from minildm.exercises._runner import F64, Case, _run


def _tiny_pair(seed: int):
    """A tiny class-conditional latent UNet (4x4x4 latents) and VAE (f=4, 16x16 images), random float64 weights."""
    from minildm.models.unet import UNet, UNetConfig
    from minildm.models.vae import VAE, VAEConfig
    torch.manual_seed(seed)
    unet = UNet(UNetConfig(in_channels=4, out_channels=4, image_size=4, base_channels=8, channel_mults=(1, 2),
                           attention=("none", "full"), cross_attention=(False, False), heads=1, head_dim=8, groups=4,
                           time_dim=16, num_classes=10))
    vae = VAE(VAEConfig(image_size=16, base_channels=8, groups=4))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random, not zero-initialised outputs, so every mistake changes the result
        for p in list(unet.parameters()) + list(vae.parameters()):
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return unet.double().eval(), vae.double().eval()


@torch.no_grad()
def _reference(z_T, labels, unet, vae, scheduler, guidance_scale, latent_scale, steps, *, decode="divide",
               swap=False, clamp=True, guidance=True) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    z_t, null = z_T.clone(), torch.full_like(labels, unet.config.num_classes)
    for t in scheduler.timesteps:
        eps_uncond, eps_cond = unet(torch.cat([z_t, z_t]), t, torch.cat([null, labels])).chunk(2)
        if swap:
            eps_uncond, eps_cond = eps_cond, eps_uncond
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond) if guidance else eps_cond
        z_t = scheduler.step(eps, t, z_t).prev_sample
    z = {"divide": z_t / latent_scale, "multiply": z_t * latent_scale, "none": z_t}[decode]
    images = vae.decode(z)
    return (images.clamp(-1, 1) if clamp else images).double()


def check_latent_sample(fn: Callable) -> None:
    """Check `fn(z_T, labels, unet, vae, scheduler, guidance_scale, latent_scale, num_inference_steps) -> images`.

    The whole latent sampler: `scheduler.set_timesteps(num_inference_steps)`, then for each `t` a doubled batch
    `[z_t, z_t]` with conditions `[null, labels]` (null = `unet.config.num_classes`), the CFG line, a scheduler step
    `scheduler.step(eps, t, z_t).prev_sample`; finally `vae.decode(z_0 / latent_scale).clamp(-1, 1)`, `(B, 1, H, W)`.
    `z_T`: the starting noise `(B, 4, h, w)`; tiny random float64 models. Exercise of notebooks/04_latent_diffusion.ipynb.
    """
    from minildm.schedulers import DDIMScheduler
    unet, vae = _tiny_pair(0)
    g = torch.Generator().manual_seed(4)
    cases = []
    for desc, b, s, scale, steps in [("a batch of 4, s = 3, latent_scale 0.4, 5 steps", 4, 3.0, 0.4, 5),
                                     ("s = 1: the conditional model alone", 3, 1.0, 0.4, 5),
                                     ("s = 0: the unconditional model alone", 3, 0.0, 0.4, 5),
                                     ("latent_scale 2.5 (a VAE with small latents)", 2, 2.0, 2.5, 4),
                                     ("one sample, 10 steps", 1, 5.0, 0.7, 10)]:
        z_T = torch.randn(b, 4, 4, 4, generator=g, dtype=F64)
        labels = torch.randint(0, 10, (b,), generator=g)
        sched = DDIMScheduler(100, beta_schedule="cosine", clip_sample=False)
        args = (z_T, labels, unet, vae, sched, s, scale, steps)
        ref = lambda **kw: _reference(*args, **kw)  # noqa: E731
        mistakes = {"decoded z_0 itself: the VAE decodes z_0 / latent_scale (the latents were scaled by latent_scale "
                    "for training).": ref(decode="none"),
                    "decoded z_0 * latent_scale: divide by the scale, undoing the multiplication at encoding.":
                        ref(decode="multiply"),
                    "the decoded images are not clamped to [-1, 1] (.clamp(-1, 1)).": ref(clamp=False),
                    "the guidance terms are swapped: the batch is [z, z] with conditions [null, labels], so chunk(2) "
                    "gives (eps_uncond, eps_cond) in that order.": ref(swap=True),
                    "no guidance: use eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond).": ref(guidance=False)}
        if s == 1.0:
            mistakes.pop("no guidance: use eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond).")
        cases.append(Case(desc, args, ref(), mistakes))
    _run("latent_sample", fn, ("z_T", "labels", "unet", "vae", "scheduler", "guidance_scale", "latent_scale",
                               "num_inference_steps"), cases,
         "set_timesteps, loop over scheduler.timesteps with the doubled batch and the CFG line, step, then "
         "vae.decode(z / latent_scale).clamp(-1, 1).")
