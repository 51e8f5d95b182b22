"""Pictures for every notebook: image grids, per-class grids, loss curves, and reverse-process GIFs.

Grids are built with `torchvision.utils.make_grid` (not rewritten here). Every function takes images in
the course convention, float `(N, C, H, W)` in [-1, 1], and returns a matplotlib `Figure` or a file path,
so notebooks show them and tests can check them.

References:
    torchvision.utils.make_grid; matplotlib; Pillow's GIF writer.

Introduced in notebooks/00_setup_and_data.ipynb.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from minildm.data import CLASS_NAMES, postprocess


def _check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of images, got {type(images).__name__}.")
    if images.dim() == 3:
        images = images.unsqueeze(1)  # (N, 1, H, W)
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W) or (N, H, W), got {tuple(images.shape)}.")
    if images.dtype == torch.uint8:
        raise TypeError("expected float images in [-1, 1], got uint8: convert with minildm.data.preprocess.")
    return images


def grid_array(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """A `(H, W)` or `(H, W, 3)` float array in [0, 1] of the images tiled `nrow` per row."""
    images = _check_images(images)
    grid = make_grid(postprocess(images.cpu()), nrow=nrow, padding=padding, pad_value=1.0)  # (3, H', W')
    return grid[0].numpy() if images.shape[1] == 1 else grid.permute(1, 2, 0).numpy()  # (H', W'[, 3])


def show_grid(images: torch.Tensor, nrow: int = 8, title: str | None = None, scale: float = 0.6, ax=None):
    """Show a batch of images as one grid; returns the Figure."""
    arr = grid_array(images, nrow=nrow)
    rows = int(np.ceil(len(images) / nrow))
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(2.0, scale * min(nrow, len(images))), max(2.0, scale * rows)))
    else:
        fig = ax.figure
    ax.imshow(arr, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def class_grid(images: torch.Tensor, labels: torch.Tensor, per_class: int = 8,
               class_names: Sequence[str] = CLASS_NAMES, title: str | None = None):
    """One row per class with its name: the first `per_class` images of each label. Returns the Figure."""
    images = _check_images(images)
    labels = torch.as_tensor(labels)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels: they must match one to one.")
    n_cls = len(class_names)
    fig, axes = plt.subplots(n_cls, 1, figsize=(0.55 * per_class + 1.6, 0.62 * n_cls))
    for c, ax in enumerate(np.atleast_1d(axes)):
        picked = images[labels == c][:per_class]
        ax.set_axis_off()
        if len(picked):
            ax.imshow(grid_array(picked, nrow=per_class, padding=1), cmap="gray", vmin=0, vmax=1)
        ax.text(-0.01, 0.5, f"{c} {class_names[c]}", transform=ax.transAxes, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_loss(losses: Sequence[float], smooth: int = 50, title: str = "training loss", ax=None, label=None):
    """Raw loss per step (faint) and its moving average (bold); returns the Figure."""
    losses = np.asarray(losses, dtype=float)
    if losses.ndim != 1 or len(losses) == 0:
        raise ValueError("plot_loss needs a non-empty 1-D sequence of loss values.")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
    else:
        fig = ax.figure
    steps = np.arange(1, len(losses) + 1)
    line = ax.plot(steps, losses, alpha=0.25)[0]
    k = max(1, min(smooth, len(losses) // 5 or 1))
    if k > 1:
        avg = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], avg, color=line.get_color(), label=label or f"moving average ({k} steps)")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def save_gif(frames: Sequence[torch.Tensor], path: str | Path, nrow: int = 8, duration_ms: int = 60,
             hold_last_ms: int = 1500, upscale: int = 2) -> Path:
    """Write a GIF of the reverse process: each frame is a batch `(N, C, H, W)` in [-1, 1] shown as a grid.

    The last frame is held for `hold_last_ms`. Returns the path. Pair it with a pipeline's
    `return_intermediates=True` output.
    """
    if len(frames) == 0:
        raise ValueError("save_gif needs at least one frame.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pics = []
    for frame in frames:
        arr = (grid_array(frame, nrow=nrow) * 255).round().astype(np.uint8)
        img = Image.fromarray(arr)
        pics.append(img.resize((img.width * upscale, img.height * upscale), Image.NEAREST))
    durations = [duration_ms] * (len(pics) - 1) + [hold_last_ms]
    tmp = path.with_suffix(".tmp.gif")
    pics[0].save(tmp, save_all=True, append_images=pics[1:], duration=durations, loop=0)
    tmp.replace(path)
    return path


def show_gif_frames(frames: Sequence[torch.Tensor], n_show: int = 8, index: int = 0, labels=None):
    """A strip of `n_show` evenly spaced frames of one sample (a static view of the GIF). Returns the Figure."""
    pick = np.linspace(0, len(frames) - 1, min(n_show, len(frames))).round().astype(int)
    fig, axes = plt.subplots(1, len(pick), figsize=(1.3 * len(pick), 1.6))
    for ax, i in zip(np.atleast_1d(axes), pick):
        ax.imshow(postprocess(frames[i][index, 0].cpu()), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(labels[i] if labels is not None else f"frame {i}", fontsize=8)
    fig.tight_layout()
    return fig
