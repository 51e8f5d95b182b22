# %% [colab]  (the Colab setup cell, written once in tools/colab_cell.py)
# %% [markdown]
# # 00 · Setup and data: Fashion-MNIST, the way every chapter will see it
#
# **What you'll build in this course.** Starting from an empty notebook, you will write a denoising diffusion
# model (DDPM), teach it to draw the garment you ask for, compress images with your own variational
# autoencoder, move diffusion into that autoencoder's latent space, and finally steer it with text prompts —
# a miniature Stable Diffusion that you trained yourself, on a laptop CPU, on Fashion-MNIST.
#
# **What you'll do in this notebook.**
# 1. Check your environment (CPU or GPU, quick mode).
# 2. Load Fashion-MNIST through `minildm.data` — offline, verified by checksum.
# 3. Look at it: a labelled grid per class, per-class counts, the mean garment of each class.
# 4. Apply the preprocessing every later chapter uses (pad 28 → 32, scale to $[-1, 1]$, flips) and its inverse.
#
# **Prerequisites.** Python and a little PyTorch (tensors, `nn.Module`). No diffusion knowledge yet.

# %% [markdown]
# ## The course in one picture
#
# | notebook | you build | key idea |
# |---|---|---|
# | 00 | the data pipeline | verified data, one preprocessing |
# | 01 | DDPM from scratch, DDIM | learn to remove Gaussian noise, step by step |
# | 02 | class-conditional model + classifier-free guidance | the label is just another input; guidance trades diversity for fidelity |
# | 03 | a VAE and its KL term | compress 32×32 pixels into a 4×8×8 latent |
# | 04 | latent diffusion | diffuse in the latent space: same ideas, far cheaper |
# | 05 | text-to-image | a frozen text encoder + cross-attention + CFG |

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import minildm
from minildm import data, runtime, viz

fig, ax = plt.subplots(figsize=(11, 1.9))
steps = ["pixels\n(00)", "DDPM\n(01)", "+ labels, CFG\n(02)", "VAE\n(03)", "latent diffusion\n(04)", "+ text\n(05)"]
for i, label in enumerate(steps):
    ax.text(i * 1.9, 0, label, ha="center", va="center", fontsize=10,
            bbox=dict(boxstyle="round,pad=0.5", fc=plt.cm.Blues(0.2 + 0.12 * i), ec="gray"))
    if i:
        ax.annotate("", xy=(i * 1.9 - 0.78, 0), xytext=((i - 1) * 1.9 + 0.78, 0), arrowprops=dict(arrowstyle="->"))
ax.set_xlim(-0.9, 10.4); ax.set_ylim(-0.6, 0.6); ax.set_axis_off()
ax.set_title("from pixels to a text-to-image latent diffusion model")
plt.show()

# %% [markdown]
# ## 1. Your environment
#
# Everything in this course runs on a CPU. A GPU (local or Colab) makes training minutes instead of hours,
# and nothing in `minildm` hard-codes a device: `runtime.default_device()` picks CUDA, then Apple's MPS,
# then the CPU.
#
# **Quick mode.** Setting the environment variable `MINILDM_QUICK=1` shrinks every training and sampling
# budget so that all notebooks run in minutes (the test suite does this). Notebooks never read the variable
# themselves: they ask `runtime.is_quick()` or `runtime.budget(full=..., quick=...)`.
#
# **Where things come from.** The dataset is read from the first of: `$MINILDM_DATA`, `data/fashion-mnist/`
# in the repository, `/usr/share/datasets/fashion-mnist/` (the Debian/Ubuntu package
# `dataset-fashion-mnist`), and — only when none exists and you are online, e.g. on Colab — the Hugging
# Face Hub. Trained reference checkpoints ship in `data/checkpoints/`, each with a model card.

# %%
print("torch", torch.__version__, "| device:", runtime.default_device(), "| quick mode:", runtime.is_quick())
print("dataset folder:", data.find_data_dir())

# %% [markdown]
# ## 2. Loading Fashion-MNIST
#
# Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) has 70,000 grayscale 28×28 images of clothing in 10 classes:
# 60,000 for training, 10,000 for testing. It was made as a drop-in replacement for MNIST digits that is
# harder to classify.
#
# The four files are in the IDX format: a big-endian magic number (`0x00000803` for images,
# `0x00000801` for labels), the dimensions, then raw bytes. `minildm.data` checks the magic number, the
# shape and the md5 of every decompressed file, so a truncated download is caught at once instead of
# quietly training on garbage. `load_fashion_mnist()` returns the same `datasets.DatasetDict` as
# `load_dataset("fashion_mnist")` on the Hub, so tutorials written for the Hub work unchanged.

# %%
# NBVAL_CHECK_OUTPUT
dsd = data.load_fashion_mnist()
print(dsd)
print(dsd["train"].features["label"].names)

# %%
item = dsd["train"][0]
print(type(item["image"]).__name__, item["image"].mode, item["image"].size, "label:", item["label"],
      data.CLASS_NAMES[item["label"]])
item["image"].resize((112, 112))

# %% [markdown]
# ## 3. Looking at the data
#
# A few examples of each class. Notice the classes that look alike — *T-shirt/top*, *Pullover*, *Coat* and
# *Shirt* — a classifier (and later, a conditional generator) will confuse exactly these.

# %%
test = data.load_tensors("test")  # the fast path: the whole split as tensors, preprocessed once
x0_test, labels_test = test.tensors
fig = viz.class_grid(x0_test[:500], labels_test[:500], per_class=10, title="Fashion-MNIST test images by class")
plt.show()

# %% [markdown]
# The classes are perfectly balanced: 6,000 training and 1,000 test images each.

# %%
# NBVAL_CHECK_OUTPUT
train_images, train_labels = data.load_arrays("train")
test_images, test_labels = data.load_arrays("test")
train_counts = np.bincount(train_labels, minlength=10)
test_counts = np.bincount(test_labels, minlength=10)
print(f"{'class':<13}{'train':>7}{'test':>7}")
for c, name in enumerate(data.CLASS_NAMES):
    print(f"{name:<13}{train_counts[c]:>7}{test_counts[c]:>7}")
print(f"{'total':<13}{train_counts.sum():>7}{test_counts.sum():>7}")

# %%
fig, ax = plt.subplots(figsize=(8, 2.8))
ax.bar(range(10), train_counts, color="tab:blue")
ax.set_xticks(range(10), data.CLASS_NAMES, rotation=30, ha="right")
ax.set_ylabel("training images"); ax.set_title("images per class (train)")
plt.show()

# %% [markdown]
# ### The mean garment of each class
#
# Averaging all 6,000 images of a class shows its typical shape — and how much the class varies: sharp
# means (trousers, sneakers) come from consistent shapes, blurry ones (bags, sandals) from varied ones.
# A generative model has to learn the whole distribution, not just this mean.

# %%
means = torch.stack([torch.from_numpy(train_images[train_labels == c]).float().mean(0) for c in range(10)])  # (10, 28, 28)
fig, axes = plt.subplots(1, 10, figsize=(12, 1.8))
for c, ax in enumerate(axes):
    ax.imshow(means[c], cmap="gray"); ax.set_title(data.CLASS_NAMES[c], fontsize=8); ax.set_axis_off()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
pixels = train_images.astype(np.float64) / 255
print(f"pixel mean {pixels.mean():.4f}, std {pixels.std():.4f}, "
      f"fraction of exactly-black pixels {np.mean(train_images == 0):.3f}")

# %% [markdown]
# ## 4. Preprocessing, once for the whole course
#
# Diffusion models add Gaussian noise $\epsilon \sim \mathcal{N}(0, I)$ to images, so the images should live
# on a comparable, zero-centred scale. Every chapter uses the same three steps (`minildm.data.preprocess`):
#
# 1. **Scale** $x \in \{0,\dots,255\}$ to $x_0 = x / 127.5 - 1 \in [-1, 1]$.
# 2. **Pad** 28 × 28 → 32 × 32 with the background value $-1$: a UNet halves the resolution several times,
#    and $32 = 2^5$ halves cleanly (28 → 14 → 7 stops early).
# 3. **Flip** left-right at random during training (a T-shirt mirrored is still a T-shirt), with
#    `data.random_hflip`.
#
# For display, `data.postprocess` maps $[-1, 1]$ back to $[0, 1]$ and can crop the padding; `data.to_uint8`
# is the exact inverse of `preprocess`.

# %%
# NBVAL_CHECK_OUTPUT
raw = torch.from_numpy(train_images[:8])                 # (8, 28, 28) uint8
x0 = data.preprocess(raw)                                 # (8, 1, 32, 32) float in [-1, 1]
print("raw:", tuple(raw.shape), raw.dtype, int(raw.min()), int(raw.max()))
print("x0: ", tuple(x0.shape), x0.dtype, float(x0.min()), float(x0.max()))
print("inverse is exact:", torch.equal(data.to_uint8(x0, unpad=True)[:, 0], raw))

# %%
flipped = data.random_hflip(x0, generator=torch.Generator().manual_seed(0))
fig, axes = plt.subplots(3, 1, figsize=(8, 3.6))
viz.show_grid(data.preprocess(raw, pad=False), nrow=8, ax=axes[0], title="raw 28×28")
viz.show_grid(x0, nrow=8, ax=axes[1], title="preprocessed 32×32 (padded)")
viz.show_grid(flipped, nrow=8, ax=axes[2], title="random horizontal flips")
plt.tight_layout(); plt.show()

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
axes[0].hist(raw.flatten().numpy(), bins=64, color="gray"); axes[0].set_title("raw pixel values")
axes[1].hist(x0.flatten().numpy(), bins=64, color="tab:blue"); axes[1].set_title("after preprocess")
plt.show()

# %% [markdown]
# ### Why a tensor fast path?
#
# The Hub-style `DatasetDict` is convenient, but decoding a PIL image and running a transform per item is
# slow on a small CPU. `data.load_tensors(split)` decodes and preprocesses a split once and returns a
# `TensorDataset`; after that, a training batch is a slice of a tensor. Measure it yourself:

# %%
n = runtime.budget(full=10_000, quick=1_000)
loader_hf = torch.utils.data.DataLoader(dsd["train"].select(range(n)).with_transform(
    lambda b: {"x0": data.preprocess(np.stack([np.asarray(im) for im in b["image"]])), "label": b["label"]}),
    batch_size=128)
loader_fast = torch.utils.data.DataLoader(torch.utils.data.Subset(data.load_tensors("train"), range(n)), batch_size=128)
for name, loader in [("datasets + per-item transform", loader_hf), ("TensorDataset fast path", loader_fast)]:
    start = time.perf_counter()
    for _ in loader:
        pass
    elapsed = time.perf_counter() - start
    print(f"{name:<32} {n / elapsed:>10,.0f} images/s")

# %% [markdown]
# ## Summary table
#
# | quantity | value |
# |---|---|
# | training / test images | 60,000 / 10,000 |
# | classes | 10, balanced (6,000 / 1,000 each) |
# | image size | 28×28 grayscale, padded to 32×32 |
# | value range after `preprocess` | $[-1, 1]$, background $-1$ |
# | files verified | 4 IDX files, md5 of the decompressed bytes |
#
# ## Exercises
#
# Each of the first three has an automatic check (`minildm.exercises`): it calls your function on fixed inputs
# and edge cases, compares with minildm's reference, and on a mismatch names the case, shows expected vs got and,
# for a typical mistake, says which. Until you write a function its check says "not attempted" and the notebook
# runs on; solutions: `notebooks/solutions/00_solutions.ipynb`.
#
# 1. **`preprocess(images)`**: uint8 `(N, 28, 28)` → float `(N, 1, 32, 32)` in $[-1, 1]$, padded with the background.
# 2. **`to_uint8(x)`**: its inverse for generated images, `(N, 1, 32, 32)` → uint8 `(N, 28, 28)` (clamp, round, crop).
# 3. **`class_means(x, labels)`**: the mean garment of each class, `(10, H, W)`, as in section 3.

# %%
from minildm.exercises import check_class_means, check_preprocess, check_to_uint8


def preprocess(images):
    raise NotImplementedError("your turn: scale, add the channel, pad (solution: notebooks/solutions/)")


def to_uint8(x):
    raise NotImplementedError("your turn: clamp, map to [0, 255], round, crop (solution: notebooks/solutions/)")


def class_means(x, labels):
    raise NotImplementedError("your turn: one mean image per class (solution: notebooks/solutions/)")


check_preprocess(preprocess)
check_to_uint8(to_uint8)
check_class_means(class_means)

# %% [markdown]
# 4. Which pair of classes have the most similar mean images? Compute the pixel-wise distance between all
#    pairs of `means` and compare with the confusions you expect.
# 5. Corrupt a copy of a data file (e.g. cut it short) in a temporary folder, point `MINILDM_DATA` at the
#    folder and read the error message `data.load_arrays` gives.
#
# ## Summary
# - Fashion-MNIST: 70,000 small grayscale garments in 10 balanced classes; some classes look alike.
# - `minildm.data` reads it offline, verified by checksum, in the Hub's schema; `load_tensors` is the fast path.
# - Every chapter preprocesses the same way: $[-1, 1]$, padded to 32×32, random flips for training.
#
# **Further reading.** Xiao, Rasul & Vollgraf (2017), *Fashion-MNIST: a Novel Image Dataset for
# Benchmarking Machine Learning Algorithms*. Next: **01 · DDPM from scratch**.
