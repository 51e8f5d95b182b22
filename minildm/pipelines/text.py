"""Text-to-image latent diffusion: prompt -> text encoder -> UNet with cross-attention on latents -> VAE decode.

The function follows diffusers' `StableDiffusionPipeline.__call__` step by step, with the loop in sight:

    1. encode the prompt, and the negative prompt (or the empty prompt "")      -> (B, L, D) states + masks
    2. scheduler.set_timesteps(num_inference_steps)
    3. z_T ~ N(0, I) * scheduler.init_noise_sigma                                 (prepare_latents)
    4. for t in scheduler.timesteps:
           eps_uncond, eps_cond = unet(cat([z_t, z_t]), t, cat([neg, text]), cat([neg_mask, mask])).chunk(2)
           eps = eps_uncond + s * (eps_cond - eps_uncond)                        # the CFG line
           z_t = scheduler.step(eps, t, z_t).prev_sample
    5. images = vae.decode(z_0 / latent_scale)

A negative prompt's states replace the empty prompt's in the unconditional half, so guidance pushes away from it.

References: Rombach et al. (2022), sec. 3.3 (cross-attention conditioning); Ho & Salimans (2022), eq. (6);
diffusers' `StableDiffusionPipeline.__call__` and `encode_prompt`. Derived in notebooks/05_text_conditioning_cfg.ipynb.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from minildm.pipelines.diffusion import initial_noise
from minildm.pipelines.guided import _check_real


class TextSampleOutput(NamedTuple):
    images: torch.Tensor     # (B, 1, H, W) decoded, in [-1, 1]
    latents: torch.Tensor    # (B, C, h, w) the final scaled latents z_0


def _as_list(prompts, name: str) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, str) for p in prompts):
        return list(prompts)
    raise TypeError(f"{name} must be a string or a non-empty list of strings, got {prompts!r:.80}.")


def encode_prompt(text_encoder, prompts, negative_prompts=None):
    """(states, mask) for `[negative or "", prompts]`, each `(2B, L, D)` / `(2B, L)`: the doubled CFG batch."""
    prompts = _as_list(prompts, "prompt")
    if negative_prompts is None:
        negative_prompts = [""] * len(prompts)
    negative_prompts = _as_list(negative_prompts, "negative_prompt")
    if len(negative_prompts) == 1 and len(prompts) > 1:
        negative_prompts = negative_prompts * len(prompts)
    if len(negative_prompts) != len(prompts):
        raise ValueError(f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts: give one, or one each.")
    text, negative = text_encoder(prompts), text_encoder(negative_prompts)       # (B, L, D) states each
    return torch.cat([negative.states, text.states]), torch.cat([negative.mask, text.mask])


@torch.no_grad()
def text_to_image(unet: torch.nn.Module, vae: torch.nn.Module, text_encoder, scheduler, prompts,
                  negative_prompts=None, guidance_scale: float = 4.0, generator: torch.Generator | None = None,
                  num_inference_steps: int | None = 50, latent_scale: float | None = None, device=None,
                  progress: bool = True) -> TextSampleOutput:
    """Images for `prompts` (a string or a list); `negative_prompts` replaces the empty prompt of CFG.

    `unet`: a text-conditional `UNet` on latents (`config.cond_dim` = the encoder's width); `text_encoder(prompts)`
    returns a `TextEncoding`; `scheduler`: minildm's or a diffusers scheduler (`clip_sample=False`).
    `guidance_scale` s: 1 = the conditional model alone, 0 = the unconditional (negative-prompt) model alone.
    Derived in notebooks/05_text_conditioning_cfg.ipynb.
    """
    c = unet.config
    if getattr(c, "cond_dim", None) is None:
        raise ValueError("this UNet takes no text (config.cond_dim is None): use a text-conditional model, "
                         "e.g. minildm.checkpoints.find('ldm_text').")
    if getattr(text_encoder, "dim", c.cond_dim) != c.cond_dim:
        raise ValueError(f"the text encoder gives {text_encoder.dim}-d token states but the UNet's cross-attention "
                         f"expects {c.cond_dim}: pair the UNet with the encoder it was trained with.")
    guidance_scale = _check_real("guidance_scale", guidance_scale, "e.g. 4.0; 1 disables guidance")
    if latent_scale is None:
        latent_scale = getattr(vae, "meta", {}).get("latent_scale")
        if latent_scale is None:
            raise ValueError("this VAE has no meta['latent_scale']; pass latent_scale= explicitly.")
    config = getattr(scheduler, "config", None)
    clip = config.get("clip_sample", False) if isinstance(config, dict) else getattr(scheduler, "clip_sample", False)
    if clip:
        raise ValueError("the scheduler clips pred_x0 to [-1, 1], but scaled latents are unit-variance: build it "
                         "with clip_sample=False.")
    device = torch.device(device) if device is not None else next(unet.parameters()).device
    unet.eval(), vae.eval()
    # 1. encode the prompt and the negative (or empty) prompt, as StableDiffusionPipeline.encode_prompt
    states, mask = encode_prompt(text_encoder, prompts, negative_prompts)            # (2B, L, D), (2B, L)
    states, mask = states.to(device).float(), mask.to(device)
    b = states.shape[0] // 2
    # 2. set the timesteps; 3. prepare the latents
    scheduler.set_timesteps(num_inference_steps)
    shape = (b, c.in_channels, c.image_size, c.image_size)                           # (B, C_z, h, w)
    z_t = initial_noise(shape, generator, device) * scheduler.init_noise_sigma
    # 4. the denoising loop with classifier-free guidance
    for t in tqdm(scheduler.timesteps, desc="text-to-image", disable=not progress, leave=False):
        z_in = torch.cat([z_t, z_t])                                                 # (2B, C_z, h, w)
        if hasattr(scheduler, "scale_model_input"):
            z_in = scheduler.scale_model_input(z_in, t)
        eps_uncond, eps_cond = unet(z_in, t.to(device), states, mask).chunk(2)      # (B, C_z, h, w) each
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)                  # the CFG line
        z_t = scheduler.step(eps, t, z_t, generator=generator).prev_sample
    # 5. decode with 1 / latent_scale
    images = vae.decode(z_t / latent_scale).clamp(-1, 1)                             # (B, 1, H, W)
    return TextSampleOutput(images, z_t)


__all__ = ["TextSampleOutput", "encode_prompt", "text_to_image"]
