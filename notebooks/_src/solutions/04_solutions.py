# %%
# Colab setup: where minildm is missing (Colab), clone the course, install it, fetch data from the Hub.
# A no-op wherever minildm is installed, e.g. after the README's quick start.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minildm") is None:
    REPO = os.environ.get("MINILDM_REPO", "https://github.com/minildm/minildm")   # the course repository
    root = os.path.abspath("minildm")
    subprocess.run(["git", "clone", "--depth", "1", REPO, root], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", root], check=True)
    sys.path.insert(0, root)                       # importable in this kernel without a restart
    os.chdir(os.path.join(root, "notebooks"))      # relative paths (../results) as in the repository
    os.environ["MINILDM_ALLOW_DOWNLOAD"] = "1"     # no local Fashion-MNIST there: use the Hugging Face Hub
# %% [markdown]
# # 04 · Solutions to the exercises
#
# The exercise of [04_latent_diffusion.ipynb](../04_latent_diffusion.ipynb) with an automatic check, solved.

# %%
import torch

from minildm.exercises import check_latent_sample

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
