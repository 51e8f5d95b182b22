"""Exercises of notebooks/03_vae_and_kl.ipynb: reparameterise, the KL term, the latent scale.

References: Kingma & Welling (2014), sec. 2.4 and appendix B; Rombach et al. (2022), appendix G.
"""
from __future__ import annotations

from typing import Callable

import torch

from minildm.exercises._runner import F32, F64, Case, _randn, _run
from minildm.models.vae import DiagonalGaussian


# ---- 03_vae_and_kl --------------------------------------------------------------------------------
def _vae_cases(seed: int):
    """(description, mu, logvar, eps) for the VAE exercises; logvar stays inside DiagonalGaussian's clamp."""
    g, lat = torch.Generator().manual_seed(seed), (3, 4, 8, 8)
    for desc, shape, lv_mean, lv_std, dtype in [
            ("a random batch of latents (B, 4, 8, 8)", (4, 4, 8, 8), 0.0, 1.0, F32),
            ("flat latents (B, 16), as MLPVAE's", (5, 16), 0.0, 1.0, F32),
            ("logvar = 0 everywhere (sigma = 1)", lat, 0.0, 0.0, F32),
            ("very negative logvar, around -12 (sigma ~ 0.0025: z ~ mu)", lat, -12.0, 0.5, F32),
            ("large logvar, around +3 (sigma ~ 4.5)", lat, 3.0, 0.5, F32),
            ("float64 inputs (the output must stay float64)", lat, 0.0, 1.0, F64)]:
        mu, lv = _randn(g, shape, dtype), (lv_mean + lv_std * _randn(g, shape, F64)).to(dtype)
        yield desc, mu, lv, _randn(g, shape, dtype)


def check_reparameterise(fn: Callable) -> None:
    """Check `fn(mu, logvar, eps) -> z = mu + exp(0.5 logvar) * eps`, the reparameterisation trick.

    `mu`, `logvar`, `eps`: `(B, ...)`; as `DiagonalGaussian.sample`. Exercise of notebooks/03_vae_and_kl.ipynb.
    """
    cases = []
    for desc, mu, lv, eps in _vae_cases(4):
        m, l, e = mu.double(), lv.double(), eps.double()
        mistakes = {"logvar is used as the standard deviation; sigma = exp(0.5 * logvar).": m + l * e,
                    "exp(logvar) is the variance; the std is sigma = exp(0.5 * logvar).": m + l.exp() * e,
                    "exp(-0.5 * logvar) is 1 / sigma; sigma = exp(0.5 * logvar).": m + (-0.5 * l).exp() * e,
                    "the noise term is missing: z = mu + sigma * eps.": m,
                    "mu is missing: z = mu + sigma * eps.": (0.5 * l).exp() * e,
                    "mu and sigma are swapped: z = mu + sigma * eps.": (0.5 * l).exp() + m * e}
        cases.append(Case(desc, (mu, lv, eps), m + torch.exp(0.5 * l) * e, mistakes))  # Kingma & Welling sec. 2.4
    _run("reparameterise", fn, ("mu", "logvar", "eps"), cases, "z = mu + torch.exp(0.5 * logvar) * eps.")


def check_kl(fn: Callable) -> None:
    """Check `fn(mu, logvar) -> kl`, `(B,)` KL(N(mu, sigma^2) || N(0, I)) in nats, summed over the latent dims.

    `mu`, `logvar`: `(B, ...)`; as `DiagonalGaussian.kl`. Exercise of notebooks/03_vae_and_kl.ipynb.
    """
    cases = []
    for desc, mu, lv, _ in _vae_cases(5):
        if desc.startswith("logvar = 0"):
            mu, desc = mu * 0, "the prior itself: mu = 0, logvar = 0 (the KL must be 0)"
        m, l, dims = mu.double(), lv.double(), tuple(range(1, mu.ndim))
        kl = lambda one=1, c=1, log_var=l: -0.5 * (one + log_var - c * m**2 - log_var.exp()).sum(dims)  # noqa: E731
        mistakes = {"your KL is negative: the sign is flipped (a KL is always >= 0).": -kl(),
                    "your KL is twice the right value: the factor 0.5 is missing.": 2 * kl(),
                    "you averaged over the latent dims; sum over them (dims 1..).": kl() / m[0].numel(),
                    "the mu^2 term has the wrong sign: it is - mu^2.": kl(c=-1),
                    "the mu^2 term is missing.": kl(c=0),
                    "the 1 is missing: -0.5 * sum(1 + logvar - mu^2 - exp(logvar)).": kl(one=0),
                    "logvar is log sigma^2: your result treats it as log sigma.": kl(log_var=2 * l)}
        cases.append(Case(desc, (mu, lv), DiagonalGaussian(m, l).kl(), mistakes))  # Kingma & Welling, appendix B
    _run("kl", fn, ("mu", "logvar"), cases,
         "kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=tuple(range(1, mu.ndim))).")




def check_latent_scale(fn: Callable) -> None:
    """Check `fn(z) -> scale`, the latent scale factor `1 / std(z)` over all elements (a 0-dim tensor), as
    `minildm.models.vae.latent_scale` computes it from encoded latents (Rombach et al. 2022, appendix G).

    `z`: latents `(N, C, h, w)`. Exercise of notebooks/03_vae_and_kl.ipynb.
    """
    g, cases = torch.Generator().manual_seed(8), []
    for desc, shape, sd, mean, dtype in [("latents with std 5 (a tiny KL weight)", (64, 4, 8, 8), 5.0, 0.0, F32),
                                         ("latents with std 0.2 and mean 1", (32, 4, 8, 8), 0.2, 1.0, F32),
                                         ("float64 latents", (16, 4, 8, 8), 3.0, -0.5, F64)]:
        z = (_randn(g, shape, F64) * torch.linspace(0.5, 1.5, shape[1], dtype=F64)[None, :, None, None] * sd
             + mean).to(dtype)                                           # channels of different spread
        zd = z.double()
        mistakes = {"that is the std itself; the scale is its inverse, 1 / std.": zd.std(),
                    "that is 1 / variance; the scale is 1 / std (a square root is missing).": 1 / zd.var(),
                    "that is 1 / the mean absolute value; use the standard deviation.": 1 / zd.abs().mean(),
                    "one scale per channel is not what LDM does: one number, over all elements.":
                        (1 / zd.std(dim=(0, 2, 3))).mean()}
        cases.append(Case(desc, (z,), 1 / zd.std(), mistakes))
    _run("latent_scale", fn, ("z",), cases, "scale = 1 / z.std()  (over all elements)")
