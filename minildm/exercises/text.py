"""Exercises of notebooks/05_text_conditioning_cfg.ipynb: a cross-attention forward with a padding mask.

References: Vaswani et al. (2017), eq. (1).
"""
from __future__ import annotations

from typing import Callable

import torch

from minildm.exercises._runner import F32, F64, Case, _randn, _run


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
    (zero weight). Exercise of notebooks/05_text_conditioning.ipynb.
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
