"""Tiny UNets and generated data shared by the training and studies tests (8x8 images, a few hundred weights)."""
import torch

from minildm.models.unet import UNet, UNetConfig

TINY = dict(base_channels=8, channel_mults=(1, 2), attention=("none", "full"), heads=1, head_dim=8, groups=4,
            time_dim=16, cross_attention=(False, False))


def tiny_unet(**kw):
    torch.manual_seed(0)
    return UNet(UNetConfig(image_size=8, **{**TINY, **kw}))


def tiny_data(n=48, with_labels=False):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1                    # (n, 1, 8, 8) in [-1, 1]
    labels = torch.randint(0, 10, (n,), generator=g)                    # (n,)
    return torch.utils.data.TensorDataset(x0, labels) if with_labels else torch.utils.data.TensorDataset(x0)
