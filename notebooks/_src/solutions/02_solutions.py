# %% [colab]  (the Colab setup cell, written once in tools/colab_cell.py)
# %% [markdown]
# # 02 · Solutions to the exercises
#
# The exercises of [02_class_conditional.ipynb](../02_class_conditional.ipynb), solved, each followed by its check.
# Try them first: the checks tell you which input fails and why.

# %%
import torch

from minildm.exercises import check_brightness_loss, check_cfg, check_drop_condition

# %% [markdown]
# ## The CFG line
#
# $\tilde\epsilon = \epsilon_\varnothing + s\,(\epsilon_y - \epsilon_\varnothing)$: $s = 1$ gives $\epsilon_y$, $s = 0$ gives $\epsilon_\varnothing$ (Ho & Salimans' $w$ is $s - 1$).

# %%
# NBVAL_CHECK_OUTPUT
def cfg(eps_uncond, eps_cond, guidance_scale):
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


check_cfg(cfg)

# %% [markdown]
# ## Condition dropout
#
# The `(B,)` mask must broadcast over whatever a condition is: `(B,)` labels, or `(B, L, D)` text states.

# %%
# NBVAL_CHECK_OUTPUT
def my_drop_condition(cond, drop, null):
    mask = drop.view(-1, *[1] * (cond.dim() - 1))                           # (B, 1, ...) broadcasts over cond
    return torch.where(mask, torch.as_tensor(null, dtype=cond.dtype), cond)


check_drop_condition(my_drop_condition)

# %% [markdown]
# ## The brightness loss
#
# Brightness on $[0, 1]$ is $(x + 1)/2$ averaged over the pixels; the loss is summed over images so that each image's
# gradient does not shrink as the batch grows.

# %%
# NBVAL_CHECK_OUTPUT
def brightness_loss(pred_x0, target):
    return (((pred_x0 + 1) / 2).flatten(1).mean(1) - target).pow(2).sum()


check_brightness_loss(brightness_loss)
