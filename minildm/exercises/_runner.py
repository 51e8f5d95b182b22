"""The shared runner of the exercise checkers (see `minildm.exercises`): cases, comparison, hints.

    check_q_sample(q_sample)     # prints "✓ q_sample: correct on 6 cases", or raises ExerciseFailed

Each checker calls your function on fixed, seeded inputs (a random batch and edge cases: the first and last
timestep, float64, latent shapes, padding...) and compares with minildm's reference. On a mismatch it raises
`ExerciseFailed` (an AssertionError) naming the case, with expected vs got, the max abs difference and a hint;
when your output equals a known mistake (a missing square root, an off-by-one in t, swapped CFG terms...),
the hint names it. A function that raises or returns no tensor, the wrong shape or NaN is reported alike.

References:
    Ho, Jain, Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
    Song, Meng, Ermon (2021), "Denoising Diffusion Implicit Models", arXiv:2010.02502.
    Kingma, Welling (2014), "Auto-Encoding Variational Bayes", arXiv:1312.6114.
    Ho, Salimans (2022), "Classifier-Free Diffusion Guidance", arXiv:2207.12598.
    Vaswani et al. (2017), "Attention Is All You Need", arXiv:1706.03762.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch


F32, F64 = torch.float32, torch.float64
_TOL = {F32: (1e-4, 1e-4), F64: (1e-10, 1e-8), torch.int64: (0.0, 0.0),  # (atol, rtol) by the first input's dtype
        torch.uint8: (1e-6, 1e-6)}  # uint8 pixels in, floats out (chapter 00)
_OFF_BY_ONE = "your result equals what you get with {}: an off-by-one in t? t is 0-based here (0 .. T-1 = 999)."
_NAN = "NaN/inf usually comes from the sqrt of a negative number, log(0) or a division by zero."


class ExerciseFailed(AssertionError):
    """Your function disagrees with the reference; the message names the input and gives a hint."""


class Case(NamedTuple):
    desc: str               # what this input tests, e.g. "t = 0 (the first step)"
    args: tuple             # what the learner's function is called with
    expected: torch.Tensor  # the reference output, float64
    mistakes: dict          # hint -> the output of a known mistake on these inputs, float64


# ---- The shared runner ----------------------------------------------------------------------------
def _perturbed(*modules: torch.nn.Module, seed: int, scale: float = 0.2) -> tuple:
    """The modules with `scale` x N(0, 1) added to every weight, in float64 and eval mode: random, not zero-initialised
    outputs, so every mistake a checker looks for changes the result."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g))
    return tuple(m.double().eval() for m in modules)


def _fmt(name: str, a) -> str:
    if isinstance(a, torch.Tensor) and (a.is_floating_point() or a.numel() > 12):
        return f"{name} {tuple(a.shape)} {str(a.dtype).replace('torch.', '')}"
    return f"{name} = {a.tolist() if isinstance(a, torch.Tensor) else repr(a)}"


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and bool(((a.double() - b.double()).abs() <= atol + rtol * b.double().abs()).all())


def _error_hint(e: Exception) -> str:
    if isinstance(e, IndexError):
        return ("an index went out of range on this case: t is 0-based (0 .. T-1), so alpha_bar[t + 1] does not "
                "exist at t = T-1; a t_prev of -1 means 'after the last step' (alpha_bar_prev = 1), not an index.")
    if any(w in str(e) for w in ("size of tensor", "shape", "broadcast")):
        return ("the shapes do not match: compare each intermediate with the input shapes above; a (B,) coefficient "
                "times a (B, C, H, W) tensor needs reshaping to (B, 1, 1, 1), e.g. coef[:, None, None, None].")
    return "call your function on inputs of these shapes yourself and read the traceback."


def _shape_hint(exp: torch.Size, got: torch.Size) -> str:
    return ("the right number of entries in the wrong layout: a reshape, transpose or permute is off."
            if got.numel() == exp.numel() else
            "one value per sample is expected: reduce over dims 1.. (dim=tuple(range(1, x.ndim))), not the batch."
            if len(exp) == 1 and len(got) == 0 else
            "extra entries: a (B,) coefficient broadcast against the last dim? Reshape it to (B, 1, 1, 1) first."
            if got.numel() > exp.numel() else "some dimension was reduced or indexed away; keep the input's shape.")


def _diagnose(case: Case, got: torch.Tensor, atol: float, rtol: float) -> str | None:
    """The hint for a known mistake that `got` equals, or for a float32-precision result; None if unknown."""
    if case.args[0].dtype == F64 and _close(got, case.expected, *_TOL[F32]):
        return ("right to float32 precision only, but the inputs were float64: keep everything in the input dtype "
                "(do not cast the schedule or the result to float32; make new tensors with dtype=x.dtype).")
    hint = next((text for text, wrong in case.mistakes.items() if _close(got, wrong, atol, rtol)), None)
    if hint is None and _close(got, case.expected, 30 * atol, 30 * rtol):
        hint = ("close, but not within the tolerance: a rounding problem? Where values cancel, compute in float64 "
                "and cast at the end; e.g. keep the schedule in float64, as scheduler.alpha_bar is (1 - alpha_bar_t "
                "near t = 0 loses most of its digits in float32).")
    return hint


def _verdict(fn: Callable, case: Case, nan_hint: str):
    """(what is wrong, hint or None, exception or None) for one case, or None when `fn` gets it right."""
    exp, (atol, rtol) = case.expected, _TOL[case.args[0].dtype]
    try:
        got = fn(*(a.clone() if isinstance(a, torch.Tensor) else a for a in case.args))  # clones: fn may edit in place
    except Exception as e:  # reported with the case that triggered it
        return f"your function raised {type(e).__name__}: {e}", _error_hint(e), e
    if not isinstance(got, torch.Tensor):
        return (f"expected a torch.Tensor of shape {tuple(exp.shape)}, got a {type(got).__name__}.",
                "did you forget `return`?" if got is None else "return only the tensor, not a tuple."
                if isinstance(got, (tuple, list)) else "build the result with torch operations.", None)
    got = got.detach().cpu()
    if got.shape != exp.shape:
        return f"expected shape {tuple(exp.shape)}, got {tuple(got.shape)}.", _shape_hint(exp.shape, got.shape), None
    if not torch.isfinite(got).all():
        return f"your output has {int((~torch.isfinite(got)).sum())} NaN/inf entries of {got.numel()}.", nan_hint, None
    if _close(got, exp, atol, rtol):
        return None
    diff = (got.double() - exp).abs()
    i = tuple(int(j) for j in torch.unravel_index(diff.argmax(), diff.shape))
    first = lambda x: [round(v, 4) for v in x.double().flatten()[:4].tolist()]  # noqa: E731
    return (f"expected vs got at index {i}: {exp[i].item():.6g} vs {got[i].item():.6g}\n  first values: expected "
            f"{first(exp)}, got {first(got)}\n  max abs difference: {diff.max().item():.3g} (allowed: {atol:g} + "
            f"{rtol:g} * |expected|)", _diagnose(case, got, atol, rtol), None)


def _run(name: str, fn: Callable, names: tuple, cases: list, hint: str, nan_hint: str = _NAN) -> None:
    """Call `fn` on every case; raise ExerciseFailed on the first wrong one, else print a one-line success."""
    if not callable(fn):
        raise TypeError(f"check_{name} takes your function itself, e.g. check_{name}(my_{name}), not {fn!r}.")
    for i, case in enumerate(cases, 1):
        verdict = _verdict(fn, case, nan_hint)
        if verdict is not None:
            problem, why, cause = verdict
            if isinstance(cause, NotImplementedError) and i == 1:  # the exercise stub: not attempted, not wrong
                print(f"· {name}: not attempted yet (your function raises NotImplementedError). Write it, then run "
                      f"this cell again; the solution is in notebooks/solutions/.")
                return
            inputs = ", ".join(_fmt(n, a) for n, a in zip(names, case.args))
            raise ExerciseFailed(f"✗ {name}: wrong on case {i} of {len(cases)}: {case.desc}\n  inputs: {inputs}\n"
                                 f"  {problem}\n  hint: {why or hint}") from cause
    print(f"✓ {name}: correct on {len(cases)} cases")


def _randn(g: torch.Generator, shape: tuple, dtype=F32) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=F64).to(dtype)


def _bc(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return c.double().reshape(-1, *[1] * (x.ndim - 1))  # (B,) -> (B, 1, ..., 1)


def _at(vec: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """vec[t] as Python indexing gives it (t = -1 wraps to the end), NaN past the end."""
    return torch.where(t >= len(vec), torch.nan, vec[t.clamp(max=len(vec) - 1)].double())


def _t_cases() -> list:
    """The timestep cases of q_sample and posterior_mean: (description, shape, t, dtype)."""
    full, img = (lambda v: torch.full((4,), v)), (4, 1, 32, 32)  # noqa: E731
    return [("a random batch with a different t per sample", img, torch.tensor([7, 250, 617, 942]), F32),
            ("t = 0 (the first step) for the whole batch", img, full(0), F32),
            ("t = 1 (the second step) for the whole batch", img, full(1), F32),
            ("t = T-1 (the last step) for the whole batch", img, full(999), F32),
            ("float64 inputs (the output must stay float64)", (3, 1, 32, 32), torch.tensor([5, 400, 990]), F64),
            ("latent-shaped inputs (B, 4, 8, 8)", (3, 4, 8, 8), torch.tensor([100, 500, 998]), F32)]


