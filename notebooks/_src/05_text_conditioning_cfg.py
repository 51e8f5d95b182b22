# %% [colab]  (the Colab setup cell, written once in tools/colab_cell.py)
# %% [markdown]
# # 05 · Text to image: captions, a frozen text encoder, cross-attention and classifier-free guidance
#
# **What you'll build.** The finale: a miniature Stable Diffusion, from prompt to garment. Fashion-MNIST has no
# text, so you first write captions from what is measurable on each image — its class, and whether it is dark or
# light, small or large, plain or patterned. A frozen, pretrained text encoder (all-MiniLM-L6-v2, in the role CLIP
# plays in Stable Diffusion) turns a prompt into 16 token states; chapter 04's latent UNet reads them through
# **cross-attention**; classifier-free guidance with the empty prompt — or with a **negative prompt** — steers it.
# You will list tokens, compute cross-attention by hand, train briefly, write the sampling loop of diffusers'
# `StableDiffusionPipeline.__call__`, look at attention maps over the prompt's words, sweep the guidance scale,
# and test wordings the model never saw, comparing the pretrained encoder with a tiny one trained from scratch.
#
# **Prerequisites.** Notebooks 02 (class conditioning, CFG) and 04 (latent diffusion).
#
# **Budget.** Minutes on a laptop CPU (the measured time is in the README's course table): a short demonstrative
# training, then the shipped reference checkpoints `ldm_text` (frozen MiniLM) and `ldm_text_tiny` (the from-scratch
# encoder), trained by `python -m minildm train ldm_text` / `ldm_text_tiny` (cards in `data/checkpoints/`). The
# 5,000-sample numbers at the end come from `python -m minildm bench ldm_text ldm_text_tiny --guidance-scale 4 -n 5000`.

# %%
import dataclasses
import json
import textwrap
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minildm import data, metrics, runtime, viz
from minildm.bench import schedulers_for
from minildm.captions import ATTRIBUTES, NOUNS, TEMPLATES, WORDS, AttributeThresholds, caption, measure
from minildm.exercises import check_cross_attention, check_garment_brightness, check_masked_mean, check_text_sample
from minildm.models.layers import CrossAttention
from minildm.models.text import FrozenTextEncoder, TinyTextEncoder
from minildm.models.unet import UNet
from minildm.pipelines.diffusion import initial_noise
from minildm.pipelines.latent import encode_latents
from minildm.pipelines.text import encode_prompt, text_to_image
from minildm.schedulers import DDPMScheduler
from minildm.text_eval import cross_attention_maps, generate_batched, prompt_set, score, sentence_probe
from minildm.text_training import TEXT_RECIPES, CaptionTable, TextConditionedUNet, caption_dataset, load_text_model
from minildm.training import train_diffusion

device = runtime.default_device()
N_ENCODE = runtime.budget(full=4000, quick=256)     # training images encoded and captioned live (the recipe: 60,000)
DEMO_STEPS = runtime.budget(full=300, quick=5)      # the short demonstrative training (batch 128)
N_EVAL = runtime.budget(full=500, quick=30)         # prompts per live measurement (the harness uses 5,000)
STEPS = runtime.budget(full=50, quick=8)            # DDIM steps
torch.manual_seed(0)
print("device:", device, "| quick mode:", runtime.is_quick())
x0_train, labels_train = data.load_tensors("train").tensors   # (60000, 1, 32, 32) in [-1, 1], (60000,)
results = json.loads(Path("../results/metrics.json").read_text())

# %% [markdown]
# ## 1. Captions from measured attributes
#
# A caption should say what is *visible*. Beside the class, three attributes are easy to see on a 28×28 garment and
# easy to measure on its pixels — those above $-0.8$ (the background is $-1$):
#
# | attribute | measured as | words |
# |---|---|---|
# | brightness | mean intensity of the garment's pixels, in $[0, 1]$ | dark, black / light, white |
# | size | fraction of the 28×28 area the garment covers | small, slim / large, wide |
# | texture | mean absolute difference of neighbouring pixels inside the garment | plain, smooth / patterned, detailed |
#
# Attributes are **relative to the class**: a large sandal is smaller than a small coat. `AttributeThresholds.fit`
# stores, per class, the training set's terciles; a caption names an attribute only when the image is clearly on
# one side (lower or upper third) and stays silent in the middle third.
#
# **Exercise: garment brightness.** Write the first measurement yourself (garment pixels only, values mapped to
# $[0, 1]$, 0 for an image without garment). Solutions: `notebooks/solutions/05_solutions.ipynb`.

# %%
def garment_brightness(x):
    raise NotImplementedError("your turn: the mean of (x + 1) / 2 over pixels above -0.8 (solution: notebooks/solutions/)")


check_garment_brightness(garment_brightness)

# %%
attrs = measure(x0_train)                                        # attribute -> (60000,)
thresholds = AttributeThresholds.fit(x0_train, labels_train)    # per class: [lower tercile, median, upper tercile]
fig, axes = plt.subplots(1, 3, figsize=(11, 2.8))
for ax, a in zip(axes, ATTRIBUTES):
    for c, color in ((0, "tab:blue"), (5, "tab:orange"), (8, "tab:green")):
        ax.hist(attrs[a][labels_train == c].numpy(), bins=50, alpha=0.5, color=color, label=data.CLASS_NAMES[c])
        for q in thresholds.values[a][c][::2]:
            ax.axvline(q, color=color, ls="--", lw=0.8)
    ax.set_title(f"{a} (dashed: the class's terciles)"); ax.legend(fontsize=7)
plt.tight_layout(); plt.show()

# %% [markdown]
# Each image gets captions from its class and its attribute sides, in several **templates** and **synonyms**; a
# second set of templates and words is kept out of training entirely (**held out**) to measure how far a text
# encoder generalises:

# %%
for split, s in (("training", 0), ("held-out", 1)):
    print(f"{split} templates: {TEMPLATES[s]}")
    print(f"{split} nouns:     {[NOUNS[c][s] for c in (7, 1, 2)]} ... ")
    print(f"{split} words:     {[WORDS[k][s] for k in (('brightness', -1), ('size', +1), ('texture', +1))]} ...")
sides = thresholds.sides(x0_train[:12], labels_train[:12])      # attribute -> (12,) in {-1, 0, +1}
fig, axes = plt.subplots(2, 6, figsize=(13, 7))
for i, ax in enumerate(axes.flat):
    asked = {a: int(sides[a][i]) for a in ATTRIBUTES}
    ax.imshow(x0_train[i, 0], cmap="gray", vmin=-1, vmax=1); ax.axis("off")
    texts = [caption(int(labels_train[i]), asked, v) for v in (0, 3)] + [caption(int(labels_train[i]), asked, 1, "heldout")]
    ax.set_title("\n".join(textwrap.fill(t, 28) for t in texts), fontsize=7)
plt.suptitle("two training captions and a held-out one per image"); plt.tight_layout(); plt.show()

# %% [markdown]
# ## 2. Tokens and token states
#
# Stable Diffusion's text encoder turns a prompt into 77 token states of width 768 (CLIP ViT-L/14). Ours,
# all-MiniLM-L6-v2 (a 6-layer BERT distilled for sentence similarity), gives 384-d states; prompts are padded to
# **16 tokens**. The WordPiece tokenizer wraps the prompt in `[CLS] ... [SEP]` and splits rare words into pieces
# (`##...`). The **attention mask** marks real tokens; cross-attention will give padding zero weight.
#
# Two additions, both after SDXL, which gives its UNet CLIP's *pooled* embedding besides the per-token states:
# all-MiniLM-L6-v2 was trained so that the **mean of its token states** (Sentence-BERT's pooling) is a sentence
# embedding in which paraphrases land close together. We append that mean as a 17th token, `[SENTENCE]`, so
# cross-attention can read the sentence's meaning as well as its words (`FrozenTextEncoder(sentence_token=True)`);
# and, as SDXL does with its pooled embedding, the UNet projects the mean of the token states and adds it to the
# time embedding, so every res block sees the sentence, not only the attention layers (`UNetConfig(pooled_text=True)`).
# `ldm_text` was trained with both.

# %%
encoder = FrozenTextEncoder(max_length=16, sentence_token=True).to(device)   # loads MiniLM (a progress bar)

# %%
# NBVAL_CHECK_OUTPUT
out = encoder(["a dark ankle boot", ""])                                # TextEncoding(states, mask, input_ids)
names, names0 = encoder.token_names(out.input_ids[0]), encoder.token_names(out.input_ids[1])
print(f"{'position':>8}  {'token id':>8}  token          mask   |  empty prompt")
for i in range(out.input_ids.shape[1]):
    print(f"{i:>8}  {out.input_ids[0, i].item():>8}  {names[i]:<14} {int(out.mask[0, i]):>4}   |  "
          f"{names0[i]:<10} {int(out.mask[1, i])}")
print("states", tuple(out.states.shape), "(B, L, D); mask", tuple(out.mask.shape))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    encoder(["a very dark and quite small plain ankle boot with a patterned heel and long laces"])
print("too long:", caught[0].message)

# %% [markdown]
# The tiny encoder trained from scratch has a word-level vocabulary built from the training captions: a held-out
# word is simply unknown.

# %%
# NBVAL_CHECK_OUTPUT
tiny_vocab = TinyTextEncoder.from_captions([caption(c, {a: s for a in ATTRIBUTES}, v) for c in range(10)
                                            for s in (-1, 0, 1) for v in range(40)])
print(f"tiny vocabulary: {len(tiny_vocab.index)} entries, e.g. {list(tiny_vocab.index)[:12]}")
for prompt in ("a dark sneaker", "a dim athletic shoe"):
    ids = tiny_vocab.tokenize(prompt)[0]
    names = {i: w for w, i in tiny_vocab.index.items()}
    print(f"{prompt!r:24} -> {[names[int(i)] for i in ids if i != 0]}")

# %% [markdown]
# Why a *pretrained* encoder can generalise: prompts that mean the same land close together in its sentence
# embedding — the `[SENTENCE]` token, the mean of the token states over the real tokens.
#
# **Exercise: mean pooling over the real tokens.** `masked_mean(states, mask)`: what builds `[SENTENCE]`.

# %%
def masked_mean(states, mask):
    raise NotImplementedError("your turn: average the states over the tokens where mask is True (solution: notebooks/solutions/)")


check_masked_mean(masked_mean)

# %%
def sentence_vectors(prompts):
    return F.normalize(encoder(prompts).states[:, -1], dim=-1)               # (B, 384): [SENTENCE], unit length


train_nouns = [NOUNS[c][0] for c in range(10)]                             # k training synonyms per class
k = len(train_nouns[0])
heldout_nouns = [NOUNS[c][1][0] for c in range(10)]
train_vecs = sentence_vectors([f"a {n}" for nouns in train_nouns for n in nouns])   # (10 k, 384)
sim = sentence_vectors([f"a {n}" for n in heldout_nouns]) @ train_vecs.T               # (10, 10 k)
sim = sim.reshape(10, 10, k).amax(-1)                                     # (held-out noun, class): best synonym
fig, ax = plt.subplots(figsize=(6, 5))
im = ax.imshow(sim.cpu(), cmap="viridis")
ax.set_xticks(range(10), ["/".join(n[:2]) for n in train_nouns], rotation=60, ha="right", fontsize=7)
ax.set_yticks(range(10), heldout_nouns)
ax.set_xlabel(f"training nouns (best of {k} synonyms)"); ax.set_ylabel("held-out noun"); plt.colorbar(im)
ax.set_title("MiniLM [SENTENCE]: cosine similarity of 'a <noun>'"); plt.tight_layout(); plt.show()
print("held-out nouns nearest to their own class's training nouns:",
      f"{(sim.argmax(1).cpu() == torch.arange(10)).sum().item()} of 10;",
      "misses:", [f"{heldout_nouns[i]} -> {train_nouns[j][0]}" for i, j in enumerate(sim.argmax(1).tolist()) if i != j])

# %% [markdown]
# A pretrained encoder generalises only to words it can *read*. WordPiece keeps about 30,000 common words and splits
# the rest into pieces: a word it has no entry for arrives as fragments whose states carry little of its meaning.

# %%
# NBVAL_CHECK_OUTPUT
for noun in heldout_nouns:
    print(f"{noun:<20} -> {encoder.tokenizer.tokenize(noun)}")

# %% [markdown]
# *parka* becomes `park ##a` and *tote* becomes `to ##te`: to MiniLM these are a park and the word "to", not a coat
# and a bag, so no amount of training the UNet can make them generalise. This is the frozen encoder's ceiling on our
# held-out set, and it is measured at the end of the chapter (per held-out noun). Stable Diffusion has the same
# limit: CLIP's BPE vocabulary (49,408 entries) decides which words it can understand.

# %% [markdown]
# ## 3. Cross-attention
#
# Self-attention (chapter 01) lets image positions look at each other. **Cross-attention** lets them look at the
# prompt: queries come from the image latents, keys and values from the token states $\tau_\theta(y)$
# (Rombach et al. 2022, eq. 3; Vaswani et al. 2017, eq. 1):
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\Big(\frac{Q K^\top}{\sqrt{d}} + M\Big) V, \qquad
# Q = W_Q\, \varphi(z_t),\; K = W_K\, \tau_\theta(y),\; V = W_V\, \tau_\theta(y),$$
#
# with $M = -\infty$ at padding tokens, so they get exactly zero weight. Each of the $h \cdot w$ positions gets its own
# distribution over the $L$ tokens: an **attention map** per token. Compute it by hand with a `CrossAttention`
# layer's weights and check that the layer gives the same output:

# %%
torch.manual_seed(0)
layer = CrossAttention(channels=32, cond_dim=384, heads=2, head_dim=32).to(device).eval()
h = torch.randn(2, 32, 4, 4, device=device)                                   # (B, C, h, w) image features
b, c, hh, ww = h.shape
with torch.no_grad():
    q = layer.to_q(h.flatten(2).transpose(1, 2))                              # (B, hw, heads*d)
    q = q.reshape(b, hh * ww, 2, 32).transpose(1, 2)                          # (B, heads, hw, d)
    L = out.states.shape[1]                                                   # 17 tokens
    k, v = layer.to_kv(out.states).reshape(b, L, 2, 2, 32).permute(2, 0, 3, 1, 4)    # 2 x (B, heads, L, d)
    logits = q @ k.transpose(-1, -2) / 32 ** 0.5                              # (B, heads, hw, L)
    logits = logits.masked_fill(~out.mask[:, None, None, :], float("-inf"))  # padding: -inf
    weights = logits.softmax(-1)                                              # (B, heads, hw, L)
    ours = (weights @ v).transpose(1, 2).reshape(b, hh * ww, 64)              # (B, hw, heads*d)
    ours = layer.to_out(ours).transpose(1, 2).reshape(b, c, hh, ww)           # (B, C, h, w)
    theirs = layer(h, out.states, out.mask)
print("by hand == CrossAttention:", torch.allclose(ours, theirs, atol=1e-5))
print("largest weight on a padding token:", (weights * ~out.mask[:, None, None, :]).max().item())
print("the empty prompt's weights (head 0, position 0):",
      {names0[j]: round(w, 3) for j, w in enumerate(weights[1, 0, 0].tolist()) if w > 0})

# %% [markdown]
# **Exercise: cross-attention with a padding mask.** `cross_attention(q, k, v, mask)` for `(B, heads, N, d)` queries.

# %%
def cross_attention(q, k, v, mask):
    raise NotImplementedError("your turn: softmax(q k^T / sqrt(d), -inf on padding) v (solution: notebooks/solutions/)")


check_cross_attention(cross_attention)

# %% [markdown]
# The UNet is chapter 04's latent UNet (8×8 → 4×4 → 2×2, 16/32/64 channels) with a cross-attention layer after the
# res blocks at 4×4 and 2×2 — the same `UNet` class, a third conditioning mode set by `cond_dim` (the encoder's
# width). Padding changes nothing, whatever its states hold (`tests/test_text.py` checks it).
#
# ## 4. Training: caption ids, a caption table, condition dropout
#
# Each training image is captioned 4 times (different templates and words); the dataset holds `(z0, caption id)`
# pairs. The frozen encoder never changes, so every distinct caption is encoded **once** into a table; a training
# step looks the states up by id. Condition dropout (10%) replaces a caption by the empty prompt `""` (id 0) — the
# unconditional model of classifier-free guidance. The loss is chapter 04's, now with $\tau_\theta(y)$:
#
# $$L = \mathbb{E}_{z_0, y, \epsilon, t}\big\|\epsilon - \epsilon_\theta(z_t, t, \tau_\theta(y))\big\|^2 .$$
#
# A short run on the first `N_ENCODE` images (the reference run: all 60,000, `minildm train ldm_text`):

# %%
unet_ref, vae, _ = load_text_model("ldm_text", device)          # the shipped model, and the VAE it was trained on
scale = vae.meta["latent_scale"]
recipe = TEXT_RECIPES["ldm_text"]
z_demo = encode_latents(vae, x0_train[:N_ENCODE], scale, progress=False)     # (N, 4, 8, 8)
demo_data, demo_captions = caption_dataset(z_demo, labels_train[:N_ENCODE], x0_train[:N_ENCODE], thresholds,
                                           variants=1)
print(f"{len(demo_data):,} (latent, caption id) pairs, {len(demo_captions):,} distinct captions, e.g.",
      [demo_captions[i] for i in demo_data.tensors[1][:3].tolist()])
table = CaptionTable(demo_captions, encoder, frozen=True)
print("caption table:", tuple(table.states.shape), "(captions, L, D), fp16")
torch.manual_seed(0)
demo = TextConditionedUNet(UNet(recipe.model), table)
print(f"text UNet: {sum(p.numel() for p in demo.unet.parameters()):,} params")
run = train_diffusion(demo, DDPMScheduler(1000, beta_schedule="cosine", clip_sample=False), demo_data,
                      dataclasses.replace(recipe.train, steps=DEMO_STEPS, checkpoint_every=10**9), device=device,
                      null_cond=0)
print(f"{DEMO_STEPS} steps in {run.seconds:.0f} s ({run.images_seen / run.seconds:.0f} latents/s)")
viz.plot_loss(run.losses, smooth=25, title=f"text UNet, {DEMO_STEPS} steps")
plt.show()

# %% [markdown]
# ## 5. Prompt → image: the loop of `StableDiffusionPipeline.__call__`, written out
#
# diffusers' pipeline does five things; here they are with the shipped `ldm_text`:
# 1. encode the prompt **and** the negative prompt (the empty prompt when there is none) → `(2B, 16, 384)`;
# 2. `scheduler.set_timesteps`; 3. prepare the latents, $z_T \sim \mathcal{N}(0, I)$ × `init_noise_sigma`;
# 4. the loop: one UNet call on the doubled batch, the CFG line, a scheduler step;
# 5. decode $z_0 / s$.

# %%
unet = unet_ref
_, ddim = schedulers_for(unet)                                # DDIM, clip_sample=False (latents)
print(f"ldm_text: {sum(p.numel() for p in unet.parameters()):,} params, {unet.meta['steps']:,} steps, "
      f"{unet.meta['wall_clock_s'] / 3600:.1f} h on {unet.meta['device']}")


@torch.no_grad()
def generate(prompts, negative_prompts, guidance_scale, generator, num_inference_steps):
    states, mask = encode_prompt(encoder, prompts, negative_prompts)         # 1. (2B, L, D): [negative, prompt]
    ddim.set_timesteps(num_inference_steps)                                  # 2.
    c = unet.config
    z_t = initial_noise((len(prompts), c.in_channels, c.image_size, c.image_size), generator, device)
    z_t = z_t * ddim.init_noise_sigma                                        # 3. (B, 4, 8, 8)
    for t in tqdm(ddim.timesteps, desc="sampling", leave=False):             # 4.
        eps_uncond, eps_cond = unet(torch.cat([z_t, z_t]), t, states.to(device), mask.to(device)).chunk(2)
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)          # the CFG line (Ho & Salimans eq. 6)
        z_t = ddim.step(eps, t, z_t).prev_sample                             # DDIM eq. (12)
    return vae.decode(z_t / scale).clamp(-1, 1)                              # 5. (B, 1, 32, 32)


prompts = [f"a {w}{n}" for n in ("ankle boot", "dress", "handbag", "sneaker") for w in ("", "dark ", "light ")
           for _ in range(2)]
ours = generate(prompts, None, 4.0, torch.Generator().manual_seed(0), STEPS)
ref = text_to_image(unet, vae, encoder, ddim, prompts, None, 4.0, torch.Generator().manual_seed(0), STEPS,
                    device=device, progress=False).images
print("our loop == minildm.pipelines.text.text_to_image:", torch.allclose(ours, ref, atol=1e-5))
viz.show_grid(ours.cpu(), nrow=6, title="rows: ankle boot, dress, handbag, sneaker; pairs: -, dark, light (s = 4)")
plt.show()

# %% [markdown]
# Attributes combine: each row asks for one class with one attribute on each side.

# %%
rows = [("dark", "light"), ("small", "large"), ("plain", "patterned")]
g = torch.Generator().manual_seed(1)
grid = []
for low, high in rows:
    for noun in ("coat", "sandal"):
        grid.append(generate([f"a {low} {noun}"] * 4 + [f"a {high} {noun}"] * 4, None, 4.0, g, STEPS).cpu())
viz.show_grid(torch.cat(grid), nrow=8, title="left 4: dark / small / plain; right 4: light / large / patterned")
plt.show()

# %% [markdown]
# ## 6. Where the words land: attention maps
#
# Record the cross-attention weights of the conditional half at every step (`minildm.text_eval.cross_attention_maps`
# re-runs each `CrossAttention` on its inputs with `return_weights=True`), average over heads, steps and the 4×4
# layers, and lay each token's map over the final image: which positions read which word.

# %%
prompt = "a dark patterned ankle boot"
e = encoder([prompt])
states, mask = e.states, e.mask                                               # (1, 17, 384), (1, 17)
real = mask[0].nonzero()[:, 0].cpu()                                          # positions of the real tokens
n_real = len(real)
ddim.set_timesteps(STEPS)
z_t = initial_noise((1, 4, 8, 8), torch.Generator().manual_seed(3), device)
neg = encoder([""])
acc = torch.zeros(n_real, 4, 4)
with torch.no_grad():
    for t in tqdm(ddim.timesteps, desc="attention maps", leave=False):
        maps = cross_attention_maps(unet, z_t, t, states, mask)              # name -> (1, heads, hw, 16)
        at4 = [w for w in maps.values() if w.shape[2] == 16]                 # the 4x4 layers
        acc += torch.stack(at4).mean((0, 2))[0].cpu()[:, real].T.reshape(n_real, 4, 4)   # (real tokens, 4, 4)
        eps_uncond, eps_cond = unet(torch.cat([z_t, z_t]), t, torch.cat([neg.states, states]),
                                    torch.cat([neg.mask, mask])).chunk(2)
        z_t = ddim.step(eps_uncond + 4.0 * (eps_cond - eps_uncond), t, z_t).prev_sample
    image = vae.decode(z_t / scale).clamp(-1, 1).cpu()[0, 0]                  # (32, 32)
acc /= len(ddim.timesteps)
names = [encoder.token_names(e.input_ids[0])[i] for i in real.tolist()]
fig, axes = plt.subplots(1, n_real + 1, figsize=(1.7 * (n_real + 1), 2.2))
axes[0].imshow(image, cmap="gray"); axes[0].set_title("sample")
for ax, name, m in zip(axes[1:], names, acc):
    ax.imshow(image, cmap="gray")
    ax.imshow(F.interpolate(m[None, None], size=32, mode="bilinear")[0, 0], cmap="jet", alpha=0.5)
    ax.set_title(f"{name}\n{m.mean():.2f}")
for ax in axes:
    ax.axis("off")
plt.suptitle(f"{prompt!r}: mean attention per token at 4x4 (value: average weight)"); plt.tight_layout(); plt.show()

# %% [markdown]
# Each map is scaled on its own; the number above it is the token's average weight. Most of the weight goes to
# `[CLS]`, which in a BERT-like encoder carries a summary of the whole sentence — much as Stable Diffusion's start
# token soaks up attention — and the rest to the content words, each read at different positions; at 4×4 the maps
# are coarse.
#
# ## 7. The guidance sweep: accuracy against FID
#
# Guidance scale 1 is the conditional model alone; larger scales push towards what the prompt says, at the cost of
# diversity. Live, on `N_EVAL` held-in prompts per scale (balanced classes, attributes asked 2/3 of the time):

# %%
sweep_prompts, sweep_labels, sweep_sides = prompt_set(N_EVAL, "train")
print("e.g.", sweep_prompts[:4])
sweep = {}
for s in tqdm((1.0, 2.0, 4.0, 12.0), desc="guidance sweep"):
    imgs = generate_batched(unet, vae, encoder, ddim, sweep_prompts, s, STEPS, device=device)
    sweep[s] = {**score(imgs, sweep_labels, sweep_sides, thresholds), "fid": metrics.fid(imgs), "images": imgs[:10]}
floor = metrics.fid_floor(N_EVAL)
print(f"{'s':>5}{'class acc':>11}{'attribute acc':>15}{'FID':>8}   (n = {N_EVAL}; real-vs-real floor {floor:.3f})")
for s, r in sweep.items():
    print(f"{s:>5g}{r['class_accuracy']:>11.3f}{r['attribute_accuracy']:>15.3f}{r['fid']:>8.3f}")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
scales = list(sweep)
axes[0].plot(scales, [sweep[s]["class_accuracy"] for s in scales], "o-", label="class accuracy")
axes[0].plot(scales, [sweep[s]["attribute_accuracy"] for s in scales], "s-", label="attribute accuracy")
axes[0].set_xscale("log", base=2); axes[0].set_xlabel("guidance scale s"); axes[0].legend()
axes[1].plot([sweep[s]["fid"] for s in scales], [sweep[s]["class_accuracy"] for s in scales], "o-")
for s in scales:
    axes[1].annotate(f"s={s:g}", (sweep[s]["fid"], sweep[s]["class_accuracy"]))
axes[1].set_xlabel(f"feature-FID (n = {N_EVAL})"); axes[1].set_ylabel("class accuracy"); axes[1].set_title("the trade-off")
plt.tight_layout(); plt.show()
viz.show_grid(torch.cat([sweep[s]["images"] for s in scales]), nrow=10, title="rows: s = 1, 2, 4, 12 (same prompts, same noise)")
plt.show()

# %% [markdown]
# ## 8. Negative prompts
#
# A negative prompt's states replace the empty prompt's in the unconditional half: the CFG line becomes
# $\hat\epsilon = \epsilon(z_t, \text{neg}) + s\,(\epsilon(z_t, \text{prompt}) - \epsilon(z_t, \text{neg}))$, which pushes
# *away* from the negative. "a shoe" is no class of ours — the model has to guess which shoe; with the negative
# "sandal" it should stop guessing sandals. The classifier tells us what was drawn:

# %%
n_neg = max(10, N_EVAL // 5)
g = torch.Generator().manual_seed(5)
plain = text_to_image(unet, vae, encoder, ddim, ["a shoe"] * n_neg, None, 4.0, g, STEPS, device=device, progress=False).images
g = torch.Generator().manual_seed(5)
negd = text_to_image(unet, vae, encoder, ddim, ["a shoe"] * n_neg, ["sandal"] * n_neg, 4.0, g, STEPS, device=device,
                     progress=False).images
for name, imgs in (("'a shoe'", plain), ("'a shoe', negative 'sandal'", negd)):
    predicted = torch.tensor(metrics.class_accuracy(imgs, torch.zeros(n_neg, dtype=torch.long))["confusion"][0])
    share = {data.CLASS_NAMES[c]: round(predicted[c].item() / n_neg, 2) for c in range(10) if predicted[c]}
    print(f"{name:<30} drawn as: {share}")
viz.show_grid(torch.cat([plain[:10], negd[:10]]).cpu(), nrow=10, title="top: 'a shoe'; bottom: negative 'sandal' (same noise)")
plt.show()

# %% [markdown]
# **Exercise: the text-to-image loop with a negative prompt.** Write section 5's loop yourself, taking the starting
# noise `z_T` and a list of negative prompts (or `None`: the empty prompt), and check it on tiny random models.

# %%
def text_sample(z_T, prompts, negative_prompts, unet, vae, text_encoder, scheduler, guidance_scale, latent_scale,
                num_inference_steps):
    raise NotImplementedError("your turn: encode [negative or '', prompt], the loop with CFG, decode (solution: notebooks/solutions/)")


check_text_sample(text_sample)

# %% [markdown]
# ## 9. Wordings it never saw: frozen MiniLM against a from-scratch encoder
#
# `ldm_text_tiny` is the same recipe and UNet — without the pooled vector in the time embedding — with a 2-layer
# word-level transformer trained jointly from scratch.
# On the training wording both learn the mapping. On held-out templates and words ("a product shot of a pale
# sweatshirt") the tiny encoder sees `[UNK]` for every new word, so it can only lean on the words it knows — and most
# held-out nouns contain one (*strappy **sandal***, *athletic **shoe***, *short **boot***, *long-sleeved **shirt***).
# MiniLM can also place a new *whole* word near known ones (*sweatshirt* near *sweater*, *slacks* near *trousers*),
# but only if its WordPiece vocabulary holds the word (section 2: *parka*, *tote*, *sundress* arrive in pieces).
# Live, on `N_EVAL` prompts of each set, s = 4; the metrics section breaks the held-out accuracy down per noun:

# %%
tiny_unet, tiny_vae, tiny_encoder = load_text_model("ldm_text_tiny", device)
_, tiny_ddim = schedulers_for(tiny_unet)
side_by_side = {}
for split in ("train", "heldout"):
    p, lab, sd = prompt_set(N_EVAL, split, seed=1)
    for name, (u, v_, enc, sch) in {"frozen MiniLM (ldm_text)": (unet, vae, encoder, ddim),
                                    "from scratch (ldm_text_tiny)": (tiny_unet, tiny_vae, tiny_encoder, tiny_ddim)}.items():
        imgs = generate_batched(u, v_, enc, sch, p, 4.0, STEPS, device=device)
        side_by_side[(name, split)] = score(imgs, lab, sd, thresholds) | {"images": imgs[:10], "prompts": p[:10]}
print(f"{'encoder':<30}{'prompts':>9}{'class acc':>11}{'attribute acc':>15}   (n = {N_EVAL}, s = 4)")
for (name, split), r in side_by_side.items():
    print(f"{name:<30}{split:>9}{r['class_accuracy']:>11.3f}{r['attribute_accuracy']:>15.3f}")
held = side_by_side[("frozen MiniLM (ldm_text)", "heldout")]
print("held-out prompts:", held["prompts"][:5])
viz.show_grid(torch.cat([held["images"], side_by_side[("from scratch (ldm_text_tiny)", "heldout")]["images"]]).cpu(),
              nrow=10, title="held-out prompts; top: frozen MiniLM, bottom: from scratch")
plt.show()

# %% [markdown]
# ## Metrics
#
# Harness numbers: `python -m minildm bench ldm_text ldm_text_tiny --guidance-scale 4 -n 5000` (5,000 prompts per set,
# DDIM-50), against the chapter's targets (frozen encoder: class accuracy ≥ 0.90 held-in, ≥ 0.80 held-out; attribute
# accuracy ≥ 0.80).

# %%
print(f"{'model':<15}{'prompts':>9}{'s':>4}{'n':>7}{'class acc':>11}{'attribute acc':>15}{'FID':>8}{'floor':>8}")
for key, r in sorted(results.items()):
    if r.get("model") in ("ldm_text", "ldm_text_tiny") and r["n_samples"] >= 5000:
        print(f"{r['model']:<15}{r['prompts']:>9}{r['guidance_scale']:>4g}{r['n_samples']:>7,}{r['class_accuracy']:>11.3f}"
              f"{r['attribute_accuracy']:>15.3f}{r['fid']:>8.3f}{r['fid_floor']:>8.3f}")

# %% [markdown]
# **A yardstick for the held-out target.** The UNet learns to read prompts from the training captions only. How
# much class information does MiniLM's reading of the held-out wording carry for *any* reader trained that way?
# Fit the simplest one — a linear probe (softmax regression) from the sentence embedding (mean-pooled token
# states, unit length) to the class — on held-in prompts, and score it on held-out prompts
# (`minildm.text_eval.sentence_probe`):

# %%
probe = sentence_probe(encoder, n_train=runtime.budget(full=5000, quick=500), n_heldout=runtime.budget(full=2000, quick=200))
print(f"linear probe on MiniLM's sentence embedding: held-in {probe['train_accuracy']:.3f}, "
      f"held-out {probe['heldout_accuracy']:.3f}")
for c, acc in enumerate(probe["heldout_accuracy_per_class"]):
    read_as = int(torch.tensor(probe["heldout_confusion"][c]).argmax())
    print(f"  {NOUNS[c][1][0]:<20}{acc:>6.2f}   most often read as: {data.CLASS_NAMES[read_as]}")

# %% [markdown]
# Where the held-out accuracy goes: one bar per held-out noun (each held-out prompt names its class with one noun),
# with the probe's accuracy per noun as a dot. Where the probe reads a noun as another class (*parka* as a sandal,
# *tote* as a top), MiniLM's states give the UNet nothing to go on; where the probe is right (*sundress*), the gap
# to it is the UNet's to close. The probe's overall held-out accuracy is the yardstick for the chapter's target.

# %%
fig, ax = plt.subplots(figsize=(10, 3.2))
ax.plot(range(10), probe["heldout_accuracy_per_class"], "ko", ms=5, label="linear probe on the sentence embedding")
for i, model in enumerate(("ldm_text", "ldm_text_tiny")):
    r = next((r for r in results.values() if r.get("model") == model and r.get("prompts") == "heldout"
              and r["n_samples"] >= 5000 and "class_accuracy_per_class" in r), None)
    if r is not None:
        ax.bar(torch.arange(10) + 0.4 * i - 0.2, r["class_accuracy_per_class"], width=0.4,
               label=f"{model} (s = {r['guidance_scale']:g})")
ax.set_xticks(range(10), [NOUNS[c][1][0] for c in range(10)], rotation=20)
ax.set_ylabel("class accuracy"); ax.set_ylim(0, 1); ax.axhline(0.8, color="gray", ls="--", lw=0.8)
ax.set_title("held-out prompts: accuracy per held-out noun (5,000 prompts, 500 per noun)"); ax.legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# ## Exercises
# 1. **Garment brightness** (section 1, `check_garment_brightness`).
# 2. **Mean pooling** (section 2, `check_masked_mean`).
# 3. **Cross-attention with a padding mask** (section 3, `check_cross_attention`).
# 4. **The text-to-image loop with a negative prompt** (section 8, `check_text_sample`).
# 5. Set the guidance scale to 0 in section 5's loop with the negative prompt "a bag". What do you get, and why is
#    it not the unconditional model?
# 6. Write a fourth attribute (e.g. *symmetric* / *asymmetric*: the difference between the image and its mirror image),
#    check that it splits each class sensibly, and add it to the captions of the demo training in section 4.
# 7. Find prompts the model gets wrong (an attribute that contradicts its class, "a large small coat", words from
#    no caption). What does the attention map of a misunderstood word look like?
# 8. (Longer) Replace MiniLM with the tiny encoder in section 4's demo training. How many steps until the two
#    loss curves separate?
#
# ## Summary
# - Captions can be *measured*: class plus attributes computed from the pixels, several templates and synonyms, and
#   a held-out wording to test generalisation. The same measurements score the generated images.
# - A frozen text encoder gives token states `(B, 16, 384)` and a mask; cross-attention lets every latent position
#   read the prompt — padding gets zero weight.
# - Training is chapter 04's, with caption ids looked up in a table encoded once; condition dropout to `""` gives
#   the unconditional model. Sampling is `StableDiffusionPipeline.__call__` in 20 lines; a negative prompt replaces
#   the empty one in the CFG line.
# - A pretrained encoder generalises to wording it never saw — as far as its tokenizer can read it; a from-scratch one
#   knows only its vocabulary. The held-out breakdown per noun shows both limits, and a linear probe on the sentence
#   embedding measures the encoder's share before a single image is generated.
#
# **Further reading.** Rombach et al. (2022), sec. 3.3 and 4.3; Saharia et al. (2022), *Imagen* (frozen text
# encoders scale); Ho & Salimans (2022), *Classifier-free diffusion guidance*; Hertz et al. (2022),
# *Prompt-to-prompt* (cross-attention maps); Reimers & Gurevych (2019), *Sentence-BERT*.
