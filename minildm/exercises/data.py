"""Exercises of notebooks/00_setup_and_data.ipynb: preprocessing, its inverse, and the mean garment of each class.

References: Xiao, Rasul & Vollgraf (2017), Fashion-MNIST; minildm.data.preprocess / to_uint8.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from minildm.exercises._runner import F32, Case, _run


def _pixels(g: torch.Generator, n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)


def check_preprocess(fn: Callable) -> None:
    """Check `fn(images) -> x`: uint8 `(N, 28, 28)` in [0, 255] -> float32 `(N, 1, 32, 32)` in [-1, 1], padded with -1.

    As `minildm.data.preprocess`. Exercise of notebooks/00_setup_and_data.ipynb.
    """
    g, cases = torch.Generator().manual_seed(0), []
    for desc, images in [("a random batch of 5 images", _pixels(g, 5)),
                         ("all black (0): everything must be -1, padding included", torch.zeros(2, 28, 28, dtype=torch.uint8)),
                         ("all white (255): 1 inside, -1 in the 2-pixel border", torch.full((2, 28, 28), 255, dtype=torch.uint8)),
                         ("one image", _pixels(g, 1))]:
        x = images.double()[:, None]                                           # (N, 1, 28, 28)
        ref = lambda scaled, value=-1.0: F.pad(scaled, (2, 2, 2, 2), value=value)  # noqa: E731
        mistakes = {"padded with 0, which is mid-grey in [-1, 1]: pad with the background value -1.":
                        ref(x / 127.5 - 1, 0.0),
                    "the values are in [0, 1]: map [0, 255] to [-1, 1] with x / 127.5 - 1.": ref(x / 255, 0.0),
                    "the values are in [0, 1] (padding -1): map [0, 255] to [-1, 1] with x / 127.5 - 1.": ref(x / 255),
                    "divided by 128 (or 256): x / 127.5 - 1 maps 255 exactly to 1.": ref(x / 128 - 1)}
        cases.append(Case(desc, (images,), ref(x / 127.5 - 1), mistakes))
    _run("preprocess", fn, ("images",), cases,
         "x = images.float() / 127.5 - 1, a channel dimension (N, 1, 28, 28), then F.pad(x, (2, 2, 2, 2), value=-1).")


def check_to_uint8(fn: Callable) -> None:
    """Check `fn(x) -> images`: float `(N, 1, 32, 32)` in [-1, 1] -> uint8 `(N, 28, 28)`, the inverse of preprocess.

    Clamp to [-1, 1] (generated images overshoot), map to [0, 255], round, crop the 2-pixel border, drop the channel.
    Exercise of notebooks/00_setup_and_data.ipynb.
    """
    from minildm.data import preprocess
    g, cases = torch.Generator().manual_seed(1), []
    for desc, x in [("preprocessed real images (must give back the original pixels)", preprocess(_pixels(g, 4))),
                    ("generated images overshooting [-1, 1] (clamp first)", 1.3 * torch.randn(3, 1, 32, 32, generator=g)),
                    ("values just below the rounding boundary (round, do not truncate)",
                     (torch.full((2, 1, 32, 32), 100.49) / 127.5 - 1))]:
        d = x.double().clamp(-1, 1)
        crop = lambda y: y[:, 0, 2:-2, 2:-2]  # noqa: E731, (N, 28, 28)
        mistakes = {"not clamped: values beyond [-1, 1] wrap around in uint8; clamp(-1, 1) first.":
                        crop((x.double() + 1) * 127.5).round().to(torch.uint8).double(),
                    "truncated instead of rounded: use .round() before .to(torch.uint8).":
                        crop((d + 1) * 127.5).floor(),
                    "the 2-pixel border is still there: crop [..., 2:-2, 2:-2]": None}
        mistakes = {k: v for k, v in mistakes.items() if v is not None}
        cases.append(Case(desc, (x,), crop((d + 1) * 127.5).round(), mistakes))
    _run("to_uint8", fn, ("x",), cases,
         "((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0, 2:-2, 2:-2]")


def check_class_means(fn: Callable) -> None:
    """Check `fn(x, labels) -> means`: the mean image of each of the 10 classes, `(10, H, W)`.

    `x`: `(N, 1, H, W)` floats; `labels`: `(N,)` int64 in 0..9, every class present. Exercise of
    notebooks/00_setup_and_data.ipynb.
    """
    g, cases = torch.Generator().manual_seed(2), []
    for desc, n, side in [("30 images, 3 per class", 30, 32), ("unbalanced classes (2 to 9 images each)", 0, 8),
                          ("28x28 images", 20, 28)]:
        labels = torch.arange(10).repeat(n // 10) if n else torch.cat([torch.full((k,), c) for c, k in
                                                                       enumerate([2, 9, 3, 4, 5, 6, 7, 8, 2, 3])])
        labels = labels[torch.randperm(len(labels), generator=g)]
        x = torch.rand(len(labels), 1, side, side, generator=g, dtype=torch.float64).to(F32) * 2 - 1
        per_class = torch.stack([x.double()[labels == c, 0].mean(0) for c in range(10)])   # (10, H, W)
        counts = torch.bincount(labels, minlength=10).double()[:, None, None]
        mistakes = {"divided by the total number of images: average within each class (divide by its count).":
                        per_class * counts / len(labels),
                    "averaged over the pixels as well: keep the (H, W) image, reduce over the images only.":
                        per_class.mean((1, 2), keepdim=True).expand_as(per_class).clone()}
        cases.append(Case(desc, (x, labels), per_class, mistakes))
    _run("class_means", fn, ("x", "labels"), cases,
         "torch.stack([x[labels == c, 0].mean(0) for c in range(10)]): one (H, W) mean per class.")
