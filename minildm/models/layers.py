"""UNet building blocks: time embedding, residual blocks, attention (full, linear, cross), resampling.

Every block is a plain `nn.Module` on `(B, C, H, W)` feature maps; the UNet in `minildm.models.unet` is
assembled from them. Names follow lucidrains' denoising-diffusion-pytorch (`ResnetBlock`, `LinearAttention`,
`PreNorm`, `Residual`) so that code is easy to compare.

References:
    Vaswani et al. (2017), "Attention Is All You Need", arXiv:1706.03762 (sinusoidal embedding, sec. 3.5;
    scaled dot-product attention, eq. (1)).
    Ho, Jain, Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239 (the UNet: residual
    blocks with a time embedding, GroupNorm, self-attention at low resolution).
    Nichol, Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", arXiv:2102.09672 (time
    embedding as a FiLM-style scale/shift after the second GroupNorm, `use_scale_shift_norm`).
    Perez et al. (2018), "FiLM: Visual Reasoning with a General Conditioning Layer", arXiv:1709.07871.
    Liu et al. (2022), "A ConvNet for the 2020s" (ConvNeXt), arXiv:2201.03545.
    Katharopoulos et al. (2020), "Transformers are RNNs: Fast Autoregressive Transformers with Linear
    Attention", arXiv:2006.16236; Shen et al. (2021), "Efficient Attention: Attention with Linear
    Complexities", arXiv:1812.01243 (softmax over q's features and over k's positions).
    Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models", arXiv:2112.10752
    (cross-attention to text token states, sec. 3.3).
    lucidrains/denoising-diffusion-pytorch (MIT), the layer names and the linear-attention layout.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class SinusoidalTimeEmbedding(nn.Module):
    """t `(B,)` (int or float) -> `(B, dim)`: `[sin(t * f_0..f_{dim/2-1}), cos(t * f_0..f_{dim/2-1})]`.

    The first half is sin, the second half cos (the Transformer's pair, concatenated instead of
    interleaved, as in DDPM's and diffusers' code); frequencies `f_i = 10000^(-i / (dim/2 - 1))` go
    geometrically from 1 down to 1/10000.

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalTimeEmbedding needs an even dim >= 4, got {dim}.")
        self.dim = dim
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / (half - 1))
        self.register_buffer("freqs", freqs, persistent=False)  # (dim/2,)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if t.ndim != 1:
            raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}.")
        args = t.float()[:, None] * self.freqs[None, :]  # (B, dim/2)
        return torch.cat([args.sin(), args.cos()], dim=-1)  # (B, dim): sin half, then cos half


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice, the time embedding as a scale/shift after the second norm, plus a skip.

    `h = conv1(silu(norm1(x)))`, `h = norm2(h) * (1 + scale) + shift` with `(scale, shift) = Linear(silu(temb))`,
    `out = conv2(dropout(silu(h))) + skip(x)`; `skip` is a 1x1 conv when the channel count changes.

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    def __init__(self, in_ch: int, out_ch: int, time_dim: int | None = None, groups: int = 8,
                 dropout: float = 0.0):
        super().__init__()
        for ch in (in_ch, out_ch):
            if ch % groups:
                raise ValueError(f"ResnetBlock: {ch} channels are not divisible by groups={groups}; "
                                 f"choose channel counts that are multiples of the GroupNorm group count.")
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * out_ch)) if time_dim else None
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        h = self.norm2(h)
        if self.time_proj is not None:
            if temb is None:
                raise ValueError("this ResnetBlock was built with time_dim, so forward needs temb (B, time_dim).")
            scale, shift = self.time_proj(temb)[:, :, None, None].chunk(2, dim=1)  # 2 x (B, out_ch, 1, 1)
            h = h * (1 + scale) + shift  # FiLM, improved DDPM's scale-shift norm
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class ConvNextBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, + time embedding, norm, pointwise MLP (1x1 convs), + skip.

    `h = dwconv(x) + Linear(gelu(temb))`, `out = conv1x1(gelu(conv1x1(norm(h)))) + skip(x)`; the MLP widens
    to `mult * out_ch`. `groups=1` makes the GroupNorm a LayerNorm over (C, H, W), as in ConvNeXt.

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    def __init__(self, in_ch: int, out_ch: int, time_dim: int | None = None, mult: int = 2, groups: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        if in_ch % groups:
            raise ValueError(f"ConvNextBlock: {in_ch} channels are not divisible by groups={groups}.")
        self.dwconv = nn.Conv2d(in_ch, in_ch, 7, padding=3, groups=in_ch)
        self.time_proj = nn.Sequential(nn.GELU(), nn.Linear(time_dim, in_ch)) if time_dim else None
        self.norm = nn.GroupNorm(groups, in_ch)
        self.mlp = nn.Sequential(
            nn.Conv2d(in_ch, mult * out_ch, 1), nn.GELU(), nn.Dropout(dropout), nn.Conv2d(mult * out_ch, out_ch, 1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.dwconv(x)  # (B, in_ch, H, W)
        if self.time_proj is not None:
            if temb is None:
                raise ValueError("this ConvNextBlock was built with time_dim, so forward needs temb (B, time_dim).")
            h = h + self.time_proj(temb)[:, :, None, None]  # (B, in_ch, 1, 1) broadcast over H, W
        return self.mlp(self.norm(h)) + self.skip(x)  # (B, out_ch, H, W)


def _check_feature_map(name: str, x: torch.Tensor, channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} expects a feature map (B, {channels}, H, W), got shape {tuple(x.shape)}.")


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, via `F.scaled_dot_product_attention`.

    Cost is quadratic in H*W, so the UNet uses it only at low resolution (8x8 = 64 positions).

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    def __init__(self, channels: int, heads: int = 4, head_dim: int = 32):
        super().__init__()
        self.channels, self.heads, self.head_dim = channels, heads, head_dim
        inner = heads * head_dim
        self.to_qkv = nn.Conv2d(channels, 3 * inner, 1, bias=False)
        self.to_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_feature_map("Attention", x, self.channels)
        b, _, h, w = x.shape
        qkv = self.to_qkv(x).reshape(b, 3, self.heads, self.head_dim, h * w)  # (B, 3, heads, d, HW)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # 3 x (B, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, d); softmax(q k^T / sqrt(d)) v
        out = out.transpose(-1, -2).reshape(b, self.heads * self.head_dim, h, w)  # (B, heads*d, H, W)
        return self.to_out(out)  # (B, C, H, W)


class LinearAttention(nn.Module):
    """Linear attention: softmax of q over its d features, of k over the positions, context = k v^T.

    `context = k v^T` is `(d, d)` per head, so the cost is linear in H*W; cheap enough for 16x16 maps.

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    def __init__(self, channels: int, heads: int = 4, head_dim: int = 32):
        super().__init__()
        self.channels, self.heads, self.head_dim = channels, heads, head_dim
        self.scale = head_dim ** -0.5
        inner = heads * head_dim
        self.to_qkv = nn.Conv2d(channels, 3 * inner, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.GroupNorm(1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_feature_map("LinearAttention", x, self.channels)
        b, _, h, w = x.shape
        qkv = self.to_qkv(x).reshape(b, 3, self.heads, self.head_dim, h * w)  # (B, 3, heads, d, HW)
        q, k, v = qkv.unbind(dim=1)  # 3 x (B, heads, d, HW)
        q = q.softmax(dim=-2) * self.scale  # over the d features of each query
        k = k.softmax(dim=-1)  # over the HW positions
        context = torch.einsum("bhdn,bhen->bhde", k, v)  # (B, heads, d, d)
        out = torch.einsum("bhde,bhdn->bhen", context, q)  # (B, heads, d, HW)
        out = out.reshape(b, self.heads * self.head_dim, h, w)  # (B, heads*d, H, W)
        return self.to_out(out)  # (B, C, H, W)


class CrossAttention(nn.Module):
    """Queries from the image features, keys and values from text token states `cond` (LDM's conditioning).

    `x` `(B, C, H, W)` -> `(B, HW, C)` queries; `cond` `(B, L, cond_dim)` keys/values; `mask` `(B, L)`, True for a
    real token, False for padding, which then gets zero attention weight (so its states cannot matter).
    With `return_weights=True` the forward returns `(out, weights)`, `weights` `(B, heads, HW, L)`, for
    visualising which words each pixel looks at.

    Derived in notebooks/05_text_conditioning_cfg.ipynb.
    """

    def __init__(self, channels: int, cond_dim: int, heads: int = 4, head_dim: int = 32):
        super().__init__()
        self.channels, self.cond_dim, self.heads, self.head_dim = channels, cond_dim, heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(channels, inner, bias=False)
        self.to_kv = nn.Linear(cond_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None,
                return_weights: bool = False):
        _check_feature_map("CrossAttention", x, self.channels)
        b, c, h, w = x.shape
        if cond.ndim != 3 or cond.shape[0] != b or cond.shape[2] != self.cond_dim:
            raise ValueError(f"CrossAttention expects cond (B={b}, L, cond_dim={self.cond_dim}) token states, "
                             f"got shape {tuple(cond.shape)}.")
        length = cond.shape[1]
        if mask is not None:
            mask = check_token_mask(mask, b, length)[:, None, None, :]  # (B, 1, 1, L), broadcast over heads, HW
        q = self.to_q(x.flatten(2).transpose(1, 2))  # (B, HW, heads*d)
        q = q.reshape(b, h * w, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, HW, d)
        kv = self.to_kv(cond).reshape(b, length, 2, self.heads, self.head_dim)  # (B, L, 2, heads, d)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, heads, L, d)
        if return_weights:
            logits = q @ k.transpose(-1, -2) * self.head_dim ** -0.5  # (B, heads, HW, L); Vaswani eq. (1)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            weights = logits.softmax(dim=-1)  # (B, heads, HW, L)
            out = weights @ v  # (B, heads, HW, d)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, HW, d)
        out = out.transpose(1, 2).reshape(b, h * w, self.heads * self.head_dim)  # (B, HW, heads*d)
        out = self.to_out(out).transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)
        return (out, weights) if return_weights else out


def check_token_mask(mask: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """Validate a token mask `(B, L)` (bool, or 0/1 integers as tokenizers return) and return it as bool."""
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (batch, length):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"the token mask must be a tensor of shape (B={batch}, L={length}), got {shape}.")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
            raise TypeError(f"the token mask must be bool (True = real token) or 0/1 integers, got {mask.dtype}.")
        mask = mask.bool()
    if not mask.any(dim=1).all():
        raise ValueError("every row of the token mask needs at least one True (real) token; an all-padding row "
                         "has nothing to attend to. Encode the empty prompt \"\" for the unconditional branch.")
    return mask


def masked_mean(states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of token states over the real tokens: states `(B, L, D)`, mask `(B, L)` -> `(B, D)`.

    Sentence-BERT's mean pooling (all-MiniLM-L6-v2's sentence embedding) and the UNet's pooled text vector
    (`UNetConfig.pooled_text`). `mask=None`: every token is real. Derived in notebooks/05_text_conditioning_cfg.ipynb.
    """
    if mask is None:
        return states.mean(1)
    m = check_token_mask(mask, states.shape[0], states.shape[1])[..., None].to(states.dtype)   # (B, L, 1)
    return (states * m).sum(1) / m.sum(1)                                                       # (B, D)


class PreNorm(nn.Module):
    """`fn(GroupNorm(1, C)(x), *args)`: a LayerNorm over (C, H, W) before the wrapped block.

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    def __init__(self, channels: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        self.fn = fn

    def forward(self, x: torch.Tensor, *args, **kwargs):
        return self.fn(self.norm(x), *args, **kwargs)


class Residual(nn.Module):
    """`fn(x, *args) + x`.

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.fn(x, *args, **kwargs) + x


class Downsample(nn.Module):
    """Halve H and W without losing pixels: pixel-unshuffle (2x2 -> 4x channels), then a 1x1 conv.

    `(B, in_ch, H, W)` -> `(B, 4 * in_ch, H/2, W/2)` -> `(B, out_ch, H/2, W/2)`. Cheaper than a stride-2 3x3
    conv (4 vs 9 multiply-adds per input-output channel pair, all at the lower resolution).

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.in_ch = in_ch
        self.proj = nn.Conv2d(4 * in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_feature_map("Downsample", x, self.in_ch)
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            raise ValueError(f"Downsample needs even H and W, got {tuple(x.shape[-2:])}.")
        return self.proj(F.pixel_unshuffle(x, 2))  # (B, 4*in_ch, H/2, W/2) -> (B, out_ch, H/2, W/2)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then a 3x3 conv. `(B, in_ch, H, W)` -> `(B, out_ch, 2H, 2W)`.

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.in_ch = in_ch
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_feature_map("Upsample", x, self.in_ch)
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # (B, out_ch, 2H, 2W)
