"""Chapter 05's training pieces: captions for every training image, a caption table, a UNet that reads caption ids.

Training reuses `minildm.training.train_diffusion` unchanged: the dataset holds `(z0, caption_id)` pairs (each image
`variants` times, with different templates and words), condition dropout replaces an id by the id of the empty
prompt "" (index 0 of the table), and `TextConditionedUNet` turns ids into token states for the UNet's
cross-attention. With the frozen encoder the table is encoded once (`CaptionTable(..., frozen=True)`); with the tiny
encoder it is encoded on every step, so the encoder trains with the UNet.

References: Rombach et al. (2022), sec. 3.3; Ho & Salimans (2022) (condition dropout).
Derived in notebooks/05_text_conditioning_cfg.ipynb.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from minildm.captions import AttributeThresholds, captions_for


def caption_dataset(z0: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, thresholds: AttributeThresholds,
                    variants: int = 4, seed: int = 0, split: str = "train"):
    """`(TensorDataset(z0 repeated `variants` times, caption ids), captions)`; `captions[0]` is the empty prompt.

    `images` `(N, 1, 32, 32)` are the pixels the attributes are measured on, `z0` `(N, C, h, w)` their latents."""
    if not len(z0) == len(labels) == len(images):
        raise ValueError(f"z0, labels and images must have one entry per image: {len(z0)}, {len(labels)}, {len(images)}.")
    sides = thresholds.sides(images, labels)
    g = torch.Generator().manual_seed(seed)
    texts = []
    for _ in range(variants):
        texts += captions_for(labels, sides, torch.randint(0, 10_000, (len(labels),), generator=g), split)
    table = [""] + sorted(set(texts))
    index = {t: i for i, t in enumerate(table)}
    ids = torch.tensor([index[t] for t in texts])                                  # (variants * N,)
    return torch.utils.data.TensorDataset(z0.repeat(variants, 1, 1, 1), ids), table


class CaptionTable(nn.Module):
    """Caption ids -> `(states (B, L, D), mask (B, L))`. Frozen: every caption encoded once, kept in fp16 (not saved
    with the weights: it is rebuilt from the captions). Trainable: the encoder runs on each batch's captions."""

    def __init__(self, captions: list[str], encoder: nn.Module, frozen: bool, batch_size: int = 256,
                 progress: bool = True):
        super().__init__()
        self.captions, self.frozen = list(captions), frozen
        self.dim = encoder.dim
        if frozen:
            states, masks = [], []
            for i in tqdm(range(0, len(captions), batch_size), desc="encoding captions", disable=not progress):
                with torch.no_grad():
                    out = encoder(self.captions[i:i + batch_size])
                states.append(out.states.half().cpu()), masks.append(out.mask.cpu())
            self.register_buffer("states", torch.cat(states), persistent=False)   # (N, L, D) fp16
            self.register_buffer("mask", torch.cat(masks), persistent=False)      # (N, L) bool
            self.encoder = None
        else:
            self.encoder = encoder

    def forward(self, ids: torch.Tensor):
        if self.frozen:
            return self.states[ids].float(), self.mask[ids]
        out = self.encoder([self.captions[i] for i in ids.tolist()])
        return out.states, out.mask


class TextConditionedUNet(nn.Module):
    """A text UNet that takes caption ids as its condition, so `train_diffusion` can train it like a class model."""

    def __init__(self, unet: nn.Module, table: CaptionTable):
        super().__init__()
        if unet.config.cond_dim != table.dim:
            raise ValueError(f"the UNet's cross-attention expects {unet.config.cond_dim}-d token states, the captions "
                             f"are encoded to {table.dim}-d.")
        self.unet, self.table = unet, table

    @property
    def config(self):
        return self.unet.config

    def forward(self, x_t: torch.Tensor, t, ids: torch.Tensor) -> torch.Tensor:
        states, mask = self.table(ids)                                             # (B, L, D), (B, L)
        return self.unet(x_t, t, states, mask)


__all__ = ["caption_dataset", "CaptionTable", "TextConditionedUNet"]
