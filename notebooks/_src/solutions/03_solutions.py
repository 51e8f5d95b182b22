# %% [colab]  (the Colab setup cell, written once in tools/colab_cell.py)
# %% [markdown]
# # 03 · Solutions to the exercises
#
# The exercises of [03_vae_and_kl.ipynb](../03_vae_and_kl.ipynb), solved, each followed by its check.

# %%
import torch

from minildm.exercises import check_kl, check_latent_scale, check_reparameterise

# %% [markdown]
# ## Reparameterise
#
# $z = \mu + \sigma \odot \epsilon$ with $\sigma = \exp(\tfrac12 \log\sigma^2)$: the encoder predicts the log-variance.

# %%
# NBVAL_CHECK_OUTPUT
def reparameterise(mu, logvar, eps):
    return mu + torch.exp(0.5 * logvar) * eps


check_reparameterise(reparameterise)

# %% [markdown]
# ## The KL term
#
# $-\tfrac12 \sum (1 + \log\sigma^2 - \mu^2 - \sigma^2)$, one value per sample: sum over every dimension but the batch.

# %%
# NBVAL_CHECK_OUTPUT
def kl(mu, logvar):
    dims = tuple(range(1, mu.ndim))
    return -0.5 * torch.sum(1 + logvar - mu**2 - torch.exp(logvar), dim=dims)


check_kl(kl)

# %% [markdown]
# ## The latent scale
#
# One number over all elements, as Rombach et al. (appendix G) and Stable Diffusion's 0.18215 for its VAE.

# %%
# NBVAL_CHECK_OUTPUT
def scale_of(z):
    return 1 / z.std()


check_latent_scale(scale_of)
