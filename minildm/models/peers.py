"""The peers minildm is measured against: diffusers' `UNet2DModel`, behind minildm's model interface.

`DiffusersUNet` wraps a `diffusers.UNet2DModel` so that it takes `(x_t, t, cond)` and returns a tensor, like
`minildm.models.unet.UNet`; the same training loop, samplers, guided pipeline and benchmark then drive both,
and any difference in a comparison comes from the networks alone. Its `config` is a frozen dataclass
(`PeerConfig`), so checkpoints save and load through `minildm.checkpoints` as for every other model.

References:
    diffusers' UNet2DModel (models/unets/unet_2d.py): `forward(sample, timestep, class_labels)`.
    The chapter-02 recipe: `UNet2DModel(num_class_embeds=10, block_out_channels=(32, 64, 128, 256))`.

Used by notebooks/02_class_conditional.ipynb (the standard recipe) and `minildm bench`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

_D, _AD, _U, _AU = "DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D"
LAYOUTS = {
    # minildm's default layout: widths 16-32-64-128 at 32-16-8-4, self-attention at 8x8 and 4x4
    "same-layout": dict(block_out_channels=(16, 32, 64, 128), down_block_types=(_D, _D, _AD, _AD),
                        up_block_types=(_AU, _AU, _U, _U), layers_per_block=1, norm_num_groups=8),
    # the classic small DDPM UNet: widths 32-64-128 at 32-16-8, self-attention at 8x8
    "classic": dict(block_out_channels=(32, 64, 128), down_block_types=(_D, _D, _AD), up_block_types=(_AU, _U, _U),
                    layers_per_block=1, norm_num_groups=8),
    # 4 levels 32-64-128-128, self-attention at 8x8 (~4.3M parameters)
    "large": dict(block_out_channels=(32, 64, 128, 128), down_block_types=(_D, _D, _AD, _D),
                  up_block_types=(_U, _AU, _U, _U), layers_per_block=1, norm_num_groups=8),
    # the standard recipe of the Hugging Face diffusion course for Fashion-MNIST (chapter 02)
    "hf-course": dict(block_out_channels=(32, 64, 128, 256), down_block_types=(_D, _D, _AD, _AD),
                      up_block_types=(_AU, _AU, _U, _U), layers_per_block=2, norm_num_groups=32),
}


@dataclass(frozen=True)
class PeerConfig:
    layout: str = "same-layout"
    in_channels: int = 1
    out_channels: int = 1
    image_size: int = 32
    num_classes: int | None = None   # None: unconditional; else num_class_embeds = num_classes + 1 (null class)
    cond_dim: int | None = None      # text conditioning is not offered by this peer

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}: choose from {sorted(LAYOUTS)}.")


class DiffusersUNet(nn.Module):
    """`diffusers.UNet2DModel` with minildm's interface: `forward(x_t, t, cond=None) -> Tensor`.

    For class models `cond` holds labels in `[0, num_classes]`, index `num_classes` being the null class of
    classifier-free guidance (the embedding table has `num_classes + 1` rows, as in minildm's UNet).
    """

    config_class = PeerConfig

    def __init__(self, config: PeerConfig = PeerConfig()):
        super().__init__()
        from diffusers import UNet2DModel
        self.config = config
        num_class_embeds = None if config.num_classes is None else config.num_classes + 1
        self.net = UNet2DModel(sample_size=config.image_size, in_channels=config.in_channels,
                               out_channels=config.out_channels, attention_head_dim=32,
                               num_class_embeds=num_class_embeds, **LAYOUTS[config.layout])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x_t: torch.Tensor, t, cond: torch.Tensor | None = None, cond_mask=None) -> torch.Tensor:
        if (cond is None) != (self.config.num_classes is None):
            want = "class labels (B,)" if self.config.num_classes is not None else "no cond (unconditional)"
            raise ValueError(f"this model takes {want}; got cond={None if cond is None else tuple(cond.shape)}.")
        if cond is not None and (cond.is_floating_point() or cond.min() < 0 or cond.max() > self.config.num_classes):
            raise ValueError(f"class labels must be integers in [0, {self.config.num_classes}] "
                             f"({self.config.num_classes} = null class).")
        t = torch.as_tensor(t, device=x_t.device)
        t = t.reshape(1).expand(x_t.shape[0]) if t.ndim == 0 else t  # (B,)
        return self.net(x_t, t, class_labels=cond).sample  # (B, C, H, W)
