# %% [markdown]
# # 02 · Class-conditional generation and classifier-free guidance
#
# *Draft: runs once the `ddpm_cond` reference checkpoint meets its targets; then move it to `notebooks/_src/`.*
#
# **What you'll build.** From "any garment" to "a sneaker, please". First the standard recipe with the real
# ecosystem — diffusers' `UNet2DModel` with class embeddings and its `DDPMScheduler` — then minildm's own
# conditional UNet trained with label dropout, sampled with **classifier-free guidance** (CFG). You will
# measure the fidelity/diversity trade-off that the guidance scale controls, see which garments the model
# confuses, and steer samples towards a brightness without retraining.
#
# **Prerequisites.** Notebook 01 (DDPM, DDIM, the UNet).

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minildm import checkpoints, data, metrics, runtime, viz
from minildm.exercises import check_cfg
from minildm.models.unet import UNet
from minildm.pipelines.guided import brightness_guided_sample, guided_sample, mean_brightness
from minildm.schedulers import DDIMScheduler

device = runtime.default_device()
DEMO_STEPS = runtime.budget(full=300, quick=5)
N_EVAL = runtime.budget(full=1000, quick=20)      # samples per guidance scale in the sweep
x0_train, labels_train = data.load_tensors("train").tensors

# %% [markdown]
# ## 1. Conditioning is just another input
#
# A conditional model learns $p(x \mid y)$: the denoiser becomes $\epsilon_\theta(x_t, t, y)$. The timestep is already a
# condition — it enters every ResNet block through its embedding — so the simplest way to add a class label is
# to give it an embedding of the same width and **add** it to the time embedding:
#
# $$e = \text{MLP}(\text{sinusoid}(t)) + E[y], \qquad E \in \mathbb{R}^{(K+1) \times d}$$
#
# The extra row $K$ (here $K = 10$) is the **null class** $\varnothing$, used below for classifier-free guidance.

# %% [markdown]
# ## 2. The standard recipe with diffusers
#
# The Hugging Face ecosystem's way: `UNet2DModel(num_class_embeds=...)` and a `DDPMScheduler`, images padded
# 28 → 32, AdamW, and a training loop you write yourself.

# %%
from diffusers import DDPMScheduler as DiffusersDDPM
from diffusers import UNet2DModel

torch.manual_seed(0)
hf_model = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, layers_per_block=2,
                       block_out_channels=(32, 64, 128, 256), num_class_embeds=10,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D")).to(device)
hf_scheduler = DiffusersDDPM(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
opt = torch.optim.AdamW(hf_model.parameters(), lr=1e-3)
print(f"UNet2DModel: {sum(p.numel() for p in hf_model.parameters()):,} parameters")
g, losses = torch.Generator().manual_seed(0), []
bar = tqdm(range(DEMO_STEPS), desc="diffusers recipe")
start = time.perf_counter()
for step in bar:
    idx = torch.randint(0, len(x0_train), (64,), generator=g)
    x0, y = x0_train[idx].to(device), labels_train[idx].to(device)
    eps = torch.randn(x0.shape, generator=g).to(device)
    t = torch.randint(0, 1000, (64,), generator=g).to(device)
    pred = hf_model(hf_scheduler.add_noise(x0, eps, t), t, class_labels=y).sample
    loss = F.mse_loss(pred, eps)
    opt.zero_grad(); loss.backward(); opt.step()
    losses.append(loss.item()); bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
print(f"{DEMO_STEPS} steps in {time.perf_counter() - start:.0f} s")
viz.plot_loss(losses, title="diffusers UNet2DModel, class-conditional")
plt.show()


# %%
@torch.no_grad()
def generate_from_class(label, n=8, steps=50, seed=0):
    """The diffusers way to sample: the scheduler's loop with class labels."""
    sched = hf_scheduler
    sched.set_timesteps(steps)
    x = torch.randn((n, 1, 32, 32), generator=torch.Generator().manual_seed(seed)).to(device)
    y = torch.full((n,), label, device=device)
    for t in sched.timesteps:
        x = sched.step(hf_model(x, t, class_labels=y).sample, t, x).prev_sample
    return x.clamp(-1, 1)


fig, axes = plt.subplots(3, 1, figsize=(7, 3.4))
for ax, label in zip(axes, (0, 7, 9)):
    viz.show_grid(generate_from_class(label), nrow=8, ax=ax, title=data.CLASS_NAMES[label])
plt.tight_layout(); plt.show()

# %% [markdown]
# After a few minutes on a CPU the samples are blobs with the right rough shape. The comparison that counts —
# both models trained on the same number of images on the same machine — is in the metrics table at the end.

# %% [markdown]
# ## 3. Guidance: classifier guidance, then classifier-free
#
# **Classifier guidance** (Dhariwal & Nichol 2021) trains a separate classifier $p_\phi(y \mid x_t)$ on noisy images
# and adds its gradient to the score: $\nabla_{x_t} \log p(x_t \mid y) = \nabla_{x_t} \log p(x_t) + s\,\nabla_{x_t} \log p_\phi(y \mid x_t)$.
# It works, but needs a noise-aware classifier.
#
# **Classifier-free guidance** (Ho & Salimans 2022) trains one network for both $\epsilon_\theta(x_t, t, y)$ and
# $\epsilon_\theta(x_t, t, \varnothing)$ by replacing the label with the null class with probability $p_\text{uncond}$ (our
# recipe: 0.1). At sampling time it extrapolates from the unconditional prediction towards the conditional one:
#
# $$\tilde\epsilon = \epsilon_\theta(x_t, t, \varnothing) + s\,\big(\epsilon_\theta(x_t, t, y) - \epsilon_\theta(x_t, t, \varnothing)\big)$$
#
# **Conventions.** Here $s = 1$ is plain conditional sampling and $s = 0$ unconditional. Ho & Salimans write
# $\tilde\epsilon = (1 + w)\,\epsilon(x_t, y) - w\,\epsilon(x_t, \varnothing)$, so $w = s - 1$ (their $w = 0$ is our $s = 1$).
# In code, the line stays visible — here it is, from `minildm.pipelines.guided.guided_sample`:
#
# ```python
# eps_uncond, eps_cond = model(torch.cat([x_t, x_t]), t, torch.cat([null, labels])).chunk(2)
# eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
# ```
#
# **Exercise: the CFG line.** Write `cfg(eps_uncond, eps_cond, guidance_scale)`; the check tests it at several
# scales and recognises the usual mistakes (swapped terms, the w convention).

# %%
def cfg(eps_uncond, eps_cond, guidance_scale):
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


check_cfg(cfg)

# %% [markdown]
# ## 4. minildm's conditional model with CFG
#
# The reference checkpoint (`python -m minildm train ddpm_cond`; card: `data/checkpoints/ddpm_cond.md`): the
# same UNet as chapter 01 with `num_classes=10`, trained with $p_\text{uncond} = 0.1$.

# %%
model = checkpoints.load_model(UNet, checkpoints.find("ddpm_cond"), device=device)
ddim = DDIMScheduler(model.meta["num_train_timesteps"], beta_schedule=model.meta["beta_schedule"])
print({k: model.meta[k] for k in ("steps", "images_seen", "wall_clock_s", "device")})
labels = torch.arange(10).repeat_interleave(10)                              # 10 of each class
grid = guided_sample(model, ddim, labels, guidance_scale=3.0, generator=torch.Generator().manual_seed(0),
                     num_inference_steps=50).images
viz.class_grid(grid, labels, per_class=10, title="one row per requested class, s = 3")
plt.show()

# %% [markdown]
# ## 5. The guidance sweep: fidelity vs diversity
#
# Larger $s$ makes samples look more like their class (accuracy up) but less varied (FID, which also measures
# diversity, eventually gets worse) — Ho & Salimans' trade-off, in miniature.

# %%
scales = (1.0, 2.0, 3.0, 5.0, 7.5)
sweep_labels = torch.arange(N_EVAL) % 10
rows, grids = [], {}
for s in scales:
    imgs = torch.cat([guided_sample(model, ddim, sweep_labels[i:i + 500], s, torch.Generator().manual_seed(i),
                                    num_inference_steps=50, progress=False).images.cpu()
                      for i in range(0, N_EVAL, 500)])
    acc, rep = metrics.class_accuracy(imgs, sweep_labels), metrics.fid_report(imgs)
    rows.append((s, rep["n_samples"], acc["overall"], rep["fid"], rep["fid_floor"], rep["fid_ratio"], acc))
    grids[s] = imgs[:20]
print(f"{'s':>5}{'n':>7}{'class acc':>11}{'FID':>9}{'floor':>9}{'ratio':>8}")
for s, n, a, f, fl, r, _ in rows:
    print(f"{s:>5}{n:>7}{a:>11.3f}{f:>9.3f}{fl:>9.3f}{r:>8.2f}")

# %%
fig, axes = plt.subplots(len(scales), 1, figsize=(9, 1.1 * len(scales)))
for ax, s in zip(axes, scales):
    viz.show_grid(grids[s], nrow=20, ax=ax); ax.set_title(f"s = {s}", fontsize=9)
plt.tight_layout(); plt.show()
fig, ax1 = plt.subplots(figsize=(5.5, 3.2))
ax1.plot(scales, [r[2] for r in rows], "o-", color="tab:blue"); ax1.set_ylabel("class accuracy", color="tab:blue")
ax2 = ax1.twinx(); ax2.plot(scales, [r[5] for r in rows], "s--", color="tab:red"); ax2.set_ylabel("FID / floor", color="tab:red")
ax1.set_xlabel("guidance scale s"); ax1.set_title(f"the CFG trade-off (n = {N_EVAL} per point)")
plt.show()

# %% [markdown]
# ## 6. What gets confused
#
# Per-class accuracy and the confusion matrix of requested (rows) vs recognised (columns) class at the best
# scale. Expect the tops — T-shirt, pullover, coat, shirt — to trade places: the classifier confuses them on
# real images too (shirt is its weakest class, 78.7% on the test set).

# %%
best = max(rows, key=lambda r: r[2] - 0.05 * r[5])
acc = best[6]
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
axes[0].bar(range(10), acc["per_class"]); axes[0].set_xticks(range(10), data.CLASS_NAMES, rotation=40, ha="right")
axes[0].set_ylim(0, 1); axes[0].set_title(f"per-class accuracy, s = {best[0]}")
conf = np.asarray(acc["confusion"], dtype=float)
axes[1].imshow(conf / conf.sum(1, keepdims=True), cmap="Blues")
axes[1].set_xticks(range(10), data.CLASS_NAMES, rotation=40, ha="right"); axes[1].set_yticks(range(10), data.CLASS_NAMES)
axes[1].set_xlabel("recognised"); axes[1].set_ylabel("requested"); axes[1].set_title("confusion (row-normalised)")
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 7. Guidance without retraining: brightness
#
# Any differentiable loss on the predicted clean image can steer sampling (the "colour guidance" of the
# Hugging Face course, for grayscale): at each step, estimate $\hat x_0$, compute
# $L = (\text{mean brightness}(\hat x_0) - b^\star)^2$, and move $x_t \leftarrow x_t - \lambda \nabla_{x_t} L$ before the scheduler step.

# %%
targets = (0.1, None, 0.6)
fig, axes = plt.subplots(len(targets), 1, figsize=(8, 3.6))
for ax, target in zip(axes, targets):
    lab = torch.full((8,), 0)
    if target is None:
        imgs = guided_sample(model, ddim, lab, 3.0, torch.Generator().manual_seed(1), num_inference_steps=30, progress=False).images
    else:
        imgs = brightness_guided_sample(model, ddim, lab, target, guidance_scale=3.0,
                                        generator=torch.Generator().manual_seed(1), num_inference_steps=30, progress=False).images
    viz.show_grid(imgs, nrow=8, ax=ax)
    ax.set_title(f"T-shirts, target brightness {target}: mean {mean_brightness(imgs).mean():.2f}", fontsize=9)
plt.tight_layout(); plt.show()

# %% [markdown]
# ## Metrics
#
# Reference numbers from `minildm bench` (`results/metrics.json`), at 5,000 samples, beside the diffusers
# recipe trained on the same number of images on the same machine.

# %%
import json
from pathlib import Path
results = json.loads(Path("../results/metrics.json").read_text())
for key, r in results.items():
    if key.startswith(("ddpm_cond", "peer_cond")):
        print(f"{key:<28} n={r['n_samples']:>5}  acc={r.get('class_accuracy', float('nan')):.3f}  "
              f"FID={r['fid']:.3f}  floor={r['fid_floor']:.3f}  ratio={r['fid_ratio']:.2f}")

# %% [markdown]
# ## Exercises
# 1. **The CFG line** (above, `check_cfg`).
# 2. **Brightness guidance.** Write your own `brightness_loss(pred_x0, target)` and guidance step; compare with
#    `brightness_guided_sample`. What happens with a very large $\lambda$?
# 3. Sample with $s = 0$, then with a negative $s$. What do "anti-sneakers" look like?
#
# ## Summary
# - A label is one more embedding added to the time embedding; the null class makes one network both
#   conditional and unconditional.
# - CFG extrapolates from unconditional to conditional predictions; $s$ trades diversity for fidelity.
# - Losses on $\hat x_0$ steer sampling without retraining.
#
# **Further reading.** Ho & Salimans (2022), *Classifier-Free Diffusion Guidance*; Dhariwal & Nichol (2021),
# *Diffusion Models Beat GANs on Image Synthesis*. Next: **03 · the VAE and the KL term**.
