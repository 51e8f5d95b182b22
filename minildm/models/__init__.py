"""Models: UNet building blocks (`layers`), the denoising UNet (`unet`), the reference classifier (`classifier`).

Derived in notebooks/01_ddpm_from_scratch.ipynb.
"""
from minildm.models.layers import (Attention, ConvNextBlock, CrossAttention, Downsample, LinearAttention, PreNorm,
                                   Residual, ResnetBlock, SinusoidalTimeEmbedding, Upsample)
from minildm.models.unet import UNet, UNetConfig

__all__ = [
    "Attention", "ConvNextBlock", "CrossAttention", "Downsample", "LinearAttention", "PreNorm", "Residual",
    "ResnetBlock", "SinusoidalTimeEmbedding", "Upsample", "UNet", "UNetConfig",
]
