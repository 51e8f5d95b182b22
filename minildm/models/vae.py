"""Variational autoencoders: a convolutional VAE with spatial latents (LDM's first stage) and a 2-D MLP VAE.

`VAE(VAEConfig(downsample_factor=f))` maps images `(B, 1, 32, 32)` in [-1, 1] to a diagonal Gaussian posterior
over latents `(B, latent_channels, 32/f, 32/f)` and back; `MLPVAE` has a `(B, 2)` latent that can be drawn as a
scatter plot or a decoded manifold. Both share one API: `encode(x) -> DiagonalGaussian`, `decode(z) -> x_rec`,
`forward(x, sample=True, generator=None) -> VAEOutput(reconstruction, posterior, z)`; `vae_loss` is the
beta-weighted negative ELBO and `latent_scale` the `1 / std` that makes latents unit-variance for diffusion.

Layout of the default config (`base_channels=32`, f=4, channel_mults derived (1, 2, 4), ~1.5M parameters):

    encoder: 3x3 conv 1 -> 32 @ 32x32, res 32, Downsample 32 -> 64, res 64 @ 16x16, Downsample 64 -> 128,
             res 128 @ 8x8, mid res 128 [+ attention], GroupNorm-SiLU-3x3 conv 128 -> 2 * 4 (mu, logvar)
    decoder: 3x3 conv 4 -> 128 @ 8x8, mid res [+ attention], res 128, Upsample 128 -> 64, res 64 @ 16x16,
             Upsample 64 -> 32, res 32 @ 32x32, GroupNorm-SiLU-3x3 conv 32 -> 1 (unbounded, no tanh)

References:
    Kingma, Welling (2014), "Auto-Encoding Variational Bayes", arXiv:1312.6114 (the reparameterisation
    trick, sec. 2.4; the closed-form Gaussian KL, appendix B).
    Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models", arXiv:2112.10752
    (the KL-regularised autoencoder, sec. 3.1; the latent scale factor, appendix G. Stable Diffusion v1's
    0.18215 is 1 / std of *its own* VAE's latents: every VAE needs its own, computed by `latent_scale`).
    Higgins et al. (2017), "beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
    Framework", ICLR (the KL weight beta).
    diffusers' `DiagonalGaussianDistribution` (Apache-2.0): the logvar clamp to [-30, 20].

Derived in notebooks/03_vae_and_kl.ipynb.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from minildm.models.layers import Attention, Downsample, PreNorm, Residual, ResnetBlock, Upsample

DOWNSAMPLE_FACTORS = (1, 2, 4, 8)
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' clamp: keeps exp(logvar) finite in float32


class DiagonalGaussian:
    """The encoder's posterior q(z|x) = N(mu, diag(exp(logvar))); `mu`, `logvar` are `(B, ...)` tensors.

    Derived in notebooks/03_vae_and_kl.ipynb.
    """

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor):
        if mu.shape != logvar.shape:
            raise ValueError(f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must have the same shape.")
        if mu.ndim < 2:
            raise ValueError(f"mu must be (B, ...) with at least one latent dim, got {tuple(mu.shape)}; "
                             f"use mu[:, None] for scalar latents.")
        self.mu = mu
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): differentiable in mu and logvar (Kingma & Welling sec. 2.4)."""
        # eps drawn on the generator's device (the CPU by default) in float32, then moved: one seed, one z anywhere
        device = generator.device if generator is not None else torch.device("cpu")
        eps = torch.randn(self.mu.shape, generator=generator, device=device, dtype=torch.float32)
        return self.mu + self.std * eps.to(self.mu)  # the reparameterisation trick

    def mode(self) -> torch.Tensor:
        return self.mu  # the most likely latent (what a deterministic encode uses)

    def kl(self) -> torch.Tensor:
        """Per-sample KL(N(mu, sigma^2) || N(0, I)) in nats, summed over the latent dims -> `(B,)`."""
        mu, logvar, dims = self.mu, self.logvar, tuple(range(1, self.mu.ndim))
        return -0.5 * torch.sum(1 + logvar - mu**2 - torch.exp(logvar), dim=dims)  # Kingma & Welling (2014), appendix B


class VAEOutput(NamedTuple):  # what VAE.forward and MLPVAE.forward return
    reconstruction: torch.Tensor  # (B, C, H, W), unbounded; clamp to [-1, 1] for display
    posterior: DiagonalGaussian
    z: torch.Tensor  # the latent fed to the decoder: a posterior sample, or its mode when sample=False


class VAELoss(NamedTuple):
    loss: torch.Tensor  # recon + beta * kl, a scalar
    recon: torch.Tensor  # mean over batch and pixels of the per-pixel error
    kl: torch.Tensor  # mean over batch of KL(q(z|x) || N(0, I)) / number of pixels: nats per pixel


def _check_input(name: str, x, ndim: int, channels: int, layout: str) -> None:
    """`x` must be a finite float tensor of rank `ndim` with `channels` entries in dim 1 (`layout` for errors)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != ndim or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape {layout} with {channels} in dim 1, got {tuple(x.shape)}; "
                         f"wrong channels, or a missing batch dimension (use x[None] for one image)?")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {x.dtype}; minildm.data.preprocess converts uint8.")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; check the data or the learning rate.")


def _check_positive_ints(config, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")


class _VAEBase(nn.Module):
    """The shared `forward` and `num_parameters` of `VAE` and `MLPVAE`."""

    def forward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> VAEOutput:
        """Encode, draw z (or take the mode), decode. Derived in notebooks/03_vae_and_kl.ipynb."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return VAEOutput(self.decode(z), posterior, z)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with `requires_grad`)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


@dataclass(frozen=True)
class VAEConfig:
    """Everything that defines a `VAE`; saved beside its weights by `minildm.checkpoints.save_model`.

    f = `downsample_factor` in {1, 2, 4, 8}: log2(f) downsamplings, log2(f) + 1 resolution levels, one
    `channel_mults` entry per level (None derives `min(2**i, 4)`: (1,), (1, 2), (1, 2, 4), (1, 2, 4, 4)).
    Derived in notebooks/03_vae_and_kl.ipynb.
    """

    in_channels: int = 1
    image_size: int = 32  # the training resolution; the VAE is convolutional and takes any H, W divisible by f
    latent_channels: int = 4
    downsample_factor: int = 4  # f: latents are (B, latent_channels, H/f, W/f)
    base_channels: int = 32
    channel_mults: tuple[int, ...] | None = None  # one per level; None = derived from f
    num_res_blocks: int = 1  # per level, in the encoder and in the decoder
    groups: int = 8  # GroupNorm groups in the res blocks
    mid_attention: bool = False  # single-head self-attention in the bottleneck (LDM has it; costly at f=1)

    def __post_init__(self):
        f = self.downsample_factor
        if isinstance(f, bool) or f not in DOWNSAMPLE_FACTORS:
            raise ValueError(f"downsample_factor must be one of {DOWNSAMPLE_FACTORS} (a power of two: log2(f) "
                             f"downsamplings), got {f!r}.")
        _check_positive_ints(self, ("in_channels", "image_size", "latent_channels", "base_channels",
                                    "num_res_blocks", "groups"))
        if self.image_size % f:
            raise ValueError(f"image_size={self.image_size} is not divisible by downsample_factor={f}; pad the "
                             f"images or choose a smaller f.")
        levels = self.num_levels
        mults = tuple(min(2**i, 4) for i in range(levels)) if self.channel_mults is None else self.channel_mults
        if (not isinstance(mults, (tuple, list)) or len(mults) != levels
                or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mults)):
            raise ValueError(f"channel_mults needs {levels} positive ints (one per level for f={f}), got {mults!r}; "
                             f"or leave it None to derive it.")
        object.__setattr__(self, "channel_mults", tuple(mults))
        bad = [self.base_channels * m for m in mults if (self.base_channels * m) % self.groups]
        if bad:
            raise ValueError(f"channel counts {bad} are not divisible by groups={self.groups}; choose base_channels "
                             f"as a multiple of groups.")

    @property
    def num_levels(self) -> int:
        return int(math.log2(self.downsample_factor)) + 1

    @property
    def latent_size(self) -> int:
        """Side of the latent for an `image_size` input: `image_size // f`."""
        return self.image_size // self.downsample_factor


class VAE(_VAEBase):
    """Convolutional VAE with spatial latents: `(B, C, H, W)` <-> `(B, latent_channels, H/f, W/f)`.

    The decoder's output is unbounded, as in LDM: a tanh would need infinite pre-activations to reach the
    background's exact -1, and the MSE already pulls outputs into [-1, 1]; clamp for display.

    Derived in notebooks/03_vae_and_kl.ipynb.
    """

    config_class = VAEConfig

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = c = config or VAEConfig()
        chans = [c.base_channels * m for m in c.channel_mults]
        levels, top = len(chans), chans[-1]

        def res(i, o):
            return ResnetBlock(i, o, time_dim=None, groups=c.groups)

        def mid():
            attn = [Residual(PreNorm(top, Attention(top, heads=1, head_dim=top)))] if c.mid_attention else []
            return nn.Sequential(res(top, top), *attn)

        self.encoder = nn.ModuleDict(dict(
            conv_in=nn.Conv2d(c.in_channels, chans[0], 3, padding=1),
            levels=nn.ModuleList(
                nn.Sequential(*(res(chans[i], chans[i]) for _ in range(c.num_res_blocks)),
                              *([Downsample(chans[i], chans[i + 1])] if i < levels - 1 else []))
                for i in range(levels)),
            mid=mid(),
            out=nn.Sequential(nn.GroupNorm(c.groups, top), nn.SiLU(),
                              nn.Conv2d(top, 2 * c.latent_channels, 3, padding=1)),
        ))
        self.decoder = nn.ModuleDict(dict(
            conv_in=nn.Conv2d(c.latent_channels, top, 3, padding=1),
            mid=mid(),
            levels=nn.ModuleList(
                nn.Sequential(*(res(chans[i], chans[i]) for _ in range(c.num_res_blocks)),
                              *([Upsample(chans[i], chans[i - 1])] if i > 0 else []))
                for i in reversed(range(levels))),
            out=nn.Sequential(nn.GroupNorm(c.groups, chans[0]), nn.SiLU(),
                              nn.Conv2d(chans[0], c.in_channels, 3, padding=1)),
        ))

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """x `(B, C, H, W)` -> q(z|x) on `(B, latent_channels, H/f, W/f)`. Derived in notebooks/03_vae_and_kl.ipynb."""
        c, f = self.config, self.config.downsample_factor
        _check_input("x", x, 4, c.in_channels, "(B, C, H, W)")
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"x is {x.shape[-2]}x{x.shape[-1]}, not divisible by downsample_factor={f}; pad it "
                             f"(Fashion-MNIST is padded 28 -> 32 by minildm.data.preprocess).")
        e, h = self.encoder, self.encoder["conv_in"](x)  # (B, C0, H, W)
        for level in e["levels"]:
            h = level(h)  # (B, C_{i+1}, H/2, W/2) after each Downsample
        h = e["out"](e["mid"](h))  # (B, 2 * latent_channels, H/f, W/f)
        mu, logvar = h.chunk(2, dim=1)  # 2 x (B, latent_channels, H/f, W/f)
        return DiagonalGaussian(mu, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z `(B, latent_channels, h, w)` -> images `(B, C, h*f, w*f)`. Derived in notebooks/03_vae_and_kl.ipynb."""
        c = self.config
        _check_input("z", z, 4, c.latent_channels, f"(B, latent_channels, H/f, W/f) = (B, {c.latent_channels}, "
                     f"{c.latent_size}, {c.latent_size}) for {c.image_size}x{c.image_size} images")
        d, h = self.decoder, self.decoder["mid"](self.decoder["conv_in"](z))  # (B, C_top, h, w)
        for level in d["levels"]:
            h = level(h)  # (B, C_{i-1}, 2h, 2w) after each Upsample
        return d["out"](h)  # (B, C, H, W)


@dataclass(frozen=True)
class MLPVAEConfig:
    """A fully connected VAE with a tiny latent, to draw the latent space. Derived in notebooks/03_vae_and_kl.ipynb."""

    latent_dim: int = 2
    hidden: int = 512
    image_size: int = 32
    in_channels: int = 1

    def __post_init__(self):
        _check_positive_ints(self, ("latent_dim", "hidden", "image_size", "in_channels"))


class MLPVAE(_VAEBase):
    """Images `(B, C, S, S)` -> flatten -> 2 hidden layers -> (mu, logvar) `(B, latent_dim)`, and back.

    Output unbounded, like `VAE`. Derived in notebooks/03_vae_and_kl.ipynb.
    """

    config_class = MLPVAEConfig

    def __init__(self, config: MLPVAEConfig | None = None):
        super().__init__()
        self.config = c = config or MLPVAEConfig()
        pixels = c.in_channels * c.image_size**2
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, c.hidden), nn.SiLU(),
                                     nn.Linear(c.hidden, c.hidden), nn.SiLU(), nn.Linear(c.hidden, 2 * c.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(c.latent_dim, c.hidden), nn.SiLU(),
                                     nn.Linear(c.hidden, c.hidden), nn.SiLU(), nn.Linear(c.hidden, pixels))

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Images `(B, C, S, S)` -> q(z|x) over `(B, latent_dim)`. Derived in notebooks/03_vae_and_kl.ipynb."""
        c = self.config
        _check_input("x", x, 4, c.in_channels, "(B, C, H, W)")
        if tuple(x.shape[-2:]) != (c.image_size, c.image_size):
            raise ValueError(f"x is {x.shape[-2]}x{x.shape[-1]} but this MLPVAE was built for "
                             f"{c.image_size}x{c.image_size} (image_size); an MLP cannot change resolution.")
        mu, logvar = self.encoder(x).chunk(2, dim=1)  # 2 x (B, latent_dim)
        return DiagonalGaussian(mu, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents `(B, latent_dim)` -> images `(B, C, S, S)`. Derived in notebooks/03_vae_and_kl.ipynb."""
        c = self.config
        _check_input("z", z, 2, c.latent_dim, f"(B, latent_dim) = (B, {c.latent_dim})")
        return self.decoder(z).reshape(-1, c.in_channels, c.image_size, c.image_size)  # (B, C, S, S)


def vae_loss(x: torch.Tensor, output: VAEOutput, beta: float, recon: str = "mse") -> VAELoss:
    """Beta-weighted negative ELBO per pixel: `recon + beta * kl` (Higgins et al. 2017).

    Normalisation (both terms divided by D = C*H*W, so beta compares with LDM's kl_weight):
    `recon` = mean over batch and pixels of (x - x_rec)^2 ("mse") or |x - x_rec| ("l1");
    `kl` = mean over batch of the summed KL(q(z|x) || N(0, I)), divided by D (nats per pixel).
    With a Gaussian decoder N(x_rec, sigma^2 I), -ELBO / D = mse / (2 sigma^2) + kl + const, so "mse" with
    beta = 2 sigma^2 is the true ELBO; beta = 1 means sigma ~= 0.71, very blurry for [-1, 1] images.

    Derived in notebooks/03_vae_and_kl.ipynb.
    """
    if recon not in ("mse", "l1"):
        raise ValueError(f"recon must be 'mse' or 'l1', got {recon!r}.")
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta < 0:
        raise ValueError(f"beta must be a number >= 0, got {beta!r}.")
    x_rec = output.reconstruction
    if x_rec.shape != x.shape:
        raise ValueError(f"reconstruction {tuple(x_rec.shape)} and x {tuple(x.shape)} differ; pass the x you encoded.")
    pixels = x[0].numel()  # D = C * H * W
    rec = F.mse_loss(x_rec, x) if recon == "mse" else F.l1_loss(x_rec, x)
    kl = output.posterior.kl().mean() / pixels  # nats per pixel
    return VAELoss(rec + beta * kl, rec, kl)


@torch.no_grad()
def latent_scale(vae: nn.Module, x0: torch.Tensor | Iterable, batch_size: int = 500, sample: bool = True,
                 generator: torch.Generator | None = None) -> float:
    """`1 / std` of the latents of `x0`: `z * latent_scale` has unit variance, what diffusion's prior assumes.

    `x0` is a tensor of images `(N, C, H, W)` (encoded `batch_size` at a time) or an iterable of batches (tensors
    or `(x0, labels)` tuples, e.g. a DataLoader). As LDM (appendix G) does, the std is over all elements of
    posterior *samples* (`sample=True`), the z the decoder was trained on; `sample=False` uses the mode mu.
    The model runs in eval mode and on its own device; its mode is restored afterwards.

    Derived in notebooks/03_vae_and_kl.ipynb.
    """
    if isinstance(x0, torch.Tensor):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        batches = x0.split(batch_size)
    else:
        batches = (b[0] if isinstance(b, (tuple, list)) else b for b in x0)
    device = next(vae.parameters()).device
    was_training = vae.training
    vae.eval()
    total, s1, s2 = 0, 0.0, 0.0
    try:
        for x in batches:
            if len(x) == 0:  # an empty split: nothing to encode
                continue
            posterior = vae.encode(x.to(device))
            z = (posterior.sample(generator) if sample else posterior.mode()).double()
            total, s1, s2 = total + z.numel(), s1 + z.sum().item(), s2 + z.pow(2).sum().item()
    finally:
        vae.train(was_training)
    if total < 2:
        raise ValueError("latent_scale needs at least one image; x0 was empty.")
    var = (s2 - s1 * s1 / total) / (total - 1)  # unbiased, like torch.std
    if var <= 0:
        raise ValueError("the latents have zero variance (an untrained or collapsed encoder?); cannot scale them.")
    return float(1.0 / math.sqrt(var))
