# %% [colab]  (the Colab setup cell, written once in tools/colab_cell.py)
# %% [markdown]
# # 01 · DDPM from scratch: learning to remove noise, one step at a time
#
# **What you'll build.** A denoising diffusion probabilistic model (DDPM, Ho et al. 2020) for Fashion-MNIST,
# from the equations up: the forward (noising) process and its closed form, four noise schedules, the
# posterior that the reverse process imitates, a UNet assembled from its pieces, the training loop
# (Algorithm 1), the sampling loop (Algorithm 2) with a GIF of it, and DDIM — the same model sampled in 50
# steps instead of 1000. Every piece you write is checked against `minildm`'s tested implementation with
# the same inputs and weights.
#
# **Prerequisites.** Notebook 00; Gaussian distributions; PyTorch modules and autograd.
#
# **Budget.** The default path trains a small model for a few minutes (to see it learn), then loads the
# shipped reference checkpoint (trained with `python -m minildm train ddpm`) for the showcase samples. Set
# `FULL_TRAINING = True` to retrain the reference yourself with the exact recipe.

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from minildm import checkpoints, data, metrics, runtime, viz
from minildm.models import layers
from minildm.models.unet import UNet, UNetConfig
from minildm.pipelines.diffusion import sample, sample_batched
from minildm.schedulers import DDIMScheduler, DDPMScheduler, extract, make_betas
from minildm.training import TrainConfig, train_diffusion

device = runtime.default_device()
FULL_TRAINING = False                                   # True: retrain the reference (see the model card for time)
DEMO_STEPS = runtime.budget(full=400, quick=10)         # the short demonstrative training
N_EVAL = runtime.budget(full=500, quick=16)             # samples per FID in the DDIM steps sweep
N_SHOW = runtime.budget(full=64, quick=8)               # samples in the 1000-step grid and GIF
torch.manual_seed(0)
print("device:", device, "| quick mode:", runtime.is_quick())

x0_train, labels_train = data.load_tensors("train").tensors   # (60000, 1, 32, 32) in [-1, 1]
x0_test, labels_test = data.load_tensors("test").tensors

# %% [markdown]
# ## 1. The forward process
#
# DDPM destroys an image $x_0$ in $T$ small steps, each adding a little Gaussian noise and shrinking the
# signal so that the variance stays bounded:
#
# $$q(x_t \mid x_{t-1}) = \mathcal{N}\big(x_t;\ \sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big) \qquad \text{(DDPM eq. 2)}$$
#
# with a *schedule* $\beta_1, \dots, \beta_T$ (here $T = 1000$). Because a sum of Gaussians is Gaussian, we can
# jump to any $t$ directly. With $\alpha_t = 1 - \beta_t$ and $\bar\alpha_t = \prod_{s \le t} \alpha_s$:
#
# $$q(x_t \mid x_0) = \mathcal{N}\big(x_t;\ \sqrt{\bar\alpha_t}\,x_0,\ (1 - \bar\alpha_t) I\big)
# \quad\Longleftrightarrow\quad x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\ \ \epsilon\sim\mathcal{N}(0, I) \qquad \text{(DDPM eq. 4)}$$
#
# The second form is the *reparameterised sample*: noise an image at a random $t$ in one line. For a batch, each
# image has its own $t$, so we *gather* $\bar\alpha_t$ per sample and reshape it to `(B, 1, 1, 1)` to
# broadcast over pixels. (Code counts $t$ from 0 to $T-1$; the paper from 1 to $T$.)

# %%
T = 1000
betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)   # DDPM's linear schedule
alpha_bar = torch.cumprod(1 - betas, dim=0)                  # (T,)


def my_extract(coeffs, t, ndim):
    """coeffs (T,), t (B,) -> (B, 1, 1, 1): one coefficient per sample, ready to broadcast."""
    return coeffs[t].reshape(-1, *([1] * (ndim - 1)))        # (B, 1, ..., 1)


def my_q_sample(x0, t, eps):
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps   (DDPM eq. 4)"""
    ab = my_extract(alpha_bar, t, x0.ndim)                   # float64: see the note below
    return ab.sqrt().to(x0.dtype) * x0 + (1 - ab).sqrt().to(x0.dtype) * eps


# %% [markdown]
# *A numerical note.* Near $t = 0$, $\bar\alpha_t \approx 0.9999$, so $1 - \bar\alpha_t$ keeps only a few significant digits
# in float32. We keep the schedule in float64 and cast each coefficient to the image dtype at the end, as
# `minildm` (and diffusers) do; computing `1 - alpha_bar` in float32 gives errors of about $3\times10^{-6}$.
#
# Check it against `minildm`'s scheduler (same $\beta$s, same $x_0$, $t$ and $\epsilon$):

# %%
# NBVAL_CHECK_OUTPUT
ref = DDPMScheduler(T, beta_schedule="linear")
x0 = x0_test[:8]
t = torch.tensor([0, 10, 50, 100, 250, 500, 750, 999])
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
print("my_extract shape:", tuple(my_extract(alpha_bar, t, 4).shape))
print("same as minildm.schedulers.extract:", torch.equal(my_extract(alpha_bar, t, 4), extract(alpha_bar, t, 4)))
print("my_q_sample == DDPMScheduler.add_noise:", torch.allclose(my_q_sample(x0, t, eps), ref.add_noise(x0, eps, t), atol=1e-6))

# %%
fig = viz.show_grid(my_q_sample(x0[:1].expand(8, -1, -1, -1), t, eps), nrow=8,
                    title="one garment noised at t = " + ", ".join(map(str, t.tolist())))
plt.show()

# %% [markdown]
# **Monte Carlo check of the closed form.** Draw many $x_t$ for one pixel value $x_0$ and compare their mean
# and variance with $\sqrt{\bar\alpha_t}\,x_0$ and $1 - \bar\alpha_t$:

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(1)
x0_pixel, t_mc, n_mc = 0.7, 300, 200_000
draws = my_q_sample(torch.full((n_mc, 1), x0_pixel, dtype=torch.float64), torch.full((n_mc,), t_mc),
                    torch.randn(n_mc, 1, generator=g, dtype=torch.float64))
mean_exact, var_exact = math.sqrt(alpha_bar[t_mc]) * x0_pixel, 1 - alpha_bar[t_mc].item()
print(f"mean: Monte Carlo {draws.mean():.3f}  closed form {mean_exact:.3f}")
print(f"var:  Monte Carlo {draws.var():.3f}  closed form {var_exact:.3f}")
print("within 4 standard errors:", abs(draws.mean() - mean_exact) < 4 * math.sqrt(var_exact / n_mc))

# %% [markdown]
# ## 2. Noise schedules
#
# The schedule decides how fast information is destroyed. Four common choices (all in
# `minildm.schedulers.make_betas`):
# - **linear** (DDPM): $\beta_t$ from $10^{-4}$ to $0.02$;
# - **cosine** (Nichol & Dhariwal 2021): define $\bar\alpha_t = f(t)/f(0)$ with $f(t) = \cos^2\!\big(\frac{t/T + s}{1+s}\cdot\frac{\pi}{2}\big)$, $s = 0.008$, and $\beta_t = 1 - \bar\alpha_t / \bar\alpha_{t-1}$ (clipped at 0.999);
# - **quadratic**: $\sqrt{\beta_t}$ linear (Stable Diffusion's "scaled linear");
# - **sigmoid**: $\beta_t$ follows a sigmoid from $\beta_1$ to $\beta_T$ (GeoDiff).
#
# The linear schedule drives $\bar\alpha_t$ to nearly zero long before $t = T$, so the last few hundred steps
# all look like pure noise and are wasted; on small images this is worse, since a 32×32 image has little
# information to destroy. The cosine schedule keeps $\bar\alpha_t$ decreasing almost linearly through the
# middle, so every step removes a similar amount of signal.

# %%
schedules = {name: torch.cumprod(1 - make_betas(name, T), 0) for name in ("linear", "cosine", "quadratic", "sigmoid")}
fig, ax = plt.subplots(figsize=(6, 3.2))
for name, ab in schedules.items():
    ax.plot(ab.numpy(), label=name)
ax.set_xlabel("t"); ax.set_ylabel(r"$\bar\alpha_t$"); ax.legend(); ax.grid(alpha=0.3)
ax.set_title(r"signal kept, $\bar\alpha_t$, under each schedule")
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'schedule':<10} " + " ".join(f"t={s:<5}" for s in (0, 250, 500, 750, 999)))
for name, ab in schedules.items():
    print(f"{name:<10} " + " ".join(f"{ab[s].item():<7.4f}" for s in (0, 250, 500, 750, 999)))

# %%
ts = torch.tensor([0, 100, 200, 300, 400, 500, 600, 800, 999])
eps1 = torch.randn((1, 1, 32, 32), generator=torch.Generator().manual_seed(3)).expand(len(ts), -1, -1, -1)
fig, axes = plt.subplots(4, 1, figsize=(9, 5.2))
for ax, name in zip(axes, schedules):
    sched = DDPMScheduler(T, beta_schedule=name)
    viz.show_grid(sched.add_noise(x0_test[:1].expand(len(ts), -1, -1, -1), eps1, ts), nrow=len(ts), ax=ax)
    ax.set_title(f"{name}: t = {ts.tolist()}", fontsize=9)
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 3. The reverse process and the loss
#
# To generate, we run the chain backwards from $x_T \sim \mathcal{N}(0, I)$ with learned Gaussian steps
#
# $$p_\theta(x_{t-1} \mid x_t) = \mathcal{N}\big(x_{t-1};\ \mu_\theta(x_t, t),\ \sigma_t^2 I\big) \qquad \text{(DDPM eq. 1)}$$
#
# DDPM fixes $\sigma_t^2$ (to $\beta_t$ or $\tilde\beta_t$ below); Nichol & Dhariwal later learned it. Training maximises a
# variational lower bound on $\log p_\theta(x_0)$, a sum of KL divergences between $p_\theta(x_{t-1}\mid x_t)$ and the
# **posterior** of the forward process, which is tractable once we condition on $x_0$. Applying Bayes' rule to
# two Gaussians, $q(x_{t-1} \mid x_t, x_0) \propto q(x_t \mid x_{t-1})\, q(x_{t-1} \mid x_0)$, gives
#
# $$q(x_{t-1} \mid x_t, x_0) = \mathcal{N}\big(\tilde\mu_t(x_t, x_0),\ \tilde\beta_t I\big),\quad
# \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t,\quad
# \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t \qquad \text{(DDPM eqs. 6-7)}$$
#
# *Derivation sketch.* Both factors are Gaussian in $x_{t-1}$: precisions add,
# $1/\tilde\beta_t = \alpha_t/\beta_t + 1/(1-\bar\alpha_{t-1})$, and the mean is the precision-weighted average
# $\tilde\mu_t = \tilde\beta_t\big(\sqrt{\alpha_t}\,x_t/\beta_t + \sqrt{\bar\alpha_{t-1}}\,x_0/(1-\bar\alpha_{t-1})\big)$; simplify with
# $\alpha_t(1-\bar\alpha_{t-1}) + \beta_t = 1 - \bar\alpha_t$.
#
# Writing $x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon)/\sqrt{\bar\alpha_t}$ turns matching $\tilde\mu_t$ into predicting
# the noise, and dropping the weights gives the **simplified objective**
#
# $$L_\text{simple} = \mathbb{E}_{t, x_0, \epsilon}\Big[\big\|\epsilon - \epsilon_\theta\big(\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t\big)\big\|^2\Big] \qquad \text{(DDPM eq. 14)}$$
#
# The network may instead predict $x_0$ or $v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0$ (Salimans & Ho 2022);
# all three are linear in each other given $x_t$. The squared error can be swapped for L1 or Huber
# (`TrainConfig(loss=...)`).

# %%
def my_posterior(x0, x_t, t, betas):
    """Mean and variance of q(x_{t-1} | x_t, x0), DDPM eqs. (6)-(7)."""
    alphas = 1 - betas
    ab = torch.cumprod(alphas, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    b, a, abt, abp = (my_extract(c, t, x_t.ndim) for c in (betas, alphas, ab, ab_prev))  # float64: 1 - abt cancels near t = 0
    coef_x0 = (abp.sqrt() * b / (1 - abt)).to(x_t.dtype)
    coef_xt = (a.sqrt() * (1 - abp) / (1 - abt)).to(x_t.dtype)
    var = ((1 - abp) / (1 - abt) * b).to(x_t.dtype)
    return coef_x0 * x0 + coef_xt * x_t, var


# %%
# NBVAL_CHECK_OUTPUT
x_t = ref.add_noise(x0, eps, t)
mine_mean, mine_var = my_posterior(x0, x_t, t, betas)
ref_mean, ref_var, _ = ref.posterior(x0, x_t, t)
print("posterior mean matches minildm:", torch.allclose(mine_mean, ref_mean, atol=1e-5))
print("posterior variance matches minildm:", torch.allclose(mine_var.flatten(), ref_var.flatten().to(mine_var.dtype), atol=1e-7))

# Bayes' rule numerically, for one scalar: posterior ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0) on a fine grid
t_b, x0_b, xt_b = 400, 0.3, -0.2
grid = torch.linspace(-4, 4, 400_001, dtype=torch.float64)
a_t, ab_prev_b = 1 - betas[t_b], alpha_bar[t_b - 1]
log_p = (-(xt_b - a_t.sqrt() * grid) ** 2 / (2 * betas[t_b])) + (-(grid - ab_prev_b.sqrt() * x0_b) ** 2 / (2 * (1 - ab_prev_b)))
w = torch.softmax(log_p, 0)
m_grid, v_grid = (w * grid).sum(), (w * (grid - (w * grid).sum()) ** 2).sum()
m_cf, v_cf = my_posterior(torch.tensor([[x0_b]], dtype=torch.float64), torch.tensor([[xt_b]], dtype=torch.float64), torch.tensor([t_b]), betas)
print(f"Bayes on a grid: mean {m_grid:.6f} var {v_grid:.3e} | closed form: mean {m_cf.item():.6f} var {v_cf.item():.3e}")

# %% [markdown]
# ## 4. The network, piece by piece
#
# $\epsilon_\theta(x_t, t)$ maps an image and a timestep to an image-shaped prediction: a **UNet**. We build each
# piece, then load `minildm`'s weights into ours and compare outputs.
#
# **Sinusoidal time embedding.** The integer $t$ becomes a vector of sines and cosines at geometrically spaced
# frequencies (Vaswani et al. 2017), so nearby timesteps get similar embeddings:
# $\text{emb}(t) = [\sin(t f_0), \dots, \sin(t f_{d/2-1}), \cos(t f_0), \dots, \cos(t f_{d/2-1})]$, $f_i = 10000^{-i/(d/2-1)}$.

# %%
def my_time_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1))   # (dim/2,)
    args = t.float()[:, None] * freqs[None, :]                                # (B, dim/2)
    return torch.cat([args.sin(), args.cos()], dim=-1)                        # (B, dim)


# %%
# NBVAL_CHECK_OUTPUT
t_e = torch.arange(0, 1000, 10)
print("time embedding matches minildm:", torch.allclose(my_time_embedding(t_e, 64), layers.SinusoidalTimeEmbedding(64)(t_e), atol=1e-6))

# %%
emb = my_time_embedding(torch.arange(T), 64)
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].imshow(emb.T, aspect="auto", cmap="RdBu"); axes[0].set_xlabel("t"); axes[0].set_ylabel("feature")
axes[0].set_title("sinusoidal embedding of t")
sim = F.normalize(emb, dim=1) @ F.normalize(emb, dim=1).T
axes[1].imshow(sim, cmap="viridis"); axes[1].set_title("cosine similarity between timesteps"); axes[1].set_xlabel("t")
plt.tight_layout(); plt.show()

# %% [markdown]
# **ResNet block with time scale-shift.** GroupNorm → SiLU → 3×3 conv, twice, with a skip connection. The time
# embedding enters as a per-channel *scale and shift* after the second normalisation (FiLM, as in improved
# DDPM): $h \leftarrow \text{GN}(h)\,(1 + \gamma(t)) + \beta(t)$.
#
# **ConvNeXt block** (Liu et al. 2022): a depthwise 7×7 conv, plus the time embedding, a norm, and a pointwise
# MLP — fewer parameters per receptive field, the block of lucidrains' early DDPM code.

# %%
class MyResnetBlock(nn.Module):
    def __init__(self, in_ch, out_ch, time_dim, groups=8):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * out_ch))
        self.norm2, self.dropout = nn.GroupNorm(groups, out_ch), nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, temb):
        h = self.norm2(self.conv1(F.silu(self.norm1(x))))
        scale, shift = self.time_proj(temb)[:, :, None, None].chunk(2, dim=1)   # 2 x (B, out_ch, 1, 1)
        h = h * (1 + scale) + shift
        return self.conv2(F.silu(h)) + self.skip(x)


class MyConvNextBlock(nn.Module):
    def __init__(self, in_ch, out_ch, time_dim, mult=2):
        super().__init__()
        self.dwconv = nn.Conv2d(in_ch, in_ch, 7, padding=3, groups=in_ch)
        self.time_proj = nn.Sequential(nn.GELU(), nn.Linear(time_dim, in_ch))
        self.norm = nn.GroupNorm(1, in_ch)
        self.mlp = nn.Sequential(nn.Conv2d(in_ch, mult * out_ch, 1), nn.GELU(), nn.Dropout(0.0), nn.Conv2d(mult * out_ch, out_ch, 1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, temb):
        h = self.dwconv(x) + self.time_proj(temb)[:, :, None, None]
        return self.mlp(self.norm(h)) + self.skip(x)


def same_outputs(mine, theirs, *inputs):
    """Load `theirs`' weights into `mine` and compare the outputs on the same inputs."""
    mine.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        return torch.allclose(mine(*inputs), theirs(*inputs), atol=1e-5)


# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
h, temb = torch.randn(2, 16, 8, 8), torch.randn(2, 32)
print("ResnetBlock matches minildm:", same_outputs(MyResnetBlock(16, 32, 32), layers.ResnetBlock(16, 32, 32), h, temb))
print("ConvNextBlock matches minildm:", same_outputs(MyConvNextBlock(16, 32, 32), layers.ConvNextBlock(16, 32, 32), h, temb))

# %% [markdown]
# **Self-attention** lets every position look at every other: with $Q, K, V$ from 1×1 convolutions,
# $\text{Attention}(Q, K, V) = \text{softmax}(QK^\top/\sqrt{d})\,V$ per head. Its cost grows with the *square*
# of the number of positions, so we use it only at 8×8 and below. **Linear attention** (Shen et al. 2021)
# applies the softmax to $q$ over features and to $k$ over positions and computes the small $d\times d$ matrix
# $K^\top V$ first: linear in the number of positions, cheap enough at 16×16. Both are wrapped as
# `Residual(PreNorm(...))`: a GroupNorm with one group (a LayerNorm over the feature map) before, the input added after.

# %%
class MyAttention(nn.Module):
    def __init__(self, channels, heads=4, head_dim=32):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.to_qkv = nn.Conv2d(channels, 3 * heads * head_dim, 1, bias=False)
        self.to_out = nn.Conv2d(heads * head_dim, channels, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        q, k, v = self.to_qkv(x).reshape(b, 3, self.heads, self.head_dim, hh * ww).unbind(1)  # 3 x (B, heads, d, HW)
        weights = torch.einsum("bhdi,bhdj->bhij", q, k).div(math.sqrt(self.head_dim)).softmax(-1)  # (B, heads, HW, HW)
        out = torch.einsum("bhij,bhdj->bhdi", weights, v)                                      # (B, heads, d, HW)
        return self.to_out(out.reshape(b, -1, hh, ww))                                           # (B, C, H, W)


class MyLinearAttention(nn.Module):
    def __init__(self, channels, heads=4, head_dim=32):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.to_qkv = nn.Conv2d(channels, 3 * heads * head_dim, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(heads * head_dim, channels, 1), nn.GroupNorm(1, channels))

    def forward(self, x):
        b, c, hh, ww = x.shape
        q, k, v = self.to_qkv(x).reshape(b, 3, self.heads, self.head_dim, hh * ww).unbind(1)  # 3 x (B, heads, d, HW)
        q = q.softmax(dim=-2) / math.sqrt(self.head_dim)         # over features
        k = k.softmax(dim=-1)                                    # over positions
        context = torch.einsum("bhdn,bhen->bhde", k, v)          # (B, heads, d, d): no HW x HW matrix
        out = torch.einsum("bhde,bhdn->bhen", context, q)        # (B, heads, d, HW)
        return self.to_out(out.reshape(b, -1, hh, ww))           # (B, C, H, W)


# %%
# NBVAL_CHECK_OUTPUT
h = torch.randn(2, 32, 8, 8)
print("Attention matches minildm:", same_outputs(MyAttention(32), layers.Attention(32), h))
print("LinearAttention matches minildm:", same_outputs(MyLinearAttention(32), layers.LinearAttention(32), h))
block = layers.Residual(layers.PreNorm(32, layers.Attention(32)))
print("Residual(PreNorm(attention)) keeps the shape:", tuple(block(h).shape))

# %% [markdown]
# **Down, up, and the skips.** The UNet halves the resolution level by level (32 → 16 → 8 → 4), widening the
# channels, then mirrors back up, concatenating the feature map saved at the same resolution on the way down
# (the *skip connections* that carry fine detail). Timestep information reaches every ResNet block. Here is
# `minildm`'s UNet with its default configuration, level by level:

# %%
# NBVAL_CHECK_OUTPUT
config = UNetConfig()
unet = UNet(config)
print(config)
print(f"parameters: {sum(p.numel() for p in unet.parameters()):,}")
shapes = []  # record the output shape of every block on the way down, through the middle, and up
blocks = [(f"down {i}", lvl[0]) for i, lvl in enumerate(unet.down)] + [("mid", unet.mid1)] + \
         [(f"up {i}", lvl[0]) for i, lvl in enumerate(unet.up)]
hooks = [blk.register_forward_hook(lambda mod, inp, out, name=name: shapes.append((name, tuple(out.shape))))
         for name, blk in blocks]
with torch.no_grad():
    out = unet(torch.randn(3, 1, 32, 32), torch.tensor([1, 500, 999]))
for hk in hooks:
    hk.remove()
for name, shape in shapes:
    print(f"{name:<7} {shape}")
print("input (3, 1, 32, 32) -> output", tuple(out.shape))

# %% [markdown]
# ## 5. Training: Algorithm 1
#
# $$\textbf{repeat}\quad x_0 \sim q(x_0),\ \ t \sim \text{Uniform}\{1..T\},\ \ \epsilon \sim \mathcal{N}(0, I),\ \
# \text{gradient step on } \nabla_\theta \big\|\epsilon - \epsilon_\theta(\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon,\ t)\big\|^2 \quad \textbf{until converged}$$
#
# Written out, one step is five lines. We train a fresh model for a few minutes with a cosine schedule:

# %%
scheduler = DDPMScheduler(T, beta_schedule="cosine")
torch.manual_seed(0)
demo_model = UNet(config).to(device)
opt = torch.optim.AdamW(demo_model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(0)
demo_losses, start = [], time.perf_counter()
from tqdm.auto import tqdm
for step in tqdm(range(DEMO_STEPS), desc="Algorithm 1"):
    x0_batch = x0_train[torch.randint(0, len(x0_train), (64,), generator=g)].to(device)   # x0 ~ q(x0)
    t_batch = torch.randint(0, T, (64,), generator=g).to(device)                          # t ~ Uniform
    eps_batch = torch.randn(x0_batch.shape, generator=g).to(device)                       # eps ~ N(0, I)
    x_t_batch = scheduler.add_noise(x0_batch, eps_batch, t_batch)                          # DDPM eq. (4)
    loss = F.mse_loss(demo_model(x_t_batch, t_batch), eps_batch)                          # DDPM eq. (14)
    opt.zero_grad(); loss.backward(); opt.step()
    demo_losses.append(loss.item())
print(f"{DEMO_STEPS} steps, {DEMO_STEPS * 64:,} images in {time.perf_counter() - start:.0f} s")
viz.plot_loss(demo_losses, title="demonstrative training: L_simple")
plt.show()

# %% [markdown]
# `minildm.training.train_diffusion` is the same loop with what long runs need: an exponential moving average
# (EMA) of the weights (sampling from the average is smoother), gradient clipping, a learning-rate warm-up,
# optional random flips, checkpoints that resume exactly, and a stop with a clear message if the loss becomes NaN.
# The reference checkpoint was trained with it by `python -m minildm train ddpm`; its model card
# (`data/checkpoints/ddpm.md`) records the recipe, images seen, device and wall-clock.

# %% [markdown]
# **Why no horizontal flips?** Flips are a standard augmentation for classifiers, and notebook 00 offers them.
# For a *generative* model they change the distribution being learned: in Fashion-MNIST every sneaker and
# ankle boot points the same way, so a model trained on flipped images draws mirrored shoes the data never
# contains. The feature-FID of real images shows how much that matters (2,000 training images against the test set):

# %%
x_real = x0_train[:2000]
x_half_flipped = torch.cat([x_real[:1000], x_real[1000:].flip(-1)])
print(f"FID(real train images, test set)            = {metrics.fid(x_real):.3f}")
print(f"FID(same images, half of them flipped, test) = {metrics.fid(x_half_flipped):.3f}")
fig = viz.show_grid(torch.cat([x0_train[labels_train == 9][:8], x0_train[labels_train == 9][:8].flip(-1)]), nrow=8,
                    title="ankle boots as they are (top) and flipped (bottom)")
plt.show()

# %% [markdown]
# So the reference recipe trains without flips (`TrainConfig(hflip=False)`).

# %%
if FULL_TRAINING:
    from minildm.recipes import train_recipe
    train_recipe("ddpm", device=device)          # hours on a 2-core CPU; see the model card for GPU time
model = checkpoints.load_model(UNet, checkpoints.find("ddpm"), device=device)
print({k: model.meta[k] for k in ("steps", "images_seen", "wall_clock_s", "device", "beta_schedule")})

# %% [markdown]
# ## 6. Sampling: Algorithm 2
#
# $$x_T \sim \mathcal{N}(0, I);\quad \textbf{for } t = T, \dots, 1:\ \ z \sim \mathcal{N}(0, I) \text{ if } t > 1 \text{ else } 0,\ \
# x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon_\theta(x_t, t)\Big) + \sigma_t z \qquad \text{(DDPM eq. 11)}$$
#
# We write the loop ourselves in the posterior form (predict $x_0$, clip it to $[-1, 1]$, take the posterior
# mean, add $\sqrt{\tilde\beta_t}\,z$) — equivalent to eq. (11) without the clip — and check it against
# `minildm.pipelines.diffusion.sample` from the same seed.

# %%
@torch.no_grad()
def my_ddpm_sample(model, scheduler, n, generator):
    x_t = torch.randn((n, 1, 32, 32), generator=generator).to(device)                   # x_T ~ N(0, I)
    for t in tqdm(range(scheduler.num_train_timesteps - 1, -1, -1), desc="my Algorithm 2", leave=False):
        eps_pred = model(x_t, torch.full((n,), t, device=device))
        ab = scheduler.alpha_bar[t].item()
        pred_x0 = ((x_t - math.sqrt(1 - ab) * eps_pred) / math.sqrt(ab)).clamp(-1, 1)   # x0 from eps
        mean, var, _ = scheduler.posterior(pred_x0, x_t, torch.full((n,), t, device=device))  # DDPM eq. (7)
        noise = torch.randn(x_t.shape, generator=generator).to(device) if t > 0 else 0
        x_t = mean + var.sqrt() * noise
    return x_t


n_check = runtime.budget(full=4, quick=2)
mine = my_ddpm_sample(model, scheduler, n_check, torch.Generator().manual_seed(42))
theirs = sample(model, scheduler, n_check, torch.Generator().manual_seed(42), progress=False).images

# %%
# NBVAL_CHECK_OUTPUT
print("my Algorithm 2 == minildm pipeline (same seed):", torch.allclose(mine.clamp(-1, 1), theirs, atol=1e-4))

# %%
out = sample(model, scheduler, N_SHOW, torch.Generator().manual_seed(0), return_intermediates=True,
             intermediate_every=25)
viz.show_grid(out.images, nrow=8, title="DDPM, 1000 steps (reference checkpoint)")
plt.show()

# %% [markdown]
# The reverse process as a film: noise at the start, structure appearing in the last few hundred steps.
# The GIF is written to `runs/01_reverse_process.gif`; here are frames of one sample.

# %%
from IPython.display import Image as ShowImage
n_frames = len(out.intermediates)   # x_T, then every 25 steps; most structure appears near the end,
keep = [i for i in range(n_frames) if i % 4 == 0 or i >= n_frames - 13]   # so keep every frame there
gif_path = viz.save_gif([out.intermediates[i][:8] for i in keep], "../runs/01_reverse_process.gif", nrow=8,
                        duration_ms=120, upscale=1)
steps_shown = [f"t={max(0, T - 25 * i)}" if i else "x_T" for i in range(n_frames)]
viz.show_gif_frames(out.intermediates, n_show=10, index=3, labels=steps_shown)
plt.show()
ShowImage(filename=str(gif_path), width=560)

# %% [markdown]
# ## 7. DDIM: the same model, 20× fewer steps
#
# Song et al. (2021) noticed that the DDPM loss only depends on the marginals $q(x_t \mid x_0)$, so other,
# *non-Markovian* forward processes share the same trained model. Their reverse step from $t$ to an earlier
# $s$ (any subsequence of timesteps) is
#
# $$x_s = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1 - \bar\alpha_s - \sigma_t^2}\;\epsilon_\theta(x_t, t) + \sigma_t z,\qquad
# \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta(x_t,t)}{\sqrt{\bar\alpha_t}} \qquad \text{(DDIM eq. 12)}$$
#
# with $\sigma_t = \eta\sqrt{(1-\bar\alpha_s)/(1-\bar\alpha_t)}\sqrt{1-\bar\alpha_t/\bar\alpha_s}$ (eq. 16). $\eta = 1$ recovers DDPM on the
# subsequence; $\eta = 0$ makes sampling **deterministic**: the same $x_T$ always gives the same image.
# The "previous timestep" $s$ is the next entry of the timestep list the scheduler built — one source of truth.

# %%
def my_ddim_step(eps_pred, t, s, x_t, alpha_bar, eta=0.0, noise=None, clipped_eps=False):
    ab_t = alpha_bar[t]
    ab_s = alpha_bar[s] if s >= 0 else torch.tensor(1.0, dtype=alpha_bar.dtype)
    pred_x0 = ((x_t - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt()).clamp(-1, 1)  # "predicted x0", clipped
    # the direction term keeps the model's own eps (diffusers' default, use_clipped_model_output=False) ...
    if clipped_eps:  # ... or points from the *clipped* x0 back to x_t (guided-diffusion; diffusers' True)
        eps_pred = (x_t - ab_t.sqrt() * pred_x0) / (1 - ab_t).sqrt()             # DDIM eq. (9) solved for eps
    sigma = eta * ((1 - ab_s) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_s).sqrt()   # DDIM eq. (16)
    x_s = ab_s.sqrt() * pred_x0 + (1 - ab_s - sigma ** 2).sqrt() * eps_pred      # DDIM eq. (12)
    return x_s + sigma * noise if eta > 0 else x_s


# %%
# NBVAL_CHECK_OUTPUT
ddim = DDIMScheduler(T, beta_schedule="cosine")
ddim.set_timesteps(50)
print("first timesteps:", ddim.timesteps[:5].tolist(), "... last:", ddim.timesteps[-3:].tolist())
x_t = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
t_now = int(ddim.timesteps[10])
with torch.no_grad():
    eps_pred = model(x_t.to(device), torch.tensor([t_now, t_now], device=device)).cpu()
mine = my_ddim_step(eps_pred.double(), t_now, ddim.previous_timestep(t_now), x_t.double(), ddim.alpha_bar).float()
print("one DDIM step matches minildm:", torch.allclose(mine, ddim.step(eps_pred, t_now, x_t).prev_sample, atol=1e-5))
mine_c = my_ddim_step(eps_pred.double(), t_now, ddim.previous_timestep(t_now), x_t.double(), ddim.alpha_bar,
                      clipped_eps=True).float()
ref_c = ddim.step(eps_pred, t_now, x_t, use_clipped_model_output=True).prev_sample
print("with eps from the clipped x0 too:", torch.allclose(mine_c, ref_c, atol=1e-5))

# %% [markdown]
# **Steps vs quality.** The same initial noise $x_T$, sampled with DDIM ($\eta = 0$) in 10, 20, 50 and 100 steps,
# and with DDPM in 1000 (same $x_T$, but DDPM adds fresh noise at every step, so its images differ). Then the feature-FID (Fréchet distance in the feature space of our Fashion-MNIST classifier,
# `minildm.metrics`) of each, next to the real-vs-real floor at the same sample count.

# %%
fig, axes = plt.subplots(5, 1, figsize=(9, 6.5))
for ax, steps in zip(axes, (10, 20, 50, 100)):
    imgs = sample(model, ddim, 16, torch.Generator().manual_seed(0), num_inference_steps=steps, progress=False).images
    viz.show_grid(imgs, nrow=16, ax=ax); ax.set_title(f"DDIM {steps} steps", fontsize=9)
viz.show_grid(out.images[:16], nrow=16, ax=axes[4]); axes[4].set_title("DDPM 1000 steps", fontsize=9)
plt.tight_layout(); plt.show()

# %%
rows = []
for steps in (10, 20, 50, 100):
    start = time.perf_counter()
    imgs = sample_batched(model, ddim, N_EVAL, batch_size=250, seed=1, num_inference_steps=steps, device=device)
    seconds = time.perf_counter() - start
    rep = metrics.fid_report(imgs)
    rows.append((f"DDIM {steps}", rep["n_samples"], rep["fid"], rep["fid_floor"], rep["fid_ratio"], seconds / N_EVAL))
print(f"{'sampler':<11}{'n':>6}{'FID':>9}{'floor':>9}{'ratio':>8}{'s/image':>10}")
for r in rows:
    print(f"{r[0]:<11}{r[1]:>6}{r[2]:>9.3f}{r[3]:>9.3f}{r[4]:>8.2f}{r[5]:>10.3f}")

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot([10, 20, 50, 100], [r[4] for r in rows], "o-", label=f"DDIM, n = {N_EVAL} (live)")
ax.axhline(1.0, color="gray", ls=":", label="real-vs-real floor")
ax.set_xscale("log"); ax.set_xlabel("sampling steps"); ax.set_ylabel("FID / floor"); ax.grid(alpha=0.3); ax.legend()
ax.set_title("quality vs steps")
plt.show()

# %% [markdown]
# 1000-step DDPM sampling of hundreds of images takes too long for this notebook on a CPU, so the 1000-step
# row comes from `minildm bench` (`python -m minildm bench ddpm --sampler ddpm -n 1000` and
# `python -m minildm bench ddpm -n 5000`), which wrote `results/metrics.json`. The bench also tried three DDIM
# knobs at n = 1,000: the **timestep spacing** (`--spacing trailing` starts at $t = T-1$ instead of diffusers'
# default "leading" $t = 980$; `--spacing linspace`; Lin et al. 2023, Table 2), **$\eta$** (`--eta 0.3`, `0.5`,
# `0.7`, `1`: fresh noise at each of the 50 steps, eq. 16), and **which $\epsilon$ the direction term uses**
# (`--clipped-eps`: the one recomputed from the clipped $\hat x_0$, `clipped_eps=True` above; rows named
# `clipped-eps`). Rows ending in `/ seed=1` (2, 3) were sampled again with another seed (`--seed 1`), DDPM-1000 included.
# The last column compares each DDIM-50 row with DDPM-1000 at the same n and seed:

# %%
import json
from pathlib import Path
results_path = Path("../results/metrics.json")
from minildm.cards import current_rows
from minildm.checkpoints import find, sha256_file
results = json.loads(results_path.read_text()) if results_path.exists() else {}
ddpm_rows, earlier = current_rows({k: r for k, r in results.items() if k.startswith("ddpm /")},
                                  sha256_file(find("ddpm")))                 # rows of the shipped weights only
ddpm1000 = {(r["n_samples"], r.get("seed", 0)): r["fid"] for k, r in ddpm_rows.items()
            if k.startswith("ddpm / ddpm-1000")}
print(f"{'row':<53}{'n':>6}{'FID':>8}{'floor':>8}{'ratio':>7}{'s/image':>9}  {'/ DDPM-1000':>10}  date")
for key, r in ddpm_rows.items():
    same = (r["n_samples"], r.get("seed", 0))                                   # compare at the same n and seed
    vs = r["fid"] / ddpm1000[same] if same in ddpm1000 and "ddim" in key else None
    print(f"{key:<53}{r['n_samples']:>6}{r['fid']:>8.3f}{r['fid_floor']:>8.3f}{r['fid_ratio']:>7.2f}"
          f"{r['sample_s_per_img']:>9.3f}  {'' if vs is None else f'{vs:.2f}x':>10}  {r['date']}")
if earlier:
    print(f"\nmeasured on earlier weights, left out: {', '.join(k.split(' / ', 1)[1] for k in sorted(earlier))}")

# %% [markdown]
# A setting sampled with several seeds gives a mean and a spread. The setting with the best seed-0 row was
# *chosen* on seed 0, so that row is the luckiest of several; its other seeds were not chosen, and their mean is
# the fairer estimate. DDPM-1000 was not chosen among alternatives, so all of its seeds count:

# %%
import statistics
by_setting = {}                                                          # setting -> {seed: FID}, at n = 1,000
for key, r in ddpm_rows.items():
    if r["n_samples"] == 1000:
        by_setting.setdefault(key.split(" / seed=")[0], {})[r.get("seed", 0)] = r["fid"]
ddpm_mean = statistics.mean(by_setting.get("ddpm / ddpm-1000 / n=1000", {}).values() or [float("nan")])
for setting, fids in by_setting.items():
    fresh = [f for seed, f in fids.items() if seed != 0]                  # the seeds no choice was made on
    if len(fids) > 1 and "ddim" in setting and len(fresh) > 1:
        print(f"{setting:<45} seeds {sorted(fids)}: mean FID {statistics.mean(fids.values()):.3f} "
              f"({statistics.mean(fids.values()) / ddpm_mean:.2f}x DDPM-1000's mean {ddpm_mean:.3f}); "
              f"seeds other than 0: {statistics.mean(fresh):.3f} ± {statistics.stdev(fresh):.3f} "
              f"({statistics.mean(fresh) / ddpm_mean:.2f}x)")

# %% [markdown]
# Each row records the sha256 of the weights it measured, and the table lists only rows of the shipped ones
# (two spacing rows at $\eta = 0$ were measured only on the earlier 17,000-step weights, where they were the worst
# of all). What the knobs show at n = 1,000: the 1000-step sampler is the best of all, and each DDIM knob closes
# part of the gap. **$\eta > 0$** puts back fresh noise that lets later steps correct earlier mistakes; on these
# weights FID falls steadily from $\eta = 0.3$ to $\eta = 1$ (on the earlier weights an intermediate $\eta$ had
# looked best, within the noise of one draw). The **timestep spacing** hardly matters once $\eta = 1$: trailing
# starts at $t = 999$, the timestep whose marginal is the pure noise $x_T$ we start from (leading starts at
# $t = 980$, as if that noise already held a faint trace of an image), but at $\eta = 1$ the fresh noise of the
# first steps washes that difference out. Song et al. saw the same kind of gap on CIFAR-10 (their Table 1: FID 4.67
# at 50 DDIM steps against 3.17 for 1000-step DDPM, 1.47x): a few large deterministic steps cost quality.
#
# The largest single gain at $\eta = 0$ is the **$\epsilon$ of the direction term**. Early on, $\hat x_0$ computed from $\epsilon_\theta$ lies far
# outside $[-1, 1]$ (dividing by $\sqrt{\bar\alpha_t} \approx 0.03$ at $t = 980$ magnifies every error), so the scheduler clips it.
# With the model's own $\epsilon$ the step then mixes a clipped $\hat x_0$ with a direction that still points at the
# unclipped one: $x_s$ leaves the line between $x_t$ and the $\hat x_0$ it claims to use. Recomputing
# $\epsilon = (x_t - \sqrt{\bar\alpha_t}\,\hat x_0) / \sqrt{1-\bar\alpha_t}$ (eq. 9 solved for $\epsilon$, as guided-diffusion's DDIM
# always does) keeps the step consistent: compare the `clipped-eps` row with plain DDIM-50 at $\eta = 0$. At
# n = 5,000 (the two rows without `/ n=1000`) the same pair of knobs, $\eta = 0.5$ with the clipped $\epsilon$, takes
# FID from the default's ratio 8.6 to 5.2.
#
# Now read every difference against the noise of one draw. The `eta=0.5 clipped-eps` rows are one setting and
# one model sampled with four seeds, and FID moves between them by about as much as the gap between good and bad
# DDIM settings. That is why the setting with the best seed-0 row is checked on fresh seeds and compared by its
# mean (the cell above): a best-of-nine choice on one draw flatters itself. The model card
# `data/checkpoints/ddpm.md` keeps the comparison against the course targets.

# %% [markdown]
# ## Metrics
#
# The live table uses `N_EVAL` samples per row (small, so the notebook stays fast; FID is biased upwards at
# small n, which is why each FID sits beside its real-vs-real floor at the same n). The rows from
# `minildm bench` use 5,000 (DDIM-50) and 1,000 (DDPM-1000) samples; the model card
# `data/checkpoints/ddpm.md` lists them with the commands that measure them.
#
# ## Exercises
#
# Each exercise has an automatic check in `minildm.exercises`: it runs your function on random and edge
# inputs (t = 0, t = T - 1, per-sample t, float64, latent shapes) against the reference, and when it fails it
# says which case, expected vs got, and — if your result matches a typical mistake — which one. Here is what a
# failure looks like, for a `q_sample` that forgot a square root:

# %%
from minildm.exercises import ExerciseFailed, check_ddim_step, check_posterior_mean, check_q_sample


def q_sample_with_a_bug(x0, t, eps, alpha_bar):
    ab = my_extract(alpha_bar, t, x0.ndim)
    return (ab.sqrt() * x0 + (1 - ab) * eps).to(x0.dtype)          # should be (1 - ab).sqrt() * eps


try:
    check_q_sample(q_sample_with_a_bug)
except ExerciseFailed as err:
    print(err)

# %% [markdown]
# 1. **`q_sample(x0, t, eps, alpha_bar) -> x_t`.** Write it without looking at section 1, then run
#    `check_q_sample(q_sample)`.
# 2. **`posterior_mean(x0, x_t, t, betas) -> mean`.** Re-derive $\tilde\mu_t$ from the precision-weighted mean and
#    implement it; `check_posterior_mean` tests the edges $t = 0$ and $t = T - 1$, where off-by-one errors hide.
# 3. **`ddim_step(eps_pred, t, t_prev, x_t, alpha_bar) -> x_prev`** for $\eta = 0$ without clipping
#    (`t_prev = -1` means $\bar\alpha_{\text{prev}} = 1$); check with `check_ddim_step`. Then show that for $\eta = 1$
#    the variance equals $\tilde\beta_t$ when $t_{\text{prev}} = t - 1$.
# 4. Sample with the *linear* schedule's scheduler but the cosine-trained model. What happens, and why?
#
# Until you write a function its check says "not attempted" and the notebook runs on; solutions:
# `notebooks/solutions/01_solutions.ipynb`.

# %%
def q_sample(x0, t, eps, alpha_bar):
    raise NotImplementedError("your turn: eq. (4) (solution: notebooks/solutions/01_solutions.ipynb)")


def posterior_mean(x0, x_t, t, betas):
    raise NotImplementedError("your turn: eq. (7) (solution: notebooks/solutions/01_solutions.ipynb)")


def ddim_step(eps_pred, t, t_prev, x_t, alpha_bar):
    raise NotImplementedError("your turn: DDIM eq. (12), eta = 0 (solution: notebooks/solutions/01_solutions.ipynb)")


check_q_sample(q_sample)
check_posterior_mean(posterior_mean)
check_ddim_step(ddim_step)

# %% [markdown]
#
# ## Summary
# - The forward process has a closed form, so training needs one noisy sample per image per step (eq. 4).
# - The reverse step imitates the Gaussian posterior $q(x_{t-1}\mid x_t, x_0)$; predicting $\epsilon$ is enough (eq. 14).
# - A UNet with time embeddings, residual blocks and attention at low resolution is the denoiser.
# - DDIM reuses the same network with 20× fewer steps; the table above measures what that costs in FID
#   (spacing and $\eta$ matter: start at $t = T-1$, and some noise helps a small model).
#
# **Further reading.** Ho, Jain & Abbeel (2020), *Denoising Diffusion Probabilistic Models*; Song, Meng & Ermon
# (2021), *Denoising Diffusion Implicit Models*; Nichol & Dhariwal (2021), *Improved Denoising Diffusion
# Probabilistic Models*; Salimans & Ho (2022), *Progressive Distillation* (v-prediction).
# Next: **02 · class-conditional generation and classifier-free guidance**.
