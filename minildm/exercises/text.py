"""Exercises of notebooks/05_text_conditioning_cfg.ipynb: cross-attention with a padding mask, mean pooling over
real tokens, the garment brightness that captions and scores are built on, and the text-to-image loop with a
negative prompt.

References: Vaswani et al. (2017), eq. (1).
"""
from __future__ import annotations

from typing import Callable

import torch

from minildm.exercises._runner import F32, F64, Case, _perturbed, _randn, _run


# ---- 05_text_conditioning -------------------------------------------------------------------------
def _attention(q, k, v, mask, scale=None, fill=float("-inf"), dim=-1, after=False) -> torch.Tensor:
    q, k, v = q.double(), k.double(), v.double()
    logits = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)  # (B, h, N, L), Vaswani (1)
    m = mask[:, None, None, :]                                                            # (B, 1, 1, L)
    weights = (logits if after else logits.masked_fill(~m, fill)).softmax(dim=dim)       # (B, h, N, L)
    return (weights * m if after else weights) @ v                                        # (B, h, N, d)


def check_cross_attention(fn: Callable) -> None:
    """Check `fn(q, k, v, mask) -> out`, masked scaled dot-product attention `(B, heads, N, d)` as in `CrossAttention`.

    `q`: `(B, heads, N, d)`; `k`, `v`: `(B, heads, L, d)`; `mask`: bool `(B, L)`, True = real token, False = padding
    (zero weight). Exercise of notebooks/05_text_conditioning_cfg.ipynb.
    """
    g, cases, small = torch.Generator().manual_seed(7), [], (2, 2, 6, 5, 8)  # (B, heads, N, L, d)
    pad = lambda *n: torch.tensor([[i < k for i in range(5)] for k in n])  # noqa: E731, (B, L=5), n real tokens each
    for desc, (b, h, n, length, d), mask, dtype, big in [
            ("no padding (every token real)", small, pad(5, 5), F32, 1.0),
            ("padding: sample 0 has 3 real tokens, sample 1 has 5", small, pad(3, 5), F32, 1.0),
            ("one real token per sample (every query must return that token's value)", small, pad(1, 1), F32, 1.0),
            ("padding tokens hold huge values (x 1e3): they must get zero weight", small, pad(2, 4), F32, 1e3),
            ("head_dim d = 64, where the 1 / sqrt(d) scaling matters most", (2, 3, 16, 5, 64), pad(4, 5), F32, 1.0),
            ("float64 inputs (the output must stay float64)", small, pad(3, 5), F64, 1.0)]:
        q, k, v = (_randn(g, (b, h, m, d), dtype) for m in (n, length, length))
        v = torch.where(mask[:, None, :, None], v, v * big)  # padding values scaled: a leak shows at once
        att = lambda msk=mask, **kw: _attention(q, k, v, msk, **kw)  # noqa: E731
        mistakes = {"the logits are not scaled: divide q @ k^T by sqrt(d), d = q.shape[-1].": att(scale=1.0),
                    "you divided the logits by d; divide by sqrt(d).": att(scale=1.0 / d),
                    "the mask is ignored: padding tokens (mask False) must get zero weight, e.g. "
                    "logits.masked_fill(~mask[:, None, None, :], float('-inf')).": att(mask | True),
                    "masked logits were set to 0; set them to -inf so padding gets zero weight.": att(fill=0.0),
                    "the padding weights were zeroed after the softmax, so the rest no longer sums to 1: mask the "
                    "logits with -inf before the softmax.": att(after=True),
                    "the softmax runs over the wrong axis: normalise over the keys (dim=-1).": att(dim=-2)}
        cases.append(Case(desc, (q, k, v, mask), att(), mistakes))
    _run("cross_attention", fn, ("q", "k", "v", "mask"), cases,
         "out = softmax(q @ k.transpose(-1, -2) / sqrt(d), masked with -inf where mask is False, dim=-1) @ v.",
         nan_hint="NaN comes from a softmax over a row whose logits are all -inf: is the mask inverted (True = "
                  "real token), or the softmax over the wrong axis (it is over the keys, dim=-1)?")


def check_masked_mean(fn: Callable) -> None:
    """Check `fn(states, mask) -> pooled`: the mean of the token states over the real tokens only, `(B, D)`.

    `states`: `(B, L, D)`; `mask`: bool `(B, L)`, True = real token. Sentence-BERT's mean pooling, which turns
    all-MiniLM-L6-v2's token states into one sentence vector. Exercise of notebooks/05_text_conditioning_cfg.ipynb.
    """
    g, cases = torch.Generator().manual_seed(9), []
    pad = lambda length, *n: torch.tensor([[i < k for i in range(length)] for k in n])  # noqa: E731
    for desc, (b, length, d), mask, dtype in [("two prompts, no padding", (2, 5, 8), pad(5, 5, 5), F32),
                                              ("padding: 2 and 4 real tokens of 6", (2, 6, 8), pad(6, 2, 4), F32),
                                              ("one real token (the empty prompt's [CLS])", (3, 4, 16), pad(4, 1, 1, 3), F32),
                                              ("float64 inputs (the output must stay float64)", (2, 6, 8), pad(6, 3, 6), F64)]:
        states = _randn(g, (b, length, d), dtype)
        m = mask[..., None].double()                                                  # (B, L, 1)
        s = states.double()
        mistakes = {"the padding tokens were averaged in: weight each token by the mask.": s.mean(1),
                    "divided by the full length L: divide by the number of real tokens, mask.sum(1).":
                        (s * m).sum(1) / length,
                    "summed, not averaged: divide by the number of real tokens.": (s * m).sum(1)}
        cases.append(Case(desc, (states, mask), (s * m).sum(1) / m.sum(1), mistakes))
    _run("masked_mean", fn, ("states", "mask"), cases,
         "(states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True): a mean over the real tokens only.")


def check_garment_brightness(fn: Callable) -> None:
    """Check `fn(x) -> brightness`: the mean intensity, in [0, 1], of each image's garment pixels, `(B,)`.

    `x`: `(B, 1, H, W)` in [-1, 1]; garment pixels are those above -0.8 (`minildm.captions.GARMENT_LEVEL`); an image
    with none gives 0. As `minildm.captions.measure(x)["brightness"]`, which writes "dark" / "light" into the captions.
    Exercise of notebooks/05_text_conditioning_cfg.ipynb.
    """
    g, cases = torch.Generator().manual_seed(10), []
    square = torch.full((1, 1, 8, 8), -1.0)
    square[..., 2:6, 2:6] = 0.5
    for desc, x in [("random garments on a black background", torch.where(torch.rand(4, 1, 8, 8, generator=g) > 0.5,
                                                                       torch.rand(4, 1, 8, 8, generator=g) * 1.6 - 0.6,
                                                                       torch.full((4, 1, 8, 8), -1.0))),
                    ("a grey square (0.5) in the middle: brightness 0.75", square),
                    ("an empty image (all -1): no garment, brightness 0", torch.full((2, 1, 8, 8), -1.0)),
                    ("faint pixels at -0.9 are background, not garment", torch.cat([square, square.clamp(min=-0.9)]))]:
        d = x.double()
        garment = (d > -0.8).double()
        area = garment.flatten(1).sum(1)
        unit = ((d + 1) / 2 * garment).flatten(1).sum(1)
        mistakes = {"the background was averaged in: average over garment pixels (x > -0.8) only.":
                        ((d + 1) / 2).flatten(1).mean(1),
                    "the values are in [-1, 1]: map them to [0, 1] with (x + 1) / 2 first.":
                        (d * garment).flatten(1).sum(1) / area.clamp(min=1)}
        cases.append(Case(desc, (x,), unit / area.clamp(min=1), mistakes))
    _run("garment_brightness", fn, ("x",), cases,
         "garment = x > -0.8; ((x + 1) / 2 * garment).sum((1, 2, 3)) / garment.sum((1, 2, 3)).clamp(min=1).")


def _tiny_text_parts(seed: int):
    """A tiny text encoder, a text UNet on 4x4x4 latents and a VAE for 16x16 images, random float64 weights."""
    from minildm.models.text import TinyTextEncoder
    from minildm.models.unet import UNet, UNetConfig
    from minildm.models.vae import VAE, VAEConfig
    torch.manual_seed(seed)
    enc = TinyTextEncoder.from_captions(["a dark boot", "a light small sandal", "a bag", "a shoe"], dim=16, heads=2,
                                        max_length=8)
    unet = UNet(UNetConfig(in_channels=4, out_channels=4, image_size=4, base_channels=8, channel_mults=(1, 2),
                           attention=("none", "none"), cross_attention=(True, True), heads=2, head_dim=8, groups=4,
                           time_dim=16, cond_dim=16))
    vae = VAE(VAEConfig(image_size=16, base_channels=8, groups=4))
    return _perturbed(enc, unet, vae, seed=seed)


@torch.no_grad()
def _text_reference(z_T, prompts, negative_prompts, unet, vae, text_encoder, scheduler, guidance_scale, latent_scale,
                    steps, *, ignore_negative=False, swap=False, decode=True, clamp=True) -> torch.Tensor:
    negative = negative_prompts if negative_prompts is not None and not ignore_negative else [""] * len(prompts)
    text, neg = text_encoder(prompts), text_encoder(negative)
    states, mask = torch.cat([neg.states, text.states]), torch.cat([neg.mask, text.mask])   # (2B, L, D), (2B, L)
    scheduler.set_timesteps(steps)
    z_t = z_T.clone()
    for t in scheduler.timesteps:
        eps_uncond, eps_cond = unet(torch.cat([z_t, z_t]), t, states, mask).chunk(2)
        if swap:
            eps_uncond, eps_cond = eps_cond, eps_uncond
        z_t = scheduler.step(eps_uncond + guidance_scale * (eps_cond - eps_uncond), t, z_t).prev_sample
    images = vae.decode(z_t / latent_scale if decode else z_t)
    return (images.clamp(-1, 1) if clamp else images).double()


def check_text_sample(fn: Callable) -> None:
    """Check `fn(z_T, prompts, negative_prompts, unet, vae, text_encoder, scheduler, guidance_scale, latent_scale,
    num_inference_steps) -> images`: the text-to-image loop with classifier-free guidance and a negative prompt.

    Encode the prompts and the negative prompts (the empty prompt `""` for each when `negative_prompts` is None):
    `text_encoder(list_of_str)` returns `.states (B, L, D)` and `.mask (B, L)`; concatenate `[negative, prompt]`.
    `scheduler.set_timesteps(num_inference_steps)`; from `z_T` `(B, 4, h, w)`, for each `t`:
    `eps_uncond, eps_cond = unet(cat([z_t, z_t]), t, states, mask).chunk(2)`, the CFG line, a scheduler step; then
    `vae.decode(z_0 / latent_scale).clamp(-1, 1)`. Tiny random float64 models. Exercise of
    notebooks/05_text_conditioning_cfg.ipynb.
    """
    from minildm.schedulers import DDIMScheduler
    enc, unet, vae = _tiny_text_parts(0)
    g = torch.Generator().manual_seed(6)
    cases = []
    for desc, prompts, negative, s, scale, steps in [
            ("two prompts, no negative prompt (the empty prompt), s = 3", ["a dark boot", "a bag"], None, 3.0, 0.5, 4),
            ("a negative prompt for each prompt, s = 4", ["a shoe", "a shoe"], ["sandal", "boot"], 4.0, 0.5, 4),
            ("s = 1: the conditional model alone (the negative prompt has no effect)", ["a light sandal"], ["a bag"],
             1.0, 0.5, 3),
            ("s = 0: the negative prompt's model alone", ["a dark boot"], ["a light small sandal"], 0.0, 0.5, 3),
            ("latent_scale 2.0, 6 steps", ["a small bag", "a shoe", "a boot"], ["a dark boot"] * 3, 2.0, 2.0, 6)]:
        z_T = torch.randn(len(prompts), 4, 4, 4, generator=g, dtype=F64)
        sched = DDIMScheduler(100, beta_schedule="cosine", clip_sample=False)
        args = (z_T, prompts, negative, unet, vae, enc, sched, s, scale, steps)
        ref = lambda **kw: _text_reference(*args, **kw)  # noqa: E731
        mistakes = {"the negative prompt was ignored: its token states replace the empty prompt's in the "
                    "unconditional half of the batch.": ref(ignore_negative=True),
                    "the guidance terms are swapped: the batch is [negative, prompt], so chunk(2) gives (eps_uncond, "
                    "eps_cond) in that order.": ref(swap=True),
                    "decoded z_0 itself: the VAE decodes z_0 / latent_scale.": ref(decode=False),
                    "the decoded images are not clamped to [-1, 1] (.clamp(-1, 1)).": ref(clamp=False)}
        if negative is None or s == 1.0:
            mistakes.pop(next(iter(mistakes)))
        cases.append(Case(desc, args, ref(), mistakes))
    _run("text_sample", fn, ("z_T", "prompts", "negative_prompts", "unet", "vae", "text_encoder", "scheduler",
                             "guidance_scale", "latent_scale", "num_inference_steps"), cases,
         "states from [negative (or ''), prompt], set_timesteps, the loop with the doubled batch and the CFG line, "
         "then vae.decode(z / latent_scale).clamp(-1, 1).")
