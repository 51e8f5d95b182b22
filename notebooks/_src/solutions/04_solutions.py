# %% [colab]  (the Colab setup cell, written once in tools/colab_cell.py)
# %% [markdown]
# # 04 · Solutions to the exercises
#
# The exercises of [04_latent_diffusion.ipynb](../04_latent_diffusion.ipynb) with automatic checks, solved, each followed by its check.

# %%
import torch

import torch.nn.functional as F

from minildm.exercises import check_encode_latents, check_latent_sample, check_ldm_loss

# %% [markdown]
# ## The LDM loss
#
# Chapter 01's loss on latents (LDM eq. 2): noise $z_0$ to $z_t$ with the closed form, predict the noise, mean squared
# error over every element. `alpha_bar[t]` is `(B,)`: reshape it to `(B, 1, 1, 1)` to scale `(B, 4, 8, 8)` latents.

# %%
# NBVAL_CHECK_OUTPUT
def ldm_loss(z0, eps, t, alpha_bar, eps_model):
    a = alpha_bar[t].reshape(-1, 1, 1, 1)                       # (B, 1, 1, 1)
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps                  # DDPM eq. (4) on latents
    return F.mse_loss(eps_model(z_t, t), eps)                   # LDM eq. (2)


check_ldm_loss(ldm_loss)

# %% [markdown]
# ## Encode
#
# The posterior mode (its mean $\mu$), times the latent scale $s$; the decoder later takes $z / s$.

# %%
# NBVAL_CHECK_OUTPUT
def encode(x, vae, latent_scale):
    return vae.encode(x).mode() * latent_scale


check_encode_latents(encode)

# %% [markdown]
# ## The latent sampler
#
# `set_timesteps`, then for each $t$: a doubled batch $[z_t, z_t]$ with conditions $[\varnothing, y]$, the CFG line, one
# scheduler step. At the end decode $z_0 / s$ — the latents were multiplied by $s$ when the training set was
# encoded — and clamp to the image range.

# %%
# NBVAL_CHECK_OUTPUT
@torch.no_grad()
def latent_sample(z_T, labels, unet, vae, scheduler, guidance_scale, latent_scale, num_inference_steps):
    scheduler.set_timesteps(num_inference_steps)
    null = torch.full_like(labels, unet.config.num_classes)
    z_t = z_T
    for t in scheduler.timesteps:
        eps_uncond, eps_cond = unet(torch.cat([z_t, z_t]), t, torch.cat([null, labels])).chunk(2)
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        z_t = scheduler.step(eps, t, z_t).prev_sample
    return vae.decode(z_t / latent_scale).clamp(-1, 1)


check_latent_sample(latent_sample)
