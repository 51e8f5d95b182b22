# %% [colab]  (the Colab setup cell, written once in tools/colab_cell.py)
# %% [markdown]
# # 05 · Solutions to the exercises
#
# The exercises of [05_text_conditioning_cfg.ipynb](../05_text_conditioning_cfg.ipynb) with automatic checks, solved,
# each followed by its check.

# %%
import torch

from minildm.exercises import check_cross_attention, check_garment_brightness, check_masked_mean, check_text_sample

# %% [markdown]
# ## Garment brightness
#
# The garment is every pixel above $-0.8$ (the background is $-1$). Map the values to $[0, 1]$, average over the
# garment's pixels only, and give an image without garment pixels a brightness of 0 (`clamp(min=1)` on the count).

# %%
# NBVAL_CHECK_OUTPUT
def garment_brightness(x):
    garment = (x > -0.8).to(x.dtype)                                   # (B, 1, H, W) 1 on the garment
    area = garment.sum((1, 2, 3))                                       # (B,) garment pixels
    return ((x + 1) / 2 * garment).sum((1, 2, 3)) / area.clamp(min=1)   # (B,) mean intensity in [0, 1]


check_garment_brightness(garment_brightness)

# %% [markdown]
# ## Mean pooling over the real tokens
#
# Sentence-BERT's pooling: weight each token state by its mask (1 for a real token, 0 for padding), sum over the
# tokens and divide by the number of real tokens.

# %%
# NBVAL_CHECK_OUTPUT
def masked_mean(states, mask):
    m = mask[..., None].to(states.dtype)                                # (B, L, 1)
    return (states * m).sum(1) / m.sum(1)                               # (B, D)


check_masked_mean(masked_mean)

# %% [markdown]
# ## Cross-attention with a padding mask
#
# Vaswani et al. eq. (1): logits $q k^\top / \sqrt{d}$, $-\infty$ where the key is padding (so its softmax weight
# is exactly 0), a softmax over the keys, then the weighted sum of the values.

# %%
# NBVAL_CHECK_OUTPUT
def cross_attention(q, k, v, mask):
    logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5               # (B, heads, N, L)
    logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))  # padding keys: -inf
    return logits.softmax(dim=-1) @ v                                   # (B, heads, N, d)


check_cross_attention(cross_attention)

# %% [markdown]
# ## The text-to-image loop with a negative prompt
#
# As diffusers' `StableDiffusionPipeline.__call__`: encode the prompts and the negative prompts (the empty prompt
# when there are none) and concatenate them `[negative, prompt]`; the doubled latent batch meets them in one UNet
# call; `chunk(2)` returns the negative (unconditional) half first. Decode $z_0 / s$.

# %%
# NBVAL_CHECK_OUTPUT
def text_sample(z_T, prompts, negative_prompts, unet, vae, text_encoder, scheduler, guidance_scale, latent_scale,
                num_inference_steps):
    negative = negative_prompts if negative_prompts is not None else [""] * len(prompts)
    text, neg = text_encoder(prompts), text_encoder(negative)
    states = torch.cat([neg.states, text.states])                      # (2B, L, D): [negative, prompt]
    mask = torch.cat([neg.mask, text.mask])                            # (2B, L)
    scheduler.set_timesteps(num_inference_steps)
    z_t = z_T
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps_uncond, eps_cond = unet(torch.cat([z_t, z_t]), t, states, mask).chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)  # the CFG line
            z_t = scheduler.step(eps, t, z_t).prev_sample
        return vae.decode(z_t / latent_scale).clamp(-1, 1)             # (B, 1, H, W)


check_text_sample(text_sample)
