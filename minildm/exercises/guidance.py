"""Exercises of notebooks/02_class_conditional.ipynb: the CFG line, the brightness loss.

References: Ho & Salimans (2022), eq. (6); the Hugging Face diffusion course, unit 2 (colour guidance).
"""
from __future__ import annotations

from typing import Callable

import torch

from minildm.exercises._runner import F32, F64, Case, _randn, _run


# ---- 02_class_conditional -------------------------------------------------------------------------
def check_cfg(fn: Callable) -> None:
    """Check `fn(eps_uncond, eps_cond, guidance_scale) -> eps`, the CFG line of `minildm.pipelines.guided_sample`.

    `eps_uncond`, `eps_cond`: `(B, C, H, W)`; `guidance_scale`: the float s of eps = eps_uncond + s * (eps_cond -
    eps_uncond), s = 1 conditional, s = 0 unconditional. Exercise of notebooks/02_class_conditional.ipynb.
    """
    g, cases, img = torch.Generator().manual_seed(6), [], (4, 1, 32, 32)
    for desc, shape, s, dtype in [("s = 3 on a random batch", img, 3.0, F32),
                                  ("s = 1: plain conditional (eps must equal eps_cond)", img, 1.0, F32),
                                  ("s = 0: unconditional (eps must equal eps_uncond)", img, 0.0, F32),
                                  ("s = 0.5, between unconditional and conditional", img, 0.5, F32),
                                  ("s = 7.5 on latents (B, 4, 8, 8)", (3, 4, 8, 8), 7.5, F32),
                                  ("float64 inputs, s = 2 (the output must stay float64)", (3, 1, 32, 32), 2.0, F64)]:
        eu, ec = _randn(g, shape, dtype), _randn(g, shape, dtype)
        u, c = eu.double(), ec.double()
        mistakes = {"eps_uncond and eps_cond are swapped: it is eps_uncond + s * (...).": c + s * (u - c),
                    "that is the w convention of Ho & Salimans, eps = (1 + w) eps_cond - w eps_uncond, with w = "
                    "guidance_scale. Here guidance_scale is s = w + 1: eps = eps_uncond + s * (eps_cond - eps_uncond).":
                        c + s * (c - u),
                    "the guidance term has the wrong sign: + s * (eps_cond - eps_uncond).": u - s * (c - u),
                    "eps_uncond is not subtracted inside the bracket: s * (eps_cond - eps_uncond).": u + s * c,
                    "your function ignores guidance_scale and returns eps_cond.": c}
        cases.append(Case(desc, (eu, ec, s), u + s * (c - u), mistakes))  # Ho & Salimans eq. (6), s = 1 + w
    _run("cfg", fn, ("eps_uncond", "eps_cond", "guidance_scale"), cases,
         "eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond).")




def check_brightness_loss(fn: Callable) -> None:
    """Check `fn(pred_x0, target) -> loss`, the scalar of brightness guidance: the sum over images of
    (mean brightness on the [0, 1] scale - target)^2, as in `minildm.pipelines.guided.brightness_guided_sample`.

    `pred_x0`: `(B, C, H, W)` in [-1, 1] (unclipped estimates may leave it); `target`: a float in [0, 1].
    Exercise of notebooks/02_class_conditional.ipynb.
    """
    g, cases = torch.Generator().manual_seed(7), []
    for desc, shape, target, dtype in [("a batch of 4 images, target 0.3", (4, 1, 32, 32), 0.3, F32),
                                       ("one image, target 0 (black)", (1, 1, 32, 32), 0.0, F32),
                                       ("target 1 (white), float64", (3, 1, 32, 32), 1.0, F64),
                                       ("latent-sized (2, 4, 8, 8), target 0.5", (2, 4, 8, 8), 0.5, F32)]:
        x = _randn(g, shape, dtype).clamp(-1.5, 1.5)
        b = ((x.double() + 1) / 2).flatten(1).mean(1)                          # (B,) brightness in [0, 1]
        mistakes = {"brightness must be on the [0, 1] scale: (x + 1) / 2 before the mean.":
                        (x.double().flatten(1).mean(1) - target).pow(2).sum(),
                    "sum over images, not the mean: each image's nudge must not depend on the batch size.":
                        (b - target).pow(2).mean(),
                    "square the difference: (brightness - target) ** 2.": (b - target).sum(),
                    "the absolute difference is not the squared one: use ** 2.": (b - target).abs().sum()}
        cases.append(Case(desc, (x, target), (b - target).pow(2).sum(), mistakes))
    _run("brightness_loss", fn, ("pred_x0", "target"), cases,
         "loss = (((pred_x0 + 1) / 2).flatten(1).mean(1) - target).pow(2).sum()")


def check_drop_condition(fn: Callable) -> None:
    """Check `fn(cond, drop, null) -> cond'`, CFG's condition dropout given the coin flips: where `drop` `(B,)` is
    True, the condition becomes `null`. As `minildm.training.drop_condition` after drawing `drop`.

    `cond`: `(B,)` long labels with `null` an int (the null class), or `(B, L, D)` text states with `null` the
    empty prompt's `(L, D)` states. Exercise of notebooks/02_class_conditional.ipynb.
    """
    g, cases = torch.Generator().manual_seed(9), []
    labels = torch.tensor([3, 7, 0, 9, 1, 5])
    drop = torch.tensor([True, False, False, True, False, True])
    states, empty = _randn(g, (4, 5, 6), F64), _randn(g, (5, 6), F64)
    drop_text = torch.tensor([False, True, True, False])
    for desc, cond, mask, null in [("class labels (B,), null class 10", labels, drop, 10),
                                   ("nothing dropped", labels, torch.zeros(6, dtype=torch.bool), 10),
                                   ("text states (B, L, D) with the empty prompt's (L, D)", states, drop_text, empty)]:
        m = mask.view(-1, *([1] * (cond.dim() - 1)))                        # (B, 1, ...) to broadcast
        nul = torch.as_tensor(null, dtype=cond.dtype).expand_as(cond)
        expected = torch.where(m, nul, cond)
        mistakes = {"the mask is inverted: drop where it is True, keep where it is False.": torch.where(m, cond, nul)}
        cases.append(Case(desc, (cond, mask, null), expected.double(), mistakes))
    _run("drop_condition", fn, ("cond", "drop", "null"), cases,
         "torch.where(drop.view(-1, *[1] * (cond.dim() - 1)), null, cond): reshape the (B,) mask to broadcast.")
