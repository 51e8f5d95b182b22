# %% [colab]  (the Colab setup cell, written once in tools/colab_cell.py)
# %% [markdown]
# # 01 · Solutions to the exercises
#
# The exercises of [01_ddpm_from_scratch.ipynb](../01_ddpm_from_scratch.ipynb) with automatic checks, solved, each
# followed by its check.

# %%
import torch

from minildm.exercises import check_ddim_step, check_posterior_mean, check_q_sample


def extract(coeffs, t, ndim):
    """coeffs (T,), t (B,) -> (B, 1, ..., 1): one coefficient per sample, ready to broadcast."""
    return coeffs[t].reshape(-1, *([1] * (ndim - 1)))

# %% [markdown]
# ## `q_sample` (DDPM eq. 4)
#
# $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$. Keep the schedule in float64 and cast the two coefficients to
# the input dtype at the end: $1 - \bar\alpha_t$ near $t = 0$ loses most of its digits in float32.

# %%
# NBVAL_CHECK_OUTPUT
def q_sample(x0, t, eps, alpha_bar):
    ab = extract(alpha_bar, t, x0.ndim)                                         # (B, 1, 1, 1)
    return ab.sqrt().to(x0.dtype) * x0 + (1 - ab).sqrt().to(x0.dtype) * eps


check_q_sample(q_sample)

# %% [markdown]
# ## The posterior mean (DDPM eq. 7)
#
# $\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t$, with $\bar\alpha_{-1} = 1$
# at $t = 0$ (a 1 prepended to the cumulative product, so $t = 0$ needs no special case).

# %%
# NBVAL_CHECK_OUTPUT
def posterior_mean(x0, x_t, t, betas):
    alphas = 1 - betas
    alpha_bar = torch.cumprod(alphas, 0)
    alpha_bar_prev = torch.cat([torch.ones(1, dtype=betas.dtype), alpha_bar[:-1]])
    b, a, ab, ab_prev = (extract(c, t, x_t.ndim) for c in (betas, alphas, alpha_bar, alpha_bar_prev))
    coef_x0 = (ab_prev.sqrt() * b / (1 - ab)).to(x_t.dtype)
    coef_xt = (a.sqrt() * (1 - ab_prev) / (1 - ab)).to(x_t.dtype)
    return coef_x0 * x0 + coef_xt * x_t


check_posterior_mean(posterior_mean)

# %% [markdown]
# ## A DDIM step, $\eta = 0$ (DDIM eq. 12)
#
# Predict $\hat x_0$ from $\epsilon_\theta$, then move to the previous timestep along the same noise direction:
# $x_{t_{\text{prev}}} = \sqrt{\bar\alpha_{\text{prev}}}\,\hat x_0 + \sqrt{1-\bar\alpha_{\text{prev}}}\,\epsilon_\theta$, with $\bar\alpha_{\text{prev}} = 1$ after the last step.

# %%
# NBVAL_CHECK_OUTPUT
def ddim_step(eps_pred, t, t_prev, x_t, alpha_bar):
    ab_t = alpha_bar[t]
    ab_prev = alpha_bar[t_prev] if t_prev >= 0 else torch.ones((), dtype=alpha_bar.dtype)
    pred_x0 = (x_t - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt()                 # DDIM eq. (9)
    return ab_prev.sqrt() * pred_x0 + (1 - ab_prev).sqrt() * eps_pred           # DDIM eq. (12), sigma = 0


check_ddim_step(ddim_step)
