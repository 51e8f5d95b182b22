# %% [colab]  (the Colab setup cell, written once in tools/colab_cell.py)
# %% [markdown]
# # 00 · Solutions to the exercises
#
# The exercises of [00_setup_and_data.ipynb](../00_setup_and_data.ipynb) with automatic checks, solved, each
# followed by its check.

# %%
import torch
import torch.nn.functional as F

from minildm.exercises import check_class_means, check_preprocess, check_to_uint8

# %% [markdown]
# ## Preprocess
#
# Scale $[0, 255] \to [-1, 1]$ with $x / 127.5 - 1$ (255 maps exactly to 1), add the channel dimension, pad two
# pixels on each side with the background value $-1$ — padding with 0 would draw a grey frame.

# %%
# NBVAL_CHECK_OUTPUT
def preprocess(images):
    x = images.float()[:, None] / 127.5 - 1                 # (N, 1, 28, 28) in [-1, 1]
    return F.pad(x, (2, 2, 2, 2), value=-1.0)               # (N, 1, 32, 32)


check_preprocess(preprocess)

# %% [markdown]
# ## Back to pixels
#
# Generated images overshoot $[-1, 1]$: clamp first (uint8 would wrap around), then round (truncation biases every
# pixel down by half a level), then crop the padding and drop the channel.

# %%
# NBVAL_CHECK_OUTPUT
def to_uint8(x):
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)   # (N, 1, 32, 32)
    return pixels[:, 0, 2:-2, 2:-2]                                   # (N, 28, 28)


check_to_uint8(to_uint8)

# %% [markdown]
# ## The mean garment of each class
#
# A boolean mask per class selects its images; the mean over them (dimension 0) keeps the image.

# %%
# NBVAL_CHECK_OUTPUT
def class_means(x, labels):
    return torch.stack([x[labels == c, 0].mean(0) for c in range(10)])   # (10, H, W)


check_class_means(class_means)
