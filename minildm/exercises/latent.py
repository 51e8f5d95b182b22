"""Exercises of notebooks/04_latent_diffusion.ipynb: the LDM loss, encoding to scaled latents, the latent sampler.

References: Rombach et al. (2022), eq. (2) and appendix G (encode x -> z * scale, decode z / scale);
Ho & Salimans (2022), eq. (6).
"""
from __future__ import annotations

from typing import Callable

import torch

from minildm.exercises._runner import F32, F64, Case, _bc, _perturbed, _randn, _run


def _tiny_pair(seed: int):
    """A tiny class-conditional latent UNet (4x4x4 latents) and VAE (f=4, 16x16 images), random float64 weights."""
    from minildm.models.unet import UNet, UNetConfig
    from minildm.models.vae import VAE, VAEConfig
    torch.manual_seed(seed)
    unet = UNet(UNetConfig(in_channels=4, out_channels=4, image_size=4, base_channels=8, channel_mults=(1, 2),
                           attention=("none", "full"), cross_attention=(False, False), heads=1, head_dim=8, groups=4,
                           time_dim=16, num_classes=10))
    vae = VAE(VAEConfig(image_size=16, base_channels=8, groups=4))
    return _perturbed(unet, vae, seed=seed)


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


def _toy_eps_model(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed stand-in for eps_theta(z_t, t): any deterministic function of both will do for the check."""
    return torch.tanh(z_t) * _bc(1 + t.to(z_t.dtype) / 1000, z_t) - 0.1 * z_t.roll(1, dims=-1)


def check_ldm_loss(fn: Callable) -> None:
    """Check `fn(z0, eps, t, alpha_bar, eps_model) -> loss`, the LDM objective on one batch (LDM eq. 2).

    `z_t = sqrt(alpha_bar[t]) z0 + sqrt(1 - alpha_bar[t]) eps`, then the mean over every element of
    `(eps - eps_model(z_t, t))**2`: a scalar. `z0`, `eps`: `(B, 4, 8, 8)` scaled latents and noise; `t`: `(B,)` int64
    in 0..T-1; `alpha_bar`: `(T,)`; `eps_model(z_t, t)`: the network. Exercise of notebooks/04_latent_diffusion.ipynb.
    """
    from minildm.schedulers.schedules import make_betas
    g, cases = torch.Generator().manual_seed(11), []
    alpha_bar = torch.cumprod(1 - make_betas("cosine", 1000), 0)
    for desc, b, t_kind, dtype in [("a batch of 6 latents, random t", 6, "random", F32),
                                   ("t = 0 (almost no noise)", 3, "first", F32),
                                   ("t = T-1 (almost pure noise)", 3, "last", F32),
                                   ("float64 inputs (the loss must stay float64)", 4, "random", F64)]:
        z0, eps = _randn(g, (b, 4, 8, 8), dtype), _randn(g, (b, 4, 8, 8), dtype)
        t = {"random": torch.randint(0, 1000, (b,), generator=g), "first": torch.zeros(b, dtype=torch.long),
             "last": torch.full((b,), 999)}[t_kind]
        ab = alpha_bar.to(dtype)

        def loss(a=None, target="eps", reduce="mean"):
            a = _bc((ab[t] if a is None else a).double(), z0)
            z_t = a.sqrt() * z0.double() + (1 - a).sqrt() * eps.double()
            err = ((eps.double() if target == "eps" else z0.double()) - _toy_eps_model(z_t, t)) ** 2
            return err.mean() if reduce == "mean" else err.sum() if reduce == "sum" else err.sum((1, 2, 3)).mean()

        mistakes = {"z_t without square roots: z_t = sqrt(alpha_bar_t) z0 + sqrt(1 - alpha_bar_t) eps.":
                        (lambda: (lambda a: ((eps.double() - _toy_eps_model(a * z0.double() + (1 - a) * eps.double(), t))
                                             ** 2).mean())(_bc(ab[t].double(), z0)))(),
                    "the target is the noise eps, not the clean latent z0 (the model predicts eps).": loss(target="z0"),
                    "summed over the elements: take the mean over every element (F.mse_loss's default).": loss(reduce="sum"),
                    "summed per sample, then averaged over the batch: take the mean over every element.":
                        loss(reduce="per-sample"),
                    _OFF: loss(a=ab[(t + 1).clamp(max=999)])}
        cases.append(Case(desc, (z0, eps, t, ab, _toy_eps_model), loss(), mistakes))
    _run("ldm_loss", fn, ("z0", "eps", "t", "alpha_bar", "eps_model"), cases,
         "z_t = sqrt(a) * z0 + sqrt(1 - a) * eps with a = alpha_bar[t] reshaped to (B, 1, 1, 1); "
         "return ((eps - eps_model(z_t, t)) ** 2).mean().")


_OFF = "your result equals the loss at alpha_bar[t + 1]: an off-by-one in t? t is 0-based (0 .. T-1)."


@torch.no_grad()
def check_encode_latents(fn: Callable) -> None:
    """Check `fn(x, vae, latent_scale) -> z`: the scaled posterior mode `vae.encode(x).mode() * latent_scale`.

    `x`: images `(B, 1, H, W)` in [-1, 1]; `vae`: minildm's `VAE`; the result `(B, 4, H/f, W/f)`, as
    `minildm.pipelines.latent.encode_latents`. Tiny random float64 VAEs. Exercise of notebooks/04_latent_diffusion.ipynb.
    """
    _, vae = _tiny_pair(1)
    g, cases = torch.Generator().manual_seed(5), []
    for desc, b, side, scale in [("a batch of 4 images, 16x16, latent_scale 0.4", 4, 16, 0.4),
                                 ("latent_scale 2.5", 3, 16, 2.5),
                                 ("32x32 images (the VAE is convolutional: latents 8x8)", 2, 32, 0.7)]:
        x = (torch.rand(b, 1, side, side, generator=g, dtype=F64) * 2 - 1)
        post = vae.encode(x)
        mistakes = {"the latents are not scaled: multiply by latent_scale (it makes them unit-variance).": post.mode(),
                    "divided by latent_scale: multiply when encoding, divide when decoding.": post.mode() / scale,
                    "scaled the posterior std, not its mean: use the mode (mean) of q(z|x).":
                        (0.5 * post.logvar).exp() * scale}
        cases.append(Case(desc, (x, vae, scale), post.mode() * scale, mistakes))
    _run("encode_latents", fn, ("x", "vae", "latent_scale"), cases,
         "z = vae.encode(x).mode() * latent_scale: the posterior mean (not a random sample), times the scale.")
