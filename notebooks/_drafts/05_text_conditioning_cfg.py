# DRAFT (not built): notebook 05's source, waiting for the reference checkpoints ldm_text and ldm_text_tiny
# (`python -m minildm train ldm_text --threads 1`). Move to notebooks/_src/ when they exist.

# %% [markdown]
# # 05 · Text to image: captions, a frozen text encoder, cross-attention and classifier-free guidance
#
# **What you'll build.** The finale: a miniature Stable Diffusion, from prompt to garment. Fashion-MNIST has no
# text, so you will first write captions from what is measurable on each image (its class, and whether it is
# dark or light, small or large, plain or patterned). A frozen, pretrained text encoder (all-MiniLM-L6-v2, the role
# CLIP plays in Stable Diffusion) turns a prompt into 16 token states; the UNet of chapter 04 reads them through
# **cross-attention**; classifier-free guidance with the empty prompt — or a **negative prompt** — steers it. You
# will look at tokens, attention maps over the prompt's words, a guidance sweep, and held-out wordings that the
# model never saw, comparing the pretrained encoder with a tiny one trained from scratch.
#
# **Prerequisites.** Notebooks 02 (CFG) and 04 (latent diffusion).

# %%
import torch

from minildm import data, runtime, viz
from minildm.captions import ATTRIBUTES, AttributeThresholds, caption, captions_for, measure
from minildm.models.text import FrozenTextEncoder, TinyTextEncoder
from minildm.pipelines.text import text_to_image
from minildm.text_training import load_text_model

device = runtime.default_device()
x0_train, labels_train = data.load_tensors("train").tensors

# %% [markdown]
# ## 1. Captions from measured attributes
# (measure brightness / size / texture; terciles per class; a caption names only clear attributes; templates,
# synonyms; the held-out set; a grid of images with their captions; the attribute histograms per class)

# %% [markdown]
# ## 2. Tokens and token states
# (FrozenTextEncoder.tokenize: token id beside token text, [CLS] ... [SEP] [PAD]; states (B, 16, 384); the mask;
# truncation; the tiny encoder's word vocabulary and [UNK] for held-out words)

# %% [markdown]
# ## 3. Cross-attention
# (queries from latent positions, keys/values from tokens, Vaswani eq. (1) with the padding mask; exercise
# check_cross_attention; attention maps of the trained model over the prompt's tokens, per position)

# %% [markdown]
# ## 4. Training (a short demonstration; the reference is shipped)
# (caption_dataset, CaptionTable, TextConditionedUNet, train_diffusion with null_cond = the empty prompt)

# %% [markdown]
# ## 5. Prompt -> image, the loop of StableDiffusionPipeline.__call__ written out
# (encode prompt and empty prompt, set_timesteps, prepare latents, loop with the CFG line, decode z / s;
# check against minildm.pipelines.text.text_to_image)

# %% [markdown]
# ## 6. Guidance sweep 1, 2, 4, 12: class accuracy, attribute accuracy, FID
# ## 7. Negative prompts ("a shoe" with negative "sandal")
# ## 8. Held-out wording: frozen MiniLM vs the tiny encoder, side by side
# ## Metrics, exercises, summary
