# %% [colab]  (the Colab setup cell, written once in tools/colab_cell.py)
# %% [markdown]
# # 03 · The variational autoencoder, the KL term, and a latent space fit for diffusion
#
# **What you'll build.** Latent diffusion (chapter 04) runs the diffusion model on a small latent instead of
# pixels; this chapter builds the autoencoder that makes the latent. You will derive the evidence lower bound
# (ELBO) and the KL divergence between two Gaussians, see a 2-D latent space you can draw, then study the
# convolutional VAE with spatial latents that latent diffusion uses: its reconstructions, its 4 latent channels,
# what the KL weight $\beta$ does (a rate–distortion sweep), the latent scale factor, interpolations, and why its
# samples from the prior are poor — the reason for chapter 04. A short comparison with diffusers'
# `AutoencoderKL` and a table of training variants close the chapter.
#
# **Prerequisites.** Notebook 01 (Gaussians, the reparameterised sample $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon$).
#
# **Budget.** Minutes on a laptop CPU (the measured run time is in the README's course table): a 2-D VAE and a few
# tiny VAEs are trained live; the spatial VAE is the shipped reference `vae` (trained with `python -m minildm train vae`;
# card `data/checkpoints/vae.md`).

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minildm import checkpoints, data, metrics, runtime, viz
from minildm.bench import reconstruct
from minildm.exercises import check_kl, check_latent_scale, check_reparameterise
from minildm.models.vae import MLPVAE, VAE, DiagonalGaussian, MLPVAEConfig, VAEConfig, latent_scale, vae_loss
from minildm.vae_training import VAETrainConfig, train_vae

device = runtime.default_device()
MLP_STEPS = runtime.budget(full=2000, quick=20)      # the 2-D VAE
SWEEP_STEPS = runtime.budget(full=300, quick=5)      # each tiny VAE of the beta sweep
PEER_STEPS = runtime.budget(full=150, quick=3)       # minildm VAE vs diffusers AutoencoderKL, same budget
N_EVAL = runtime.budget(full=2000, quick=100)        # test images for live metrics
torch.manual_seed(0)
print("device:", device, "| quick mode:", runtime.is_quick())
x0_train, labels_train = data.load_tensors("train").tensors   # (60000, 1, 32, 32) in [-1, 1]
x0_test, labels_test = data.load_tensors("test").tensors      # (10000, 1, 32, 32)

# %% [markdown]
# ## 1. Maximum likelihood and the ELBO
#
# We want a generative model $p_\theta(x) = \int p_\theta(x \mid z)\,p(z)\,dz$ with a simple prior $p(z) = \mathcal{N}(0, I)$ and
# a decoder $p_\theta(x \mid z)$. Maximum likelihood needs $\log p_\theta(x)$, but the integral over $z$ is intractable.
# Bring in an **encoder** $q_\phi(z \mid x)$ and use Jensen's inequality:
#
# $$\log p_\theta(x) = \log \mathbb{E}_{q_\phi(z\mid x)}\Big[\frac{p_\theta(x\mid z)\,p(z)}{q_\phi(z\mid x)}\Big]
# \;\ge\; \underbrace{\mathbb{E}_{q_\phi(z\mid x)}\big[\log p_\theta(x\mid z)\big]}_{\text{reconstruction}}
# \;-\; \underbrace{\mathrm{KL}\big(q_\phi(z\mid x)\,\|\,p(z)\big)}_{\text{regulariser}} = \mathrm{ELBO}$$
#
# (Kingma & Welling 2014, eq. 3). The gap is exactly $\mathrm{KL}(q_\phi(z \mid x)\,\|\,p_\theta(z \mid x))$, so maximising the ELBO
# both fits the data and makes the encoder approximate the true posterior.
#
# **Why the KL term.** Without it the encoder could put every image at its own far-away point with tiny
# variance: perfect reconstructions, but a latent space with holes, where $z \sim p(z)$ decodes to nothing. The KL
# pulls every $q_\phi(z \mid x)$ towards $\mathcal{N}(0, I)$: the codes overlap, the space is filled, and its scale is known.
#
# With a Gaussian decoder $p_\theta(x \mid z) = \mathcal{N}(\hat x(z), \sigma^2 I)$ the reconstruction term is
# $-\|x - \hat x\|^2 / 2\sigma^2$ + const, so per pixel ($D$ pixels)
# $-\mathrm{ELBO}/D = \frac{1}{2\sigma^2}\,\mathrm{MSE} + \mathrm{KL}/D$ + const. Multiplying by $2\sigma^2$ gives minildm's `vae_loss`:
# `recon + beta * kl` with $\beta = 2\sigma^2$ and the KL in nats per pixel. $\beta$ is a knob (Higgins et al. 2017):
# small $\beta$ trusts the pixels, large $\beta$ trusts the prior.
#
# **The reparameterisation trick.** To backpropagate through a sample $z \sim \mathcal{N}(\mu, \sigma^2)$, write it as a
# deterministic function of the parameters and an independent noise: $z = \mu + \sigma \odot \epsilon$, $\epsilon \sim \mathcal{N}(0, I)$
# — the same move as $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$ in chapter 01. The encoder outputs $\log\sigma^2$ (any real number)
# rather than $\sigma$ (which must be positive).
#
# **Exercise: reparameterise.** Replace the `raise` with `reparameterise(mu, logvar, eps)`. Until you write it the check
# says "not attempted" and the notebook runs on; solutions: `notebooks/solutions/03_solutions.ipynb`.

# %%
def reparameterise(mu, logvar, eps):
    raise NotImplementedError("your turn: one line (solution: notebooks/solutions/03_solutions.ipynb)")


check_reparameterise(reparameterise)

# %% [markdown]
# ## 2. The KL between two Gaussians, step by step
#
# For one latent dimension, $q = \mathcal{N}(\mu, \sigma^2)$ and $p = \mathcal{N}(0, 1)$:
#
# $$\mathrm{KL}(q\,\|\,p) = \mathbb{E}_q[\log q(z) - \log p(z)]
# = \mathbb{E}_q\Big[-\tfrac12\log(2\pi\sigma^2) - \tfrac{(z-\mu)^2}{2\sigma^2} + \tfrac12\log(2\pi) + \tfrac{z^2}{2}\Big]$$
#
# Use $\mathbb{E}_q[(z-\mu)^2] = \sigma^2$ and $\mathbb{E}_q[z^2] = \mu^2 + \sigma^2$:
#
# $$\mathrm{KL} = -\tfrac12\log\sigma^2 - \tfrac12 + \tfrac12(\mu^2 + \sigma^2)
# = -\tfrac12\big(1 + \log\sigma^2 - \mu^2 - \sigma^2\big)$$
#
# and for a diagonal Gaussian the dimensions add up (Kingma & Welling 2014, appendix B). With `log_var` $= \log\sigma^2$
# this is the famous line `kld = -0.5 * sum(1 + log_var - mu**2 - exp(log_var))`. It is zero exactly when
# $\mu = 0, \sigma = 1$, and positive otherwise.
#
# **Exercise: the KL term.** Write `kl(mu, logvar)` returning one value per sample (sum over all latent dims).

# %%
def kl(mu, logvar):
    raise NotImplementedError("your turn: the closed form above, summed over dims 1..")


check_kl(kl)

# %% [markdown]
# The closed form against a Monte Carlo estimate $\frac1N\sum_i \log q(z_i) - \log p(z_i)$ with $z_i \sim q$, for a random
# 4×8×8 posterior like the ones below:

# %%
g = torch.Generator().manual_seed(0)
mu, logvar = 0.5 * torch.randn(1, 4, 8, 8, generator=g), 0.3 * torch.randn(1, 4, 8, 8, generator=g) - 0.5
posterior = DiagonalGaussian(mu, logvar)
z = mu + torch.exp(0.5 * logvar) * torch.randn(20_000, 4, 8, 8, generator=g)          # (N, 4, 8, 8) samples of q
log_q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum((1, 2, 3))
log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum((1, 2, 3))
mc = (log_q - log_p)
kld = -0.5 * torch.sum(1 + logvar - mu**2 - torch.exp(logvar))              # the famous line
print(f"closed form {kld.item():.3f} nats (DiagonalGaussian.kl: {posterior.kl().item():.3f}) | Monte Carlo "
      f"{mc.mean():.3f} ± {mc.std() / len(mc) ** 0.5:.3f}")

# %% [markdown]
# ## 3. A latent space you can draw: the 2-D MLP VAE
#
# An MLP encoder maps the 1,024 pixels to $(\mu, \log\sigma^2) \in \mathbb{R}^2 \times \mathbb{R}^2$, an MLP decoder maps $z \in \mathbb{R}^2$ back. First its
# forward pass written by hand from `minildm.models.vae.MLPVAE`'s weights, checked against the module:

# %%
torch.manual_seed(0)
mlp = MLPVAE(MLPVAEConfig(latent_dim=2, hidden=512))
enc, dec = mlp.encoder, mlp.decoder


def my_mlp_vae(x, eps):
    h = x.flatten(1)                                                           # (B, 1024)
    h = F.silu(F.linear(h, enc[1].weight, enc[1].bias))                        # (B, 512)
    h = F.silu(F.linear(h, enc[3].weight, enc[3].bias))
    mu, logvar = F.linear(h, enc[5].weight, enc[5].bias).chunk(2, dim=1)       # 2 x (B, 2)
    z = mu + torch.exp(0.5 * logvar) * eps                                     # (B, 2), reparameterised
    h = F.silu(F.linear(z, dec[0].weight, dec[0].bias))
    h = F.silu(F.linear(h, dec[2].weight, dec[2].bias))
    return F.linear(h, dec[4].weight, dec[4].bias).reshape(-1, 1, 32, 32), mu, logvar   # (B, 1, 32, 32)


x = x0_test[:8]
eps = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
mine, mu, logvar = my_mlp_vae(x, eps)
ref = mlp(x, generator=torch.Generator().manual_seed(1))
print("max |mine - minildm|:", (mine - ref.reconstruction).abs().max().item())
assert torch.allclose(mine, ref.reconstruction, atol=1e-5) and torch.allclose(mu, ref.posterior.mu)

# %% [markdown]
# Train it with $\beta = 0.02$ — the true ELBO for a Gaussian decoder with $\sigma = 0.1$ (section 1) — using the same loop
# as the reference VAE (`minildm.vae_training.train_vae`):

# %%
result = train_vae(mlp, torch.utils.data.TensorDataset(x0_train),
                   VAETrainConfig(steps=MLP_STEPS, batch_size=128, lr=1e-3, beta=0.02, recon="mse"), device=device)
print(f"{result.images_seen:,} images in {result.seconds:.0f} s")
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
viz.plot_loss(result.history["recon"], title="reconstruction (MSE per pixel)", ax=axes[0])
viz.plot_loss(result.history["kl"], title="KL (nats per pixel)", ax=axes[1])
plt.tight_layout(); plt.show()

# %%
mlp.eval()
with torch.no_grad():
    mu_test = torch.cat([mlp.encode(x0_test[i:i + 1000].to(device)).mu.cpu() for i in range(0, 10000, 1000)])
    side = np.linspace(-2.5, 2.5, 15)
    zz = torch.tensor([[a, b] for b in side[::-1] for a in side], dtype=torch.float32)   # (225, 2), row-major
    manifold = mlp.decode(zz.to(device)).clamp(-1, 1).cpu()
fig, axes = plt.subplots(1, 2, figsize=(13, 6))
sc = axes[0].scatter(mu_test[:, 0], mu_test[:, 1], c=labels_test, cmap="tab10", s=2)
axes[0].legend(sc.legend_elements()[0], data.CLASS_NAMES, fontsize=7, markerscale=1.5, loc="upper right")
axes[0].set_title("test set, posterior means mu (2-D latent)"); axes[0].set_xlabel("z1"); axes[0].set_ylabel("z2")
axes[1].imshow(viz.grid_array(manifold, nrow=15, padding=0), cmap="gray")
axes[1].set_title("decoded grid z in [-2.5, 2.5]^2"); axes[1].axis("off")
plt.tight_layout(); plt.show()

# %% [markdown]
# Classes form regions (footwear on one side, tops overlapping each other), and the decoded grid changes
# smoothly: every point of the prior decodes to *something*. But two numbers cannot hold a garment's details —
# the reconstructions are blurry class averages. Latent diffusion wants the opposite trade: a latent big enough
# to keep the details, regularised just enough to have a known scale.

# %% [markdown]
# ## 4. The convolutional VAE with spatial latents
#
# Latent diffusion's first stage (Rombach et al. 2022, sec. 3.1) keeps the latent an *image*: a 32×32×1 garment
# becomes a 4×8×8 tensor (downsampling factor $f = 4$; 256 numbers for 1,024 pixels), so the diffusion UNet can run on
# it unchanged. The encoder is ResNet blocks with stride-2 downsampling ending in $2 \times 4$ channels ($\mu$, $\log\sigma^2$);
# the decoder mirrors it. The shipped reference was trained with an l1 reconstruction loss, a tiny KL weight
# $\beta = 10^{-6}$ (LDM's `kl_weight`); a patch discriminator was tried and measured worse (the variants table below).

# %%
vae = checkpoints.load_model(VAE, checkpoints.find("vae"), device=device)
meta = vae.meta
print(f"VAE: {sum(p.numel() for p in vae.parameters()):,} parameters, config {vae.config}")
print({k: meta[k] for k in ("steps", "images_seen", "wall_clock_s", "device", "latent_scale")})

# %% [markdown]
# Its loss on one batch, by hand from the pieces above, against `minildm.models.vae.vae_loss`:

# %%
x = x0_test[:64].to(device)
out = vae(x, generator=torch.Generator().manual_seed(0))
mu, logvar = out.posterior.mu, out.posterior.logvar                            # (64, 4, 8, 8) each
kld = -0.5 * torch.sum(1 + logvar - mu**2 - torch.exp(logvar), dim=(1, 2, 3))  # (64,) nats per image
by_hand = (x - out.reconstruction).abs().mean() + 1e-6 * kld.mean() / 1024      # l1 + beta * KL per pixel
print(f"by hand {by_hand.item():.6f} | vae_loss {vae_loss(x, out, beta=1e-6, recon='l1').loss.item():.6f}")
assert torch.allclose(by_hand, vae_loss(x, out, beta=1e-6, recon="l1").loss)

# %%
x = x0_test[:12]
rec = reconstruct(vae, x)
with torch.no_grad():
    z = vae.encode(x.to(device)).mode().cpu()                                   # (12, 4, 8, 8)
viz.show_grid(torch.cat([x, rec]), nrow=12, title="test images (top) and their reconstructions (bottom)")
plt.show()
fig, axes = plt.subplots(4, 5, figsize=(7, 5.8))
for i in range(4):
    axes[i, 0].imshow(x[i, 0], cmap="gray"); axes[i, 0].set_title("image" if i == 0 else "", fontsize=8)
    for c in range(4):
        axes[i, c + 1].imshow(z[i, c], cmap="RdBu_r")
        axes[i, c + 1].set_title(f"latent channel {c}" if i == 0 else "", fontsize=8)
for ax in axes.flat:
    ax.axis("off")
plt.suptitle("the 4 latent channels (8x8) of four garments"); plt.tight_layout(); plt.show()

# %% [markdown]
# The latent channels are still recognisably the garment — small, blocky images. That spatial structure is what
# lets a convolutional UNet denoise them. Live metrics on a test slice (the benchmark below uses all 10,000;
# PSNR is measured on the 28×28 image area, without the padding):

# %%
rec_eval = reconstruct(vae, x0_test[:N_EVAL])
live = {"PSNR (dB)": metrics.psnr(rec_eval, x0_test[:N_EVAL], border=2),
        "SSIM": metrics.ssim(rec_eval, x0_test[:N_EVAL], border=2),
        "classifier accuracy on reconstructions": metrics.class_accuracy(rec_eval, labels_test[:N_EVAL])["overall"],
        "classifier accuracy on the originals": metrics.class_accuracy(x0_test[:N_EVAL], labels_test[:N_EVAL])["overall"]}
for k, v in live.items():
    print(f"{k:<42}{v:.4f}  (n = {N_EVAL})")

# %% [markdown]
# ## 5. What the KL weight does: a rate–distortion sweep
#
# The KL is the **rate** — how many nats the latent carries about the image beyond the prior — and the
# reconstruction error the **distortion**. Tiny VAEs (same architecture, 8 base channels, MSE) trained for the
# same few hundred steps at four values of $\beta$, from LDM's $10^{-6}$ to the plain ELBO's $\beta = 1$ ($\sigma \approx 0.71$):

# %%
betas = (1e-6, 1e-2, 1e-1, 1.0)
sweep = {}
sub = torch.utils.data.TensorDataset(x0_train[:20_000])
for beta in tqdm(betas, desc="beta sweep"):
    torch.manual_seed(0)
    tiny = VAE(VAEConfig(base_channels=8))
    train_vae(tiny, sub, VAETrainConfig(steps=SWEEP_STEPS, batch_size=64, lr=2e-3, beta=beta, recon="mse"),
              device=device, progress=False)
    with torch.no_grad():
        post = tiny.encode(x0_test[:500].to(device))
        r = tiny.decode(post.mode()).clamp(-1, 1).cpu()
    sweep[beta] = {"psnr": metrics.psnr(r, x0_test[:500], border=2), "rate": post.kl().mean().item(),
                   "latent_std": post.sample(torch.Generator().manual_seed(0)).std().item(), "rec": r[:8]}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
axes[0].plot([sweep[b]["rate"] for b in betas], [sweep[b]["psnr"] for b in betas], "o-")
for b in betas:
    axes[0].annotate(f"beta={b:g}", (sweep[b]["rate"], sweep[b]["psnr"]), fontsize=8)
axes[0].set_xscale("log"); axes[0].set_xlabel("rate: KL per image (nats)"); axes[0].set_ylabel("PSNR (dB)")
axes[0].set_title(f"rate-distortion ({SWEEP_STEPS} steps each)")
axes[1].bar([f"{b:g}" for b in betas] + ["shipped vae"], [sweep[b]["latent_std"] for b in betas] + [1 / meta["latent_scale"]])
axes[1].set_xlabel("beta"); axes[1].set_title("std of posterior samples (unscaled)")
plt.tight_layout(); plt.show()
viz.show_grid(torch.cat([sweep[b]["rec"] for b in betas]), nrow=8, title="reconstructions, one row per beta (top: 1e-6)")
plt.show()
print(f"{'beta':>8}{'rate (nats/image)':>19}{'PSNR dB':>9}{'latent std':>12}")
for b in betas:
    print(f"{b:>8g}{sweep[b]['rate']:>19.1f}{sweep[b]['psnr']:>9.2f}{sweep[b]['latent_std']:>12.3f}")

# %% [markdown]
# Read the table: the rate falls by orders of magnitude as $\beta$ grows, and the distortion rises once the KL starts to
# bind — the latent is squeezed towards $\mathcal{N}(0, I)$ at the price of detail. A tiny $\beta$ keeps the details but
# leaves the latent's scale to the training run: the shipped VAE, trained 10× longer with $\beta = 10^{-6}$, ended with
# latents well away from unit std (the last bar, $1 /$ its stored scale). Latent diffusion takes the tiny $\beta$ and fixes the scale afterwards — the
# diffusion model assumes unit-variance data (its $x_T \sim \mathcal{N}(0, I)$ must be comparable to the signal).

# %% [markdown]
# ## 6. The latent scale factor
#
# Rombach et al. (appendix G) rescale latents by $1/\hat\sigma$, the standard deviation of the training latents, so that
# $z \cdot \text{scale}$ has unit variance. Stable Diffusion v1's famous `0.18215` is that number *for its own VAE*; ours must be
# computed (`minildm.models.vae.latent_scale`) and is stored with the checkpoint.
#
# **Exercise: the latent scale.** Write `scale_of(z)`: one number for a whole tensor of latents.

# %%
def scale_of(z):
    raise NotImplementedError("your turn: one number for all elements")


check_latent_scale(scale_of)

# %%
scale_live = latent_scale(vae, x0_train[:N_EVAL], generator=torch.Generator().manual_seed(0))
print(f"latent scale: stored {meta['latent_scale']:.4f} (10,000 training images) | recomputed on {N_EVAL}: {scale_live:.4f}")
with torch.no_grad():
    z_scaled = torch.cat([vae.encode(x0_test[i:i + 500].to(device)).sample(torch.Generator().manual_seed(i)).cpu()
                          for i in range(0, N_EVAL, 500)]) * meta["latent_scale"]
plt.figure(figsize=(5, 3))
plt.hist(z_scaled.flatten().numpy(), bins=100, density=True, alpha=0.7, label="scaled test latents")
grid_z = np.linspace(-4, 4, 200)
plt.plot(grid_z, np.exp(-grid_z**2 / 2) / np.sqrt(2 * np.pi), label="N(0, 1)")
plt.legend(); plt.title(f"z * scale: mean {z_scaled.mean():.3f}, std {z_scaled.std():.3f}"); plt.show()

# %% [markdown]
# ## 7. Walking through latent space
#
# Decode the straight line between the latents of two garments:

# %%
pairs = [(labels_test == 7).nonzero()[0].item(), (labels_test == 9).nonzero()[0].item(),   # sneaker -> ankle boot
         (labels_test == 0).nonzero()[0].item(), (labels_test == 3).nonzero()[0].item()]   # T-shirt -> dress
alphas = torch.linspace(0, 1, 9)
rows = []
with torch.no_grad():
    for a, b in (pairs[:2], pairs[2:]):
        za, zb = (vae.encode(x0_test[i:i + 1].to(device)).mode() for i in (a, b))       # (1, 4, 8, 8) each
        rows.append(vae.decode(torch.cat([(1 - t) * za + t * zb for t in alphas])).clamp(-1, 1).cpu())
viz.show_grid(torch.cat(rows), nrow=9, title="linear interpolation in latent space")
plt.show()

# %% [markdown]
# ## 8. Sampling from the prior — and why that is not enough
#
# A VAE is a generative model: draw $z \sim \mathcal{N}(0, I)$, undo the scale, decode. With a tiny $\beta$, though, the
# aggregate posterior of the training latents is far from $\mathcal{N}(0, I)$ even after scaling — the scale fixes only
# the variance, not the shape — so prior samples decode to texture soup:

# %%
with torch.no_grad():
    z_prior = torch.randn(1000, 4, 8, 8, generator=torch.Generator().manual_seed(0)) / meta["latent_scale"]
    prior_samples = torch.cat([vae.decode(z_prior[i:i + 500].to(device)).clamp(-1, 1).cpu() for i in range(0, 1000, 500)])
viz.show_grid(prior_samples[:16], nrow=16, title="VAE samples from the prior N(0, I)")
plt.show()
prior_fid = metrics.fid_report(prior_samples)
print(f"prior samples: feature-FID {prior_fid['fid']:.2f}, floor {prior_fid['fid_floor']:.3f}, "
      f"ratio {prior_fid['fid_ratio']:.0f} (n = 1,000)")

# %% [markdown]
# The decoder is good (section 4); the prior is the problem. Chapter 04 replaces $\mathcal{N}(0, I)$ by a diffusion
# model trained on the scaled latents — a learned prior — and decodes its samples with this same VAE.

# %% [markdown]
# ## 9. The same idea in diffusers: `AutoencoderKL`
#
# diffusers' `AutoencoderKL` is Stable Diffusion's first stage. A small one (3 levels, $f = 4$, 4 latent channels) and
# minildm's `VAE` at a similar size, trained on the same batches for the same number of steps:

# %%
from diffusers import AutoencoderKL

torch.manual_seed(0)
peer = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
                     up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 64), layers_per_block=1,
                     latent_channels=4, norm_num_groups=8, sample_size=32).to(device)
torch.manual_seed(0)
ours = VAE(VAEConfig(base_channels=24)).to(device)
print(f"AutoencoderKL {sum(p.numel() for p in peer.parameters()):,} params | minildm VAE "
      f"{sum(p.numel() for p in ours.parameters()):,} params")
comparison = {}
for name, model in (("diffusers AutoencoderKL", peer), ("minildm VAE", ours)):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.9))
    g = torch.Generator().manual_seed(0)                                          # the same batches for both
    start = time.perf_counter()
    for step in tqdm(range(PEER_STEPS), desc=name):
        x = x0_train[torch.randint(0, 60000, (64,), generator=g)].to(device)
        if name.startswith("diffusers"):
            post = model.encode(x).latent_dist
            x_rec, kl_term = model.decode(post.sample(generator=g)).sample, post.kl().mean()
        else:
            out = model(x, generator=g)
            x_rec, kl_term = out.reconstruction, out.posterior.kl().mean()
        loss = (x - x_rec).abs().mean() + 1e-6 * kl_term / 1024                    # l1 + beta * KL per pixel
        opt.zero_grad(); loss.backward(); opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        xs = x0_test[:N_EVAL].to(device)
        if name.startswith("diffusers"):
            r = torch.cat([model.decode(model.encode(xs[i:i + 500]).latent_dist.mode()).sample for i in range(0, len(xs), 500)])
        else:
            r = torch.cat([model.decode(model.encode(xs[i:i + 500]).mode()) for i in range(0, len(xs), 500)])
    comparison[name] = {"PSNR (dB)": metrics.psnr(r.clamp(-1, 1).cpu(), x0_test[:N_EVAL], border=2),
                        "train images/s": PEER_STEPS * 64 / seconds}
print(f"{'':<26}{'PSNR (dB)':>10}{'train img/s':>13}   after {PEER_STEPS} steps of 64, n = {N_EVAL}")
for name, r in comparison.items():
    print(f"{name:<26}{r['PSNR (dB)']:>10.2f}{r['train images/s']:>13.0f}")

# %% [markdown]
# Same idea, same loss; diffusers adds attention in the bottleneck and more ResNet blocks per decoder level. At a
# few minutes of CPU both are far from the reference — the shipped VAE saw tens of thousands of batches.

# %% [markdown]
# ## 10. Variants: what buys a sharper reconstruction
#
# Blur costs far more in feature-FID than in PSNR — and reconstruction FID is a floor under every latent
# diffusion model decoded by this VAE. Measured with `python -m minildm bench vae vae_l1_1000 ...` on all 10,000 test
# images: snapshots of the reference run (exported with `minildm train vae --export-only --export-name NAME`), with the
# l1 + KL loss up to step 3,000, and at step 3,500 after 500 steps with a patch discriminator (LDM's adaptive weight
# × 0.5, hinge loss) added at step 3,000 — the recipe's original plan.

# %%
results_path = Path("../results/metrics.json")
results = json.loads(results_path.read_text()) if results_path.exists() else {}
variants = sorted((r for r in results.values() if r.get("sampler") == "reconstruction"),
                  key=lambda r: r.get("train_steps") or 0)
print(f"{'variant':<14}{'steps':>7}{'loss':>16}{'PSNR dB':>9}{'SSIM':>8}{'class acc':>11}{'rec. FID':>10}{'floor':>8}{'ratio':>7}")
for r in variants:
    tc = r.get("train_config") or {}
    gan = tc.get("disc_weight") and (r.get("train_steps") or 0) > tc.get("disc_start", 0)
    loss = f"{tc.get('recon')} + KL" + (" + GAN" if gan else "")
    print(f"{r['model']:<14}{r.get('train_steps') or 0:>7,}{loss:>16}{r['psnr_db']:>9.2f}{r['ssim']:>8.4f}"
          f"{r['class_accuracy']:>11.4f}{r['fid']:>10.3f}{r['fid_floor']:>8.3f}{r['fid_ratio']:>7.2f}")

# %% [markdown]
# Longer l1 training keeps paying off, while the discriminator, added without LDM's perceptual (LPIPS) loss
# beside it, dragged the reconstruction error up at once and made PSNR, accuracy and reconstruction FID worse. So
# the shipped `vae` is the l1 + KL model at 3,000 steps, and the GAN stays an option (`disc_weight`) for
# experiments: a smaller weight, a later start, or a perceptual loss are the usual remedies (exercise 6).

# %% [markdown]
# **VQ regularisation.** The LDM paper offers a second first stage: a VQ-GAN, whose encoder output is snapped to the
# nearest of $K$ learned codebook vectors (van den Oord et al. 2017) instead of being pulled towards $\mathcal{N}(0, I)$ by a
# KL. It avoids the KL's scale question entirely (codes live where the codebook is) at the price of a codebook loss
# and a commitment loss; the LDM paper found both work, with the quantisation absorbed into the decoder.

# %% [markdown]
# ## Metrics
#
# The shipped `vae` (card: `data/checkpoints/vae.md`), from `python -m minildm bench vae`. Targets (issue: chapter 03):
# PSNR ≥ 26 dB, classifier accuracy on reconstructions ≥ 0.90, reconstruction FID ≤ 3× its floor, scaled latents of unit scale.

# %%
shipped = results.get("vae / reconstruction / n=10000")
if shipped:
    for key, goal in (("psnr_db", "≥ 26"), ("class_accuracy", "≥ 0.90"), ("fid_ratio", "≤ 3"), ("scaled_latent_std", "≈ 1")):
        print(f"{key:<20}{shipped[key]:>10.4f}   target {goal}")
    print(f"n = {shipped['n_samples']:,}, measured {shipped['date']} on {shipped['device']}")

# %% [markdown]
# ## Exercises
# 1. **Reparameterise** (section 1, `check_reparameterise`).
# 2. **The KL term** (section 2, `check_kl`).
# 3. **The latent scale** (section 6, `check_latent_scale`).
# 4. Retrain the 2-D VAE with $\beta = 1$ and with $\beta = 10^{-4}$. How do the scatter plot and the decoded grid change, and why?
# 5. Compute the latent scale with `sample=False` (posterior means). Why is it a little larger than with samples?
# 6. Train the GAN variant with `VAETrainConfig(disc_weight=0.05, disc_start=...)` from the shipped weights and compare
#    its row with `minildm bench`. Does a weaker discriminator help reconstruction FID?
#
# ## Summary
# - The ELBO = reconstruction − KL; the KL keeps the latent space filled and its scale known.
# - $\mathrm{KL}(\mathcal{N}(\mu,\sigma^2)\,\|\,\mathcal{N}(0,1)) = -\frac12(1 + \log\sigma^2 - \mu^2 - \sigma^2)$, summed over dimensions.
# - Latent diffusion's VAE uses a spatial latent (4×8×8 here), a tiny KL weight and a computed latent scale.
# - Its prior samples are poor: the next chapter learns the prior with diffusion.
#
# **Further reading.** Kingma & Welling (2014), *Auto-Encoding Variational Bayes*; Higgins et al. (2017), *β-VAE*;
# Rombach et al. (2022), *High-Resolution Image Synthesis with Latent Diffusion Models* (sec. 3.1, appendix G);
# Esser et al. (2021), *Taming Transformers* (the patch discriminator). Next: **04 · latent diffusion**.
