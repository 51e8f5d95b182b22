"""Tests for minildm.schedulers: parity with diffusers, the maths of DDPM / DDIM, and bad input.

Parity tests use diffusers' DDPMScheduler / DDIMScheduler as the reference implementation. Remaining
differences (a few 1e-6) come from diffusers computing its schedule in float32, ours in float64.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from diffusers import DDIMScheduler as PeerDDIM
from diffusers import DDPMScheduler as PeerDDPM

from minildm.schedulers import (
    SCHEDULES,
    TIMESTEP_SPACINGS,
    DDIMScheduler,
    DDPMScheduler,
    StepOutput,
    extract,
    make_betas,
    spaced_timesteps,
)

T = 1000
PEER_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2", "quadratic": "scaled_linear", "sigmoid": "sigmoid"}
PEER_PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(seed: int, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=seeded(seed), dtype=dtype)


def dummy_model(x: torch.Tensor, t) -> torch.Tensor:
    """The deterministic stand-in for a network used in diffusers' scheduler tests."""
    return x * t / (t + 1)


# ---- Schedules -------------------------------------------------------------------------------------
def closed_form_betas(name: str, n: int = T) -> list[float]:
    """Each schedule written out independently, in plain Python floats."""
    lo, hi = 1e-4, 0.02
    if name == "linear":
        return [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    if name == "quadratic":
        return [(lo**0.5 + (hi**0.5 - lo**0.5) * i / (n - 1)) ** 2 for i in range(n)]
    if name == "sigmoid":
        return [lo + (hi - lo) / (1 + math.exp(-(-6 + 12 * i / (n - 1)))) for i in range(n)]
    if name == "cosine":
        def f(i):
            return math.cos((i / n + 0.008) / 1.008 * math.pi / 2) ** 2
        return [min(1 - f(i + 1) / f(i), 0.999) for i in range(n)]
    raise AssertionError(name)


@pytest.mark.parametrize("name", SCHEDULES)
def test_betas_match_closed_form(name):
    betas = make_betas(name, T)
    assert betas.shape == (T,) and betas.dtype == torch.float64
    expected = torch.tensor(closed_form_betas(name), dtype=torch.float64)
    torch.testing.assert_close(betas, expected, rtol=1e-12, atol=1e-15)


SD_RANGE = {"beta_start": 0.00085, "beta_end": 0.012}  # Stable Diffusion's scaled_linear range


@pytest.mark.parametrize("name, kw", [(n, {}) for n in SCHEDULES] + [("quadratic", SD_RANGE), ("linear", SD_RANGE)])
def test_betas_match_diffusers(name, kw):
    peer = PeerDDPM(num_train_timesteps=T, beta_schedule=PEER_SCHEDULE[name], **kw)
    torch.testing.assert_close(make_betas(name, T, **kw).float(), peer.betas, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", SCHEDULES)
def test_alpha_bar_strictly_decreasing_in_unit_interval(name):
    alpha_bar = DDPMScheduler(beta_schedule=name).alpha_bar
    assert (alpha_bar > 0).all() and (alpha_bar < 1).all()
    assert (alpha_bar[1:] < alpha_bar[:-1]).all()


@pytest.mark.parametrize("spacing", TIMESTEP_SPACINGS)
@pytest.mark.parametrize("n", [1, 3, 7, 50, 333, 1000])
def test_timesteps_match_diffusers(spacing, n):
    peer = PeerDDIM(num_train_timesteps=T, timestep_spacing=spacing)
    peer.set_timesteps(n)
    ours = DDIMScheduler(timestep_spacing=spacing)
    ours.set_timesteps(n)
    assert torch.equal(ours.timesteps, peer.timesteps)
    assert torch.equal(spaced_timesteps(n, T, spacing), peer.timesteps)


def test_ddpm_timesteps_default_to_all_steps_and_match_diffusers():
    ours = DDPMScheduler()
    assert torch.equal(ours.timesteps, torch.arange(T - 1, -1, -1))
    assert ours.previous_timestep(500) == 499 and ours.previous_timestep(0) == -1
    peer = PeerDDPM()
    ours.set_timesteps(50)
    peer.set_timesteps(50)
    assert torch.equal(ours.timesteps, peer.timesteps)
    assert ours.previous_timestep(int(ours.timesteps[0])) == int(ours.timesteps[1])


def test_extract_gathers_per_sample_coefficients():
    coeffs = torch.arange(10, dtype=torch.float64)
    out = extract(coeffs, torch.tensor([3, 0, 9]), ndim=4)
    assert out.shape == (3, 1, 1, 1)
    assert out.flatten().tolist() == [3.0, 0.0, 9.0]


# ---- Parity with diffusers -------------------------------------------------------------------------
def float64_peer(peer, ours):
    """Give a diffusers scheduler our (float64) betas, so that both compute the same maths in float64."""
    peer.betas = ours.betas.clone()
    peer.alphas = 1.0 - peer.betas
    peer.alphas_cumprod = torch.cumprod(peer.alphas, dim=0)
    return peer


@pytest.mark.parametrize("name", SCHEDULES)
def test_add_noise_matches_diffusers(name):
    g = seeded(0)
    x0 = torch.rand(8, 1, 28, 28, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(8, 1, 28, 28, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 250, 500, 750, 998, 999])
    ours = DDPMScheduler(beta_schedule=name)
    # identical betas, float64 throughout: the same numbers
    peer = float64_peer(PeerDDPM(beta_schedule=PEER_SCHEDULE[name]), ours)
    torch.testing.assert_close(ours.add_noise(x0, eps, t), peer.add_noise(x0, eps, t), rtol=0, atol=1e-12)
    # the stock peer builds its schedule in float32 (1 - alpha_bar loses digits near t = 0): a few 1e-6
    stock = PeerDDPM(beta_schedule=PEER_SCHEDULE[name])
    x0, eps = x0.float(), eps.float()
    torch.testing.assert_close(ours.add_noise(x0, eps, t), stock.add_noise(x0, eps, t), rtol=0, atol=1e-5)


DDPM_STEP_CASES = [(p, n, s, "fixed_small", True)
                   for p in ("eps", "x0", "v") for n in (None, 50) for s in ("linear", "cosine")]
DDPM_STEP_CASES += [("eps", None, "cosine", "fixed_large", False), ("v", 50, "quadratic", "fixed_large", True)]


@pytest.mark.parametrize("prediction_type, num_inference_steps, name, variance_type, clip_sample", DDPM_STEP_CASES)
def test_ddpm_step_matches_diffusers(prediction_type, num_inference_steps, name, variance_type, clip_sample):
    kw = dict(variance_type=variance_type, clip_sample=clip_sample)
    ours = DDPMScheduler(beta_schedule=name, prediction_type=prediction_type, **kw)
    peer_kw = dict(beta_schedule=PEER_SCHEDULE[name], prediction_type=PEER_PREDICTION[prediction_type], **kw)
    peer, stock = float64_peer(PeerDDPM(**peer_kw), ours), PeerDDPM(**peer_kw)
    if num_inference_steps is not None:
        for s in (ours, peer, stock):
            s.set_timesteps(num_inference_steps)
    x_t, model_output = randn(0, 2, 3, 8, 8), randn(1, 2, 3, 8, 8)
    for t in [ours.timesteps[0], ours.timesteps[1], 500, 20, 0]:      # t = 999 (or 980) ... 0
        mine = ours.step(model_output, t, x_t, generator=seeded(2))
        theirs = peer.step(model_output, t, x_t, generator=seeded(2))
        assert isinstance(mine, StepOutput)
        torch.testing.assert_close(mine.prev_sample, theirs.prev_sample, rtol=0, atol=1e-10)
        torch.testing.assert_close(mine.pred_x0, theirs.pred_original_sample, rtol=0, atol=1e-10)
        # float32 against the stock peer: same noise, differences are diffusers' float32 rounding
        mine = ours.step(model_output.float(), t, x_t.float(), generator=seeded(2))
        theirs = stock.step(model_output.float(), t, x_t.float(), generator=seeded(2))
        torch.testing.assert_close(mine.prev_sample, theirs.prev_sample, rtol=1e-5, atol=1e-4)


# The final sample's |x|.sum() and |x|.mean() are pinned, so a regression is caught even if both libraries change.
@pytest.mark.parametrize("prediction_type, eta, pinned_sum, pinned_mean", [
    ("eps", 0.0, 302.5123, 0.3938963), ("eps", 1.0, 250.6761, 0.3264013),
    ("v", 0.0, 194.5157, 0.2532757), ("v", 1.0, 185.1037, 0.2410204),
])
def test_ddim_trajectory_matches_diffusers(prediction_type, eta, pinned_sum, pinned_mean):
    """50 leading-spaced steps of the stock diffusers DDIMScheduler, float32, from the same seeded noise."""
    ours = DDIMScheduler(prediction_type=prediction_type)
    peer = PeerDDIM(prediction_type=PEER_PREDICTION[prediction_type])
    ours.set_timesteps(50)
    peer.set_timesteps(50)
    assert torch.equal(ours.timesteps, peer.timesteps)
    x = torch.randn(4, 3, 8, 8, generator=seeded(0))
    y = x.clone()
    g_ours, g_peer = seeded(1), seeded(1)
    for t in ours.timesteps:
        x = ours.step(dummy_model(x, t), t, x, eta=eta, generator=g_ours).prev_sample
        y = peer.step(dummy_model(y, t), t, y, eta=eta, generator=g_peer).prev_sample
    torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    assert abs(x.abs().sum().item() - pinned_sum) < 1e-2
    assert abs(x.abs().mean().item() - pinned_mean) < 1e-5


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
def test_ddim_steps_match_diffusers_in_float64(prediction_type):
    ours = DDIMScheduler(prediction_type=prediction_type, beta_schedule="cosine")
    peer = PeerDDIM(prediction_type=PEER_PREDICTION[prediction_type], beta_schedule="squaredcos_cap_v2")
    float64_peer(peer, ours)
    ours.set_timesteps(10)
    peer.set_timesteps(10)
    x_t = randn(0, 2, 1, 8, 8)
    model_output = randn(1, 2, 1, 8, 8).clamp(-1, 1)
    for t in ours.timesteps[[0, 1, 5, -1]]:
        mine = ours.step(model_output, t, x_t, eta=0.5, generator=seeded(2))
        theirs = peer.step(model_output, t, x_t, eta=0.5, generator=seeded(2))
        torch.testing.assert_close(mine.prev_sample, theirs.prev_sample, rtol=0, atol=1e-10)
        torch.testing.assert_close(mine.pred_x0, theirs.pred_original_sample, rtol=0, atol=1e-10)


@pytest.mark.parametrize("prediction_type", ["eps", "v"])
def test_ddim_use_clipped_model_output_matches_diffusers(prediction_type):
    """The eps recomputed from the clipped x0 (diffusers' `use_clipped_model_output=True`), at steps that clip."""
    ours = DDIMScheduler(prediction_type=prediction_type, beta_schedule="cosine", use_clipped_model_output=True)
    peer = PeerDDIM(prediction_type=PEER_PREDICTION[prediction_type], beta_schedule="squaredcos_cap_v2")
    float64_peer(peer, ours)
    ours.set_timesteps(10)
    peer.set_timesteps(10)
    x_t, model_output = randn(0, 2, 1, 8, 8), 3 * randn(1, 2, 1, 8, 8)  # large outputs: pred_x0 is clipped
    changed = []
    for t in ours.timesteps[[0, 1, 5, -1]]:
        mine = ours.step(model_output, t, x_t, eta=0.5, generator=seeded(2))
        theirs = peer.step(model_output, t, x_t, eta=0.5, generator=seeded(2), use_clipped_model_output=True)
        torch.testing.assert_close(mine.prev_sample, theirs.prev_sample, rtol=0, atol=1e-10)
        plain = ours.step(model_output, t, x_t, eta=0.5, generator=seeded(2), use_clipped_model_output=False)
        changed.append(not torch.allclose(plain.prev_sample, mine.prev_sample))
    assert changed[:3] == [True, True, True]  # the flag matters wherever x0 was clipped and alpha_bar_prev < 1


# ---- Maths -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_q_xt_given_x0_mean_and_variance_by_monte_carlo(t):
    n, x0_value = 200_000, 0.7
    sched = DDPMScheduler()
    eps = torch.randn(n, 1, generator=seeded(t), dtype=torch.float64)
    x_t = sched.add_noise(torch.full((n, 1), x0_value, dtype=torch.float64), eps, t).flatten()
    alpha_bar = math.prod(1 - b for b in closed_form_betas("linear")[: t + 1])   # computed independently
    mean, var = alpha_bar**0.5 * x0_value, 1 - alpha_bar
    assert abs(x_t.mean().item() - mean) < 3 * math.sqrt(var / n)
    assert abs(x_t.var().item() - var) < 3 * var * math.sqrt(2 / (n - 1))


def bayes_posterior(betas: list[float], t: int, x0: float, x_t: float) -> tuple[float, float]:
    """q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0): product of Gaussians, precision-weighted."""
    alpha_t = 1 - betas[t]
    alpha_bar_prev = math.prod(1 - b for b in betas[:t])
    # as a function of x_{t-1}: q(x_t | x_{t-1}) = N(x_t; sqrt(alpha_t) x_{t-1}, beta_t)
    precision_lik, mean_lik = alpha_t / betas[t], x_t / alpha_t**0.5
    precision_prior, mean_prior = 1 / (1 - alpha_bar_prev), alpha_bar_prev**0.5 * x0
    precision = precision_lik + precision_prior
    return (precision_lik * mean_lik + precision_prior * mean_prior) / precision, 1 / precision


@pytest.mark.parametrize("name", SCHEDULES)
def test_posterior_matches_bayes_rule(name):
    sched = DDPMScheduler(beta_schedule=name)
    betas = closed_form_betas(name)
    x0 = torch.tensor([[0.3], [-0.8], [0.9]], dtype=torch.float64)
    x_t = torch.tensor([[0.5], [1.2], [-2.0]], dtype=torch.float64)
    for t in [1, 10, 500, 999]:
        mean, variance, log_variance = sched.posterior(x0, x_t, torch.full((3,), t))
        for i in range(3):
            m, v = bayes_posterior(betas, t, x0[i, 0].item(), x_t[i, 0].item())
            assert mean[i, 0].item() == pytest.approx(m, rel=1e-9, abs=1e-12)
            assert variance[i, 0].item() == pytest.approx(v, rel=1e-9)
            assert log_variance[i, 0].item() == pytest.approx(math.log(v), rel=1e-9)


def test_posterior_matches_numerical_bayes_on_a_grid():
    sched, betas = DDPMScheduler(), closed_form_betas("linear")
    t, x0, x_t = 300, 0.3, 0.5
    alpha_bar_prev = math.prod(1 - b for b in betas[:t])
    grid = torch.linspace(-4, 4, 800_001, dtype=torch.float64)             # values of x_{t-1}
    log_p = (-(x_t - (1 - betas[t]) ** 0.5 * grid) ** 2 / (2 * betas[t])
             - (grid - alpha_bar_prev**0.5 * x0) ** 2 / (2 * (1 - alpha_bar_prev)))
    w = torch.softmax(log_p, dim=0)
    grid_mean = (w * grid).sum().item()
    grid_var = (w * (grid - grid_mean) ** 2).sum().item()
    x0_batch = torch.full((1, 1), x0, dtype=torch.float64)                # (B, D) = (1, 1)
    mean, variance, _ = sched.posterior(x0_batch, torch.full_like(x0_batch, x_t), t)
    assert mean.item() == pytest.approx(grid_mean, rel=1e-6)
    assert variance.item() == pytest.approx(grid_var, rel=1e-4)


def test_ddpm_posterior_at_t0_is_x0_itself():
    mean, variance, _ = DDPMScheduler().posterior(torch.full((1, 2), 0.4), torch.full((1, 2), -0.3), 0)
    torch.testing.assert_close(mean, torch.full((1, 2), 0.4))
    assert variance.item() == 0.0


def test_ddim_eta0_is_deterministic():
    sched = DDIMScheduler()
    sched.set_timesteps(20)
    outputs = []
    for seed in (1, 2):
        x, g = torch.randn(2, 1, 8, 8, generator=seeded(0)), seeded(seed)
        for t in sched.timesteps:
            x = sched.step(dummy_model(x, t), t, x, eta=0.0, generator=g).prev_sample
        outputs.append(x)
    assert torch.equal(outputs[0], outputs[1])


def test_ddim_eta1_on_all_steps_equals_ddpm():
    """sigma_t(eta = 1)^2 is the DDPM posterior variance: DDIM with eta = 1 and all T steps is DDPM.

    (Without clipping: DDIM clips pred_x0 but keeps the model's eps, DDPM only sees the clipped pred_x0.)
    """
    ddim, ddpm = DDIMScheduler(eta=1.0, clip_sample=False), DDPMScheduler(clip_sample=False)
    ddim.set_timesteps(T)
    x_t = randn(0, 2, 1, 8, 8)
    model_output = randn(1, 2, 1, 8, 8)
    for t in [999, 500, 10]:
        a = ddim.step(model_output, t, x_t, generator=seeded(2)).prev_sample
        b = ddpm.step(model_output, t, x_t, generator=seeded(2)).prev_sample
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_ddim_previous_timestep_comes_from_the_list():
    """With a spacing where t - T // n is wrong (trailing, n = 7), step lands on the next list entry."""
    sched = DDIMScheduler(timestep_spacing="trailing", clip_sample=False)
    sched.set_timesteps(7)
    t, prev = int(sched.timesteps[0]), int(sched.timesteps[1])
    assert (t, prev) == (999, 856) and sched.previous_timestep(int(sched.timesteps[-1])) == -1
    x_t = randn(0, 1, 1, 4, 4)
    eps = randn(1, 1, 1, 4, 4)
    ab_t, ab_prev = sched.alpha_bar[t].item(), sched.alpha_bar[prev].item()
    pred_x0 = (x_t - (1 - ab_t) ** 0.5 * eps) / ab_t**0.5
    expected = ab_prev**0.5 * pred_x0 + (1 - ab_prev) ** 0.5 * eps
    torch.testing.assert_close(sched.step(eps, t, x_t).prev_sample, expected)


@pytest.mark.parametrize("name", SCHEDULES)
def test_eps_x0_v_conversions_invert_each_other(name):
    x0 = torch.rand(6, 1, 5, 5, generator=seeded(0), dtype=torch.float64) * 2 - 1
    eps = randn(1, 6, 1, 5, 5)
    t = torch.tensor([0, 1, 100, 500, 900, 999])
    for prediction_type in ("eps", "x0", "v"):
        sched = DDPMScheduler(beta_schedule=name, prediction_type=prediction_type)
        x_t, v = sched.add_noise(x0, eps, t), sched.v_target(x0, eps, t)
        target = sched.training_target(x0, eps, t)                        # eps, x0 or v
        for got, want in [
            (sched.pred_x0_from_eps(x_t, t, eps), x0), (sched.eps_from_x0(x_t, t, x0), eps),
            (sched.pred_x0_from_v(x_t, t, v), x0), (sched.eps_from_v(x_t, t, v), eps),
            (sched.to_pred_x0(target, t, x_t), x0), (sched.to_eps(target, t, x_t), eps),
        ]:
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_float32_stays_float32():
    sched = DDPMScheduler()
    x0 = torch.zeros(2, 1, 4, 4)
    x_t = sched.add_noise(x0, torch.ones_like(x0), 7)
    assert x_t.dtype == torch.float32
    assert sched.step(x_t, 7, x_t, generator=seeded(0)).prev_sample.dtype == torch.float32


# ---- Bad input: each raises a ValueError that says what was wrong ----------------------------------
X, X1D = torch.zeros(2, 1, 4, 4), torch.zeros(16)
X_NAN = torch.full((2, 1, 4, 4), float("nan"))


def ddim_with_steps(n: int = 10) -> DDIMScheduler:
    sched = DDIMScheduler()
    sched.set_timesteps(n)
    return sched


OUT_OF_RANGE = r"out of range.*\[0, 1000\)"
BAD_INPUT = {
    "unknown schedule": (lambda: make_betas("cos"), "Unknown beta schedule 'cos'.*'cosine'"),
    "diffusers schedule name": (lambda: DDIMScheduler(beta_schedule="squaredcos_cap_v2"), "Unknown beta schedule"),
    "unknown schedule option": (lambda: make_betas("cosine", beta_start=1e-4), "does not take"),
    "diffusers prediction name": (lambda: DDPMScheduler(prediction_type="epsilon"),
                                  "Unknown prediction_type 'epsilon'.*diffusers calls it"),
    "unknown prediction type": (lambda: DDIMScheduler(prediction_type="noise"), "Unknown prediction_type"),
    "unknown variance type": (lambda: DDPMScheduler(variance_type="learned"), "Unknown variance_type"),
    "unknown spacing": (lambda: DDIMScheduler(timestep_spacing="uniform"), "Unknown timestep_spacing"),
    "add_noise t < 0": (lambda: DDPMScheduler().add_noise(X, X, -1), OUT_OF_RANGE),
    "add_noise t = T": (lambda: DDPMScheduler().add_noise(X, X, T), OUT_OF_RANGE),
    "add_noise batched t": (lambda: DDPMScheduler().add_noise(X, X, torch.tensor([0, T])), OUT_OF_RANGE),
    "ddpm step t < 0": (lambda: DDPMScheduler().step(X, -1, X), OUT_OF_RANGE),
    "ddpm step t = T": (lambda: DDPMScheduler().step(X, torch.tensor(T), X), OUT_OF_RANGE),
    "ddim step t < 0": (lambda: ddim_with_steps().step(X, -1, X), OUT_OF_RANGE),
    "ddim step t = T": (lambda: ddim_with_steps().step(X, T, X), OUT_OF_RANGE),
    "extract t = T": (lambda: extract(torch.zeros(10), torch.tensor([10]), ndim=4), r"out of range.*\[0, 10\)"),
    "float t": (lambda: DDPMScheduler().add_noise(X, X, torch.tensor([1.0, 2.0])), "integer"),
    "float t in step": (lambda: DDPMScheduler().step(X, 3.5, X), "t must be an integer timestep, got 3.5"),
    "t batch size": (lambda: DDPMScheduler().add_noise(X, X, torch.tensor([1, 2, 3])), "the batch has 2 samples"),
    "add_noise rank 1": (lambda: DDPMScheduler().add_noise(X1D, X1D, 3), "at least 2 dims"),
    "step rank 1": (lambda: DDPMScheduler().step(X1D, 3, X1D), "at least 2 dims"),
    "step shape mismatch": (lambda: DDPMScheduler().step(torch.zeros(2, 2, 4, 4), 3, X),
                            r"model_output has shape \(2, 2, 4, 4\) but x_t has shape \(2, 1, 4, 4\)"),
    "add_noise shape mismatch": (lambda: DDPMScheduler().add_noise(X, torch.zeros(2, 1, 4, 5), 3), "x0 has shape"),
    "ddpm too many steps": (lambda: DDPMScheduler().set_timesteps(1001),
                            "num_inference_steps=1001 is larger than num_train_timesteps=1000"),
    "ddim too many steps": (lambda: ddim_with_steps(1001), "num_inference_steps=1001 is larger"),
    "ddim without set_timesteps": (lambda: DDIMScheduler().step(X, 980, X), "call set_timesteps"),
    "ddim set_timesteps(None)": (lambda: DDIMScheduler().set_timesteps(None), "DDIM needs num_inference_steps"),
    "ddim t not in timesteps": (lambda: ddim_with_steps(50).step(X, 999, X), "t=999 is not in scheduler.timesteps"),
    "NaN x0": (lambda: DDPMScheduler().add_noise(X_NAN, X, 5), "x0 contains NaN"),
    "NaN eps": (lambda: DDPMScheduler().add_noise(X, X_NAN, 5), "eps contains NaN"),
    "NaN model_output": (lambda: DDPMScheduler().step(X_NAN, 5, X), "model_output contains NaN"),
}


@pytest.mark.parametrize("call, match", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_raises_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_ddim_warns_when_the_first_step_amplifies_eps_beyond_recovery():
    # cosine + trailing starts at t = 999, alpha_bar ~ 2e-9: without clipping, x0 = (x_t - ...) / sqrt(alpha_bar)
    latent = DDIMScheduler(beta_schedule="cosine", clip_sample=False, timestep_spacing="trailing")
    with pytest.warns(UserWarning, match=r"t=999 has alpha_bar=2.4e-09: .* = 20,291, and clip_sample is off"):
        latent.set_timesteps(50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DDIMScheduler(beta_schedule="cosine", clip_sample=False).set_timesteps(50)        # leading: t = 980
        DDIMScheduler(beta_schedule="cosine", timestep_spacing="trailing").set_timesteps(50)  # clipped pixels
        DDIMScheduler(beta_schedule="linear", clip_sample=False, timestep_spacing="trailing").set_timesteps(50)
