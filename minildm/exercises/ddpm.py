"""Exercises of notebooks/01_ddpm_from_scratch.ipynb: q_sample, the posterior mean, a DDIM step.

References: Ho et al. (2020), eqs. (4), (7); Song et al. (2021), eq. (12).
"""
from __future__ import annotations

from typing import Callable

import torch

from minildm.exercises._runner import _OFF_BY_ONE, F32, F64, Case, _at, _bc, _randn, _run, _t_cases
from minildm.schedulers import DDPMScheduler


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


