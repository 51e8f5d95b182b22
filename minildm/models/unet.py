"""The denoising UNet: `UNet(UNetConfig(...))(x_t, t, cond=None, cond_mask=None)` -> model output (eps, x0 or v).

One configurable network serves the whole course: unconditional DDPM (chapter 01), class-conditional with a
null class for classifier-free guidance (`num_classes`, chapter 02), latents (`in_channels=4,
image_size=8`, chapter 04) and text-to-image with cross-attention (`cond_dim`, chapter 05).

Layout of the default config (`base_channels=16`, `channel_mults=(1, 2, 4, 8)`, 32x32, ~2.2M parameters):

    time: sinusoid (64) -> MLP -> temb (B, 128)   [+ class embedding, for class models]
    init 3x3 conv                       1 -> 16 @ 32x32
    down 0: res                        16 @ 32x32 -> skip, Downsample 16 -> 32
    down 1: res                        32 @ 16x16 -> skip, Downsample 32 -> 64
    down 2: res + linear attention     64 @ 8x8   -> skip, Downsample 64 -> 128
    down 3: res + full attention      128 @ 4x4   -> skip
    mid:    res + full attention + res at 128 @ 4x4
    up 3:   cat skip, res + full attention 256 -> 128, Upsample 128 -> 64
    up 2:   cat skip, res + linear attention 128 -> 64, Upsample 64 -> 32
    up 1:   cat skip, res 64 -> 32, Upsample 32 -> 16
    up 0:   cat skip, res 32 -> 16, GroupNorm-SiLU-3x3 conv 16 -> 1
Text models add cross-attention after the res block at the levels marked in `cross_attention` and in mid.

Why it is fast on a CPU: the expensive resolutions have few channels (16 at 32x32; most parameters live at
4x4 where a conv costs 64x less per weight), attention runs only at 8x8 (linear) and 4x4 (full, through
`F.scaled_dot_product_attention`), there is one res block per level on each path (diffusers' UNet2DModel
has `layers_per_block + 1` on the way up), and downsampling is a pixel-unshuffle + 1x1 conv.
`tools/bench_unet.py` measures training throughput against a diffusers peer.

References:
    Ronneberger, Fischer, Brox (2015), "U-Net", arXiv:1505.04597.
    Ho, Jain, Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239 (appendix B).
    Nichol, Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", arXiv:2102.09672.
    Ho, Salimans (2021), "Classifier-Free Diffusion Guidance", arXiv:2207.12598 (the null class).
    Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models", arXiv:2112.10752.
    Liu et al. (2022), "A ConvNet for the 2020s", arXiv:2201.03545 (`block_type="convnext"`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from minildm.models.layers import (Attention, ConvNextBlock, CrossAttention, Downsample, LinearAttention,
                                   PreNorm, Residual, ResnetBlock, SinusoidalTimeEmbedding, Upsample, masked_mean)

BLOCK_TYPES = ("resnet", "convnext")
ATTENTION_TYPES = ("none", "linear", "full")


@dataclass(frozen=True)
class UNetConfig:
    """Everything that defines a UNet; saved beside its weights by `minildm.checkpoints.save_model`.

    Per-level tuples (`channel_mults`, `attention`, `cross_attention`) have one entry per resolution level,
    from the input resolution down. `num_classes` adds a class embedding with one extra row, index
    `num_classes`, the null class (`null_label`) for classifier-free guidance. `cond_dim` adds cross-attention
    to text token states `(B, L, cond_dim)`; with `pooled_text` their masked mean (the prompt as one vector, as
    SDXL adds CLIP's pooled text embedding) is also projected and added to the time embedding, so every res block
    sees it. A model takes at most one of the two.

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    in_channels: int = 1
    out_channels: int = 1
    image_size: int = 32
    base_channels: int = 16  # channels at the input resolution; level i has base_channels * channel_mults[i]
    channel_mults: tuple[int, ...] = (1, 2, 4, 8)  # 32x32 -> 16x16 -> 8x8 -> 4x4 with 16, 32, 64, 128 channels
    num_res_blocks: int = 1  # per level, on the down and on the up path
    block_type: str = "resnet"  # "resnet" | "convnext"
    attention: tuple[str, ...] = ("none", "none", "linear", "full")  # per level: "none" | "linear" | "full"
    mid_attention: bool = True  # full self-attention in the bottleneck
    heads: int = 4
    head_dim: int = 32
    groups: int = 8  # GroupNorm groups in the res blocks
    dropout: float = 0.0
    time_dim: int = 128  # width of the time (and class) embedding; the sinusoid has time_dim // 2 features
    num_classes: int | None = None  # class conditioning; label num_classes is the null class
    cond_dim: int | None = None  # text conditioning: width of the token states
    cross_attention: tuple[bool, ...] = (False, False, True, True)  # per level, used only when cond_dim is set
    pooled_text: bool = False  # text models: also add the masked mean of the token states to the time embedding

    def __post_init__(self):
        levels = len(self.channel_mults)
        if levels < 1 or any(not isinstance(m, int) or m < 1 for m in self.channel_mults):
            raise ValueError(f"channel_mults must be a non-empty tuple of positive ints, got {self.channel_mults}.")
        for name in ("attention", "cross_attention"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)) or len(value) != levels:
                raise ValueError(f"{name} needs one entry per level ({levels}, like channel_mults="
                                 f"{self.channel_mults}), got {value!r}.")
        unknown = [a for a in self.attention if a not in ATTENTION_TYPES]
        if unknown:
            raise ValueError(f"unknown attention type(s) {unknown}; use one of {ATTENTION_TYPES} per level.")
        if self.block_type not in BLOCK_TYPES:
            raise ValueError(f"unknown block_type {self.block_type!r}; use one of {BLOCK_TYPES}.")
        for name in ("in_channels", "out_channels", "image_size", "base_channels", "num_res_blocks", "heads",
                     "head_dim", "groups", "time_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}.")
        factor = 2 ** (levels - 1)
        if self.time_dim % 2 or self.time_dim < 8:
            raise ValueError(f"time_dim must be even and >= 8, got {self.time_dim}.")
        if self.image_size % factor:
            raise ValueError(f"image_size={self.image_size} must be divisible by 2**(levels-1) = {factor} for "
                             f"{levels} levels; pad the images or use fewer channel_mults.")
        bad = [self.base_channels * m for m in self.channel_mults if (self.base_channels * m) % self.groups]
        if self.block_type == "resnet" and bad:
            raise ValueError(f"channel counts {bad} are not divisible by groups={self.groups}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.num_classes is not None and (not isinstance(self.num_classes, int) or self.num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None, got {self.num_classes!r}.")
        if self.cond_dim is not None and (not isinstance(self.cond_dim, int) or self.cond_dim < 1):
            raise ValueError(f"cond_dim must be a positive int or None, got {self.cond_dim!r}.")
        if self.num_classes is not None and self.cond_dim is not None:
            raise ValueError("set num_classes (class labels) or cond_dim (text token states), not both.")
        if self.pooled_text and self.cond_dim is None:
            raise ValueError("pooled_text pools text token states: it needs cond_dim (a text model).")

    @property
    def null_label(self) -> int | None:
        """The class index that means "no condition" (classifier-free guidance), or None."""
        return self.num_classes


class ResAttnBlock(nn.Module):
    """One res block (ResNet or ConvNeXt), then optional self-attention, then optional cross-attention.

    Derived in notebooks/01_ddpm_from_scratch.ipynb (cross-attention in notebooks/05_text_conditioning_cfg.ipynb).
    """

    def __init__(self, config: UNetConfig, in_ch: int, out_ch: int, time_dim: int, attention: str,
                 cross: bool):
        super().__init__()
        c = config
        if c.block_type == "resnet":
            self.block = ResnetBlock(in_ch, out_ch, time_dim, groups=c.groups, dropout=c.dropout)
        else:
            self.block = ConvNextBlock(in_ch, out_ch, time_dim, dropout=c.dropout)
        attn_cls = {"none": None, "linear": LinearAttention, "full": Attention}[attention]
        self.attn = Residual(PreNorm(out_ch, attn_cls(out_ch, c.heads, c.head_dim))) if attn_cls else None
        self.cross = (Residual(PreNorm(out_ch, CrossAttention(out_ch, c.cond_dim, c.heads, c.head_dim)))
                      if cross else None)

    def forward(self, h, temb, cond=None, cond_mask=None):
        h = self.block(h, temb)
        if self.attn is not None:
            h = self.attn(h)
        if self.cross is not None:
            h = self.cross(h, cond, cond_mask)
        return h


class UNet(nn.Module):
    """The course's UNet. `forward(x_t, t, cond=None, cond_mask=None)` returns a tensor shaped like `x_t`.

    `t`: `(B,)` timesteps (long, or float), or one int / 0-dim tensor used for the whole batch (what a
    diffusers scheduler loop passes). `cond`: None for an unconditional model; `(B,)` long labels in
    `[0, num_classes]` for a class model, where `num_classes` is the null class (pass it explicitly for
    the unconditional branch of CFG); `(B, L, cond_dim)` float token states for a text model, with
    `cond_mask` `(B, L)` True for real tokens.

    Derived in notebooks/01_ddpm_from_scratch.ipynb; class conditioning in chapter 02, text in
    notebooks/05_text_conditioning_cfg.ipynb.
    """

    config_class = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"UNet expects a UNetConfig, got {type(config).__name__}.")
        self.config = c = config
        chans = [c.base_channels * m for m in c.channel_mults]
        levels = len(chans)
        time_dim = c.time_dim
        self.time_embed = nn.Sequential(SinusoidalTimeEmbedding(time_dim // 2), nn.Linear(time_dim // 2, time_dim),
                                        nn.SiLU(), nn.Linear(time_dim, time_dim))  # (B, time_dim)
        self.class_embed = nn.Embedding(c.num_classes + 1, time_dim) if c.num_classes is not None else None
        text = c.cond_dim is not None
        self.pooled_embed = (nn.Sequential(nn.Linear(c.cond_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
                             if c.pooled_text else None)  # (B, cond_dim) -> (B, time_dim)
        self.init_conv = nn.Conv2d(c.in_channels, chans[0], 3, padding=1)

        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, ch in enumerate(chans):
            self.down.append(nn.ModuleList(
                ResAttnBlock(c, ch, ch, time_dim, c.attention[i], text and c.cross_attention[i])
                for _ in range(c.num_res_blocks)))
            self.downsample.append(Downsample(ch, chans[i + 1]) if i < levels - 1 else nn.Identity())

        mid = chans[-1]
        self.mid1 = ResAttnBlock(c, mid, mid, time_dim, "full" if c.mid_attention else "none", text)
        self.mid2 = ResAttnBlock(c, mid, mid, time_dim, "none", False)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(levels)):
            ch = chans[i]
            self.up.append(nn.ModuleList(
                ResAttnBlock(c, 2 * ch, ch, time_dim, c.attention[i], text and c.cross_attention[i])
                for _ in range(c.num_res_blocks)))
            self.upsample.append(Upsample(ch, chans[i - 1]) if i > 0 else nn.Identity())

        self.out = nn.Sequential(nn.GroupNorm(min(c.groups, chans[0]), chans[0]), nn.SiLU(),
                                 nn.Conv2d(chans[0], c.out_channels, 3, padding=1))

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with `requires_grad`)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward(self, x_t: torch.Tensor, t, cond: torch.Tensor | None = None,
                cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        t, cond, cond_mask = self._check_inputs(x_t, t, cond, cond_mask)
        temb = self.time_embed(t)  # (B, time_dim)
        if self.class_embed is not None:
            temb = temb + self.class_embed(cond)  # (B, time_dim): label embedding added to the time embedding
            cond = None
        if self.pooled_embed is not None:  # the prompt as one vector: the mean of its real tokens' states
            temb = temb + self.pooled_embed(masked_mean(cond, cond_mask))  # (B, cond_dim) -> (B, time_dim)
        h = self.init_conv(x_t)  # (B, C0, H, W)
        skips = []
        for blocks, downsample in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, temb, cond, cond_mask)
                skips.append(h)
            h = downsample(h)  # (B, C_{i+1}, H/2, W/2) except after the last level
        h = self.mid2(self.mid1(h, temb, cond, cond_mask), temb)
        for blocks, upsample in zip(self.up, self.upsample):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), temb, cond, cond_mask)  # (B, 2 C_i, H_i, W_i) in
            h = upsample(h)  # (B, C_{i-1}, 2 H_i, 2 W_i) except after level 0
        return self.out(h)  # (B, out_channels, H, W)

    def _check_inputs(self, x_t, t, cond, cond_mask):
        c = self.config
        if not isinstance(x_t, torch.Tensor):
            raise TypeError(f"x_t must be a torch.Tensor, got {type(x_t).__name__}.")
        if x_t.ndim != 4:
            raise ValueError(f"x_t must have rank 4 (B, C, H, W), got shape {tuple(x_t.shape)}; "
                             f"add a batch dimension with x_t[None] for a single image.")
        b, ch, h, w = x_t.shape
        if ch != c.in_channels:
            raise ValueError(f"x_t has {ch} channels but this UNet expects in_channels={c.in_channels}.")
        if (h, w) != (c.image_size, c.image_size):
            raise ValueError(f"x_t is {h}x{w} but this UNet was configured for {c.image_size}x{c.image_size} "
                             f"(image_size); Fashion-MNIST images are padded 28 -> 32 by minildm.data.preprocess.")
        if not x_t.is_floating_point():
            raise TypeError(f"x_t must be a float tensor, got {x_t.dtype}.")
        if not torch.isfinite(x_t).all():
            raise ValueError("x_t contains NaN or inf; check the scheduler step or the learning rate.")
        t = self._check_t(t, b, x_t.device)
        if self.class_embed is not None:
            cond = self._check_labels(cond, b)
            if cond_mask is not None:
                raise ValueError("cond_mask is for text models (cond_dim); a class model takes labels only.")
        elif c.cond_dim is not None:
            if cond is None:
                raise ValueError(f"this UNet is text-conditional (cond_dim={c.cond_dim}): pass cond, token states "
                                 f"(B, L, {c.cond_dim}); for CFG's unconditional branch encode the empty prompt.")
            if not isinstance(cond, torch.Tensor) or cond.ndim != 3 or cond.shape[0] != b \
                    or cond.shape[2] != c.cond_dim:
                shape = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
                raise ValueError(f"cond must be text token states (B={b}, L, cond_dim={c.cond_dim}), got {shape}.")
            if not cond.is_floating_point():
                raise TypeError(f"text cond must be float token states, got {cond.dtype}.")
        elif cond is not None or cond_mask is not None:
            raise ValueError("this UNet is unconditional (num_classes and cond_dim are None) but cond/cond_mask "
                             "was passed; build it with UNetConfig(num_classes=...) or cond_dim=... to condition.")
        return t, cond, cond_mask

    @staticmethod
    def _check_t(t, batch: int, device) -> torch.Tensor:
        if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
            raise TypeError(f"t must be an int, a 0-dim tensor or a (B,) tensor of timesteps, got {type(t).__name__}.")
        t = torch.as_tensor(t, device=device)
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"t must hold integer or float timesteps, got {t.dtype}.")
        if t.ndim == 0 or (t.ndim == 1 and t.shape[0] == 1):
            return t.reshape(1).expand(batch)  # (B,): one timestep for the whole batch
        if t.ndim != 1 or t.shape[0] != batch:
            raise ValueError(f"t must have shape (B,) = ({batch},) or be a scalar, got {tuple(t.shape)}.")
        return t

    def _check_labels(self, cond, batch: int) -> torch.Tensor:
        n = self.config.num_classes
        if cond is None:
            raise ValueError(f"this UNet is class-conditional (num_classes={n}): pass cond, (B,) long labels; "
                             f"use label {n} (the null class) for the unconditional branch of CFG.")
        if not isinstance(cond, torch.Tensor) or cond.ndim != 1:
            shape = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
            raise ValueError(f"class labels must be a (B,) tensor, got {shape}.")
        if cond.is_floating_point() or cond.is_complex() or cond.dtype == torch.bool:
            raise TypeError(f"class labels must be an integer tensor (torch.long), got {cond.dtype}.")
        if cond.shape[0] != batch:
            raise ValueError(f"got {cond.shape[0]} labels for a batch of {batch}; pass one label per image.")
        if cond.numel() and (cond.min() < 0 or cond.max() > n):
            raise ValueError(f"class labels must be in [0, {n}] ({n} = null class), got values in "
                             f"[{int(cond.min())}, {int(cond.max())}].")
        return cond.long()
