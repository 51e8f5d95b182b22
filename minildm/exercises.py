"""Exercises with automatic checks: write a function in a notebook, then call `check_<name>(your_fn)`.

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

from .models.vae import DiagonalGaussian
from .schedulers import DDPMScheduler

__all__ = ["ExerciseFailed", "check_q_sample", "check_posterior_mean", "check_ddim_step",
           "check_reparameterise", "check_kl", "check_cfg", "check_cross_attention"]

F32, F64 = torch.float32, torch.float64
_TOL = {F32: (1e-4, 1e-4), F64: (1e-10, 1e-8)}  # (atol, rtol) by the dtype of the inputs
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


# ---- 01_ddpm_from_scratch -------------------------------------------------------------------------
def check_q_sample(fn: Callable) -> None:
    """Check `fn(x0, t, eps, alpha_bar) -> x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps` (DDPM eq. (4)).

    `x0`, `eps`: `(B, C, H, W)`; `t`: `(B,)` long, one 0-based timestep per sample; `alpha_bar`: the `(T,)`
    float64 `scheduler.alpha_bar`. Exercise of notebooks/01_ddpm_from_scratch.ipynb.
    """
    s, g, cases = DDPMScheduler(), torch.Generator().manual_seed(1), []
    for desc, shape, t, dtype in _t_cases():
        x0, eps = _randn(g, shape, dtype), _randn(g, shape, dtype)
        q = lambda a, b: _bc(a, x0) * x0.double() + _bc(b, x0) * eps.double()  # noqa: E731
        qa = lambda a: q(a.sqrt(), (1 - a).sqrt())  # noqa: E731, x_t for some alpha_bar
        a = s.alpha_bar[t]
        mistakes = {
            "the square roots are missing: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.": q(a, 1 - a),
            "the square root is missing on the noise term: it is sqrt(1 - alpha_bar_t) * eps.": q(a.sqrt(), 1 - a),
            "the square root is missing on the x0 term: it is sqrt(alpha_bar_t) * x0.": q(a, (1 - a).sqrt()),
            "wrong sign: the noise is added, + sqrt(1 - alpha_bar_t) * eps.": q(a.sqrt(), -(1 - a).sqrt()),
            "x0 and eps are swapped: sqrt(alpha_bar_t) multiplies x0.": q((1 - a).sqrt(), a.sqrt()),
            "sqrt(1 - alpha_bar_t) is not 1 - sqrt(alpha_bar_t).": q(a.sqrt(), 1 - a.sqrt()),
            _OFF_BY_ONE.format("alpha_bar[t + 1]"): qa(_at(s.alpha_bar, t + 1)),
            _OFF_BY_ONE.format("alpha_bar[t - 1]"): qa(_at(s.alpha_bar, t - 1)),
            "alphas[t] (one step) is used instead of alpha_bar[t] (the cumulative product).": qa(s.alphas[t]),
            "alpha_bar[t[0]] is used for every sample: index with the whole (B,) t.": qa(a[:1].expand(len(t)))}
        cases.append(Case(desc, (x0, t, eps, s.alpha_bar), s.add_noise(x0.double(), eps.double(), t), mistakes))
    _run("q_sample", fn, ("x0", "t", "eps", "alpha_bar"), cases,
         "x_t = sqrt(alpha_bar[t]) * x0 + sqrt(1 - alpha_bar[t]) * eps, with alpha_bar[t] reshaped to (B, 1, 1, 1).")


def check_posterior_mean(fn: Callable) -> None:
    """Check `fn(x0, x_t, t, betas) -> mean` of the posterior q(x_{t-1} | x_t, x0) (DDPM eq. (7)).

    `x0`, `x_t`: `(B, C, H, W)`; `t`: `(B,)` long, 0-based; `betas`: the `(T,)` float64 `scheduler.betas`. At
    t = 0, alpha_bar_prev = 1 and the mean is x0. Exercise of notebooks/01_ddpm_from_scratch.ipynb.
    """
    s, g, cases = DDPMScheduler(), torch.Generator().manual_seed(2), []
    ab, al = s.alpha_bar, s.alphas
    for desc, shape, t, dtype in _t_cases():
        x0, x_t = _randn(g, shape, dtype), _randn(g, shape, dtype)

        def pm(tt, prev=None, swap=False, root=(True, True), a2=None):  # the mean, right or with one mistake
            ab_t, al_t = _at(ab, tt), _at(al, tt)
            ab_prev, a2 = _at(ab, tt - 1) if prev is None else prev, al_t if a2 is None else a2
            c1 = (ab_prev.sqrt() if root[0] else ab_prev) * (1 - al_t) / (1 - ab_t)  # DDPM eq. (7), factor of x0
            c2 = (a2.sqrt() if root[1] else a2) * (1 - ab_prev) / (1 - ab_t)        # DDPM eq. (7), factor of x_t
            c1, c2 = (c2, c1) if swap else (c1, c2)
            return _bc(c1, x0) * x0.double() + _bc(c2, x0) * x_t.double()
        prev = s.alpha_bar_prev[t]
        mistakes = {
            "alpha_bar_prev at t = 0 must be 1 (nothing before the first step); alpha_bar[t - 1] wraps around to "
            "alpha_bar[-1] = alpha_bar[T-1] there. Use torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]]).": pm(t),
            _OFF_BY_ONE.format("t + 1 (alpha_bar[t + 1], alpha_bar[t])"): pm(t + 1),
            _OFF_BY_ONE.format("t - 1 (alpha_bar[t - 1], alpha_bar[t - 2])"): pm(t - 1),
            "the coefficients are swapped: sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t) multiplies x0.":
                pm(t, prev, swap=True),
            "the square root is missing in the factor of x0, sqrt(alpha_bar_prev).": pm(t, prev, root=(False, True)),
            "the square root is missing in the factor of x_t, sqrt(alpha_t).": pm(t, prev, root=(True, False)),
            "the factor of x_t uses sqrt(alpha_bar_t); it is sqrt(alpha_t) = sqrt(1 - beta_t).": pm(t, prev, a2=ab[t])}
        cases.append(Case(desc, (x0, x_t, t, s.betas), s.posterior(x0.double(), x_t.double(), t)[0], mistakes))
    _run("posterior_mean", fn, ("x0", "x_t", "t", "betas"), cases,
         "mean = sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t) * x0 + sqrt(alpha_t) (1 - alpha_bar_prev) / "
         "(1 - alpha_bar_t) * x_t, alphas = 1 - betas, alpha_bar = cumprod(alphas), alpha_bar_prev[0] = 1.")


def _ab(alpha_bar: torch.Tensor, t: int) -> float:
    """alpha_bar at an int t as a float: 1 for t = -1 (after the last step), NaN past the end."""
    return 1.0 if t == -1 else float(alpha_bar[t]) if 0 <= t < len(alpha_bar) else float("nan")


def _ddim(eps, x_t, ab_t: float, ab_prev: float, roots=(True, True), sign=1, direction=1) -> torch.Tensor:
    r = [(lambda v: v ** 0.5) if ok else (lambda v: v) for ok in roots]
    eps, x_t = eps.double(), x_t.double()
    pred_x0 = (x_t - sign * r[0](1 - ab_t) * eps) / r[0](ab_t)             # DDIM eq. (9), "predicted x0"
    return r[1](ab_prev) * pred_x0 + direction * r[1](1 - ab_prev) * eps  # DDIM eq. (12) with sigma = 0


def check_ddim_step(fn: Callable) -> None:
    """Check `fn(eps_pred, t, t_prev, x_t, alpha_bar) -> x_prev`, one DDIM step with eta = 0 and no clipping.

    `eps_pred`, `x_t`: `(B, C, H, W)`; `t`, `t_prev`: ints, this and the next entry of the timestep list (-1 after
    the last, where alpha_bar_prev = 1); `alpha_bar`: `(T,)` float64. As `DDIMScheduler(clip_sample=False).step`.
    Exercise of notebooks/01_ddpm_from_scratch.ipynb.
    """
    ab, g, cases, img = DDPMScheduler().alpha_bar, torch.Generator().manual_seed(3), [], (4, 1, 32, 32)
    spec = [("a middle step of a 10-step schedule: t = 500 -> t_prev = 400", 500, 400, img, F32),
            ("the first step of a trailing schedule: t = T-1 = 999 -> t_prev = 899", 999, 899, img, F32),
            ("the last step: t = 0 -> t_prev = -1 (alpha_bar_prev = 1, so x_prev = pred_x0)", 0, -1, img, F32),
            ("the last step of a trailing schedule: t = 99 -> t_prev = -1", 99, -1, img, F32),
            ("one plain step: t = 1 -> t_prev = 0", 1, 0, img, F32),
            ("float64 inputs: t = 700 -> t_prev = 600", 700, 600, (3, 1, 32, 32), F64),
            ("latent-shaped inputs (B, 4, 8, 8): t = 250 -> t_prev = 200", 250, 200, (3, 4, 8, 8), F32)]
    for desc, t, tp, shape, dtype in spec:
        eps, x_t = _randn(g, shape, dtype), _randn(g, shape, dtype)
        a_t, a_p = _ab(ab, t), _ab(ab, tp)
        x = lambda at=a_t, ap=a_p, **kw: _ddim(eps, x_t, at, ap, **kw)  # noqa: E731
        mistakes = {
            "alpha_bar[t_prev] with t_prev = -1 wraps around to alpha_bar[T-1]; after the last step "
            "alpha_bar_prev = 1 (x_prev = pred_x0).": x(ap=float(ab[tp])),
            "alpha_bar[t - 1] is used; DDIM jumps to t_prev, the next timestep of the list.": x(ap=_ab(ab, t - 1)),
            "alpha_bar_t and alpha_bar_prev are swapped.": x(a_p, a_t),
            "the square roots are missing, in pred_x0 and in x_prev.": x(roots=(False, False)),
            "the square roots are missing in pred_x0 (around alpha_bar_t and 1 - alpha_bar_t).": x(roots=(False, True)),
            "the square roots are missing in x_prev (around alpha_bar_prev and 1 - alpha_bar_prev).":
                x(roots=(True, False)),
            "wrong sign in pred_x0: it is (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t).": x(sign=-1),
            "the 'direction pointing to x_t', sqrt(1 - alpha_bar_prev) * eps, is missing.": x(direction=0),
            "you returned pred_x0; x_prev = sqrt(alpha_bar_prev) pred_x0 + sqrt(1 - alpha_bar_prev) eps.": x(ap=1.0),
            _OFF_BY_ONE.format("alpha_bar[t + 1] and alpha_bar[t_prev + 1]"): x(_ab(ab, t + 1), _ab(ab, tp + 1))}
        cases.append(Case(desc, (eps, t, tp, x_t, ab), x(), mistakes))
    _run("ddim_step", fn, ("eps_pred", "t", "t_prev", "x_t", "alpha_bar"), cases,
         "pred_x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t); x_prev = sqrt(alpha_bar_prev) pred_x0 "
         "+ sqrt(1 - alpha_bar_prev) eps, alpha_bar_prev = alpha_bar[t_prev], or 1 when t_prev = -1.")


# ---- 03_vae_and_kl --------------------------------------------------------------------------------
def _vae_cases(seed: int):
    """(description, mu, logvar, eps) for the VAE exercises; logvar stays inside DiagonalGaussian's clamp."""
    g, lat = torch.Generator().manual_seed(seed), (3, 4, 8, 8)
    for desc, shape, lv_mean, lv_std, dtype in [
            ("a random batch of latents (B, 4, 8, 8)", (4, 4, 8, 8), 0.0, 1.0, F32),
            ("flat latents (B, 16), as MLPVAE's", (5, 16), 0.0, 1.0, F32),
            ("logvar = 0 everywhere (sigma = 1)", lat, 0.0, 0.0, F32),
            ("very negative logvar, around -12 (sigma ~ 0.0025: z ~ mu)", lat, -12.0, 0.5, F32),
            ("large logvar, around +3 (sigma ~ 4.5)", lat, 3.0, 0.5, F32),
            ("float64 inputs (the output must stay float64)", lat, 0.0, 1.0, F64)]:
        mu, lv = _randn(g, shape, dtype), (lv_mean + lv_std * _randn(g, shape, F64)).to(dtype)
        yield desc, mu, lv, _randn(g, shape, dtype)


def check_reparameterise(fn: Callable) -> None:
    """Check `fn(mu, logvar, eps) -> z = mu + exp(0.5 logvar) * eps`, the reparameterisation trick.

    `mu`, `logvar`, `eps`: `(B, ...)`; as `DiagonalGaussian.sample`. Exercise of notebooks/03_vae_and_kl.ipynb.
    """
    cases = []
    for desc, mu, lv, eps in _vae_cases(4):
        m, l, e = mu.double(), lv.double(), eps.double()
        mistakes = {"logvar is used as the standard deviation; sigma = exp(0.5 * logvar).": m + l * e,
                    "exp(logvar) is the variance; the std is sigma = exp(0.5 * logvar).": m + l.exp() * e,
                    "exp(-0.5 * logvar) is 1 / sigma; sigma = exp(0.5 * logvar).": m + (-0.5 * l).exp() * e,
                    "the noise term is missing: z = mu + sigma * eps.": m,
                    "mu is missing: z = mu + sigma * eps.": (0.5 * l).exp() * e,
                    "mu and sigma are swapped: z = mu + sigma * eps.": (0.5 * l).exp() + m * e}
        cases.append(Case(desc, (mu, lv, eps), m + torch.exp(0.5 * l) * e, mistakes))  # Kingma & Welling sec. 2.4
    _run("reparameterise", fn, ("mu", "logvar", "eps"), cases, "z = mu + torch.exp(0.5 * logvar) * eps.")


def check_kl(fn: Callable) -> None:
    """Check `fn(mu, logvar) -> kl`, `(B,)` KL(N(mu, sigma^2) || N(0, I)) in nats, summed over the latent dims.

    `mu`, `logvar`: `(B, ...)`; as `DiagonalGaussian.kl`. Exercise of notebooks/03_vae_and_kl.ipynb.
    """
    cases = []
    for desc, mu, lv, _ in _vae_cases(5):
        if desc.startswith("logvar = 0"):
            mu, desc = mu * 0, "the prior itself: mu = 0, logvar = 0 (the KL must be 0)"
        m, l, dims = mu.double(), lv.double(), tuple(range(1, mu.ndim))
        kl = lambda one=1, c=1, log_var=l: -0.5 * (one + log_var - c * m**2 - log_var.exp()).sum(dims)  # noqa: E731
        mistakes = {"your KL is negative: the sign is flipped (a KL is always >= 0).": -kl(),
                    "your KL is twice the right value: the factor 0.5 is missing.": 2 * kl(),
                    "you averaged over the latent dims; sum over them (dims 1..).": kl() / m[0].numel(),
                    "the mu^2 term has the wrong sign: it is - mu^2.": kl(c=-1),
                    "the mu^2 term is missing.": kl(c=0),
                    "the 1 is missing: -0.5 * sum(1 + logvar - mu^2 - exp(logvar)).": kl(one=0),
                    "logvar is log sigma^2: your result treats it as log sigma.": kl(log_var=2 * l)}
        cases.append(Case(desc, (mu, lv), DiagonalGaussian(m, l).kl(), mistakes))  # Kingma & Welling, appendix B
    _run("kl", fn, ("mu", "logvar"), cases,
         "kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=tuple(range(1, mu.ndim))).")


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
