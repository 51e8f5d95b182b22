"""Tests for minildm.schedulers.dpm_solver: parity with diffusers' DPMSolverMultistepScheduler, order 1 = DDIM,
second-order convergence on a Gaussian whose ODE solution is known in closed form, and bad input."""
from __future__ import annotations

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler as PeerDPM

from minildm.schedulers import TIMESTEP_SPACINGS, DDIMScheduler, DPMSolverMultistepScheduler, dpm_timesteps

PEER_PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dummy_model(x: torch.Tensor, t) -> torch.Tensor:
    """The deterministic stand-in for a network used in diffusers' scheduler tests."""
    return x * t / (t + 1)


@pytest.mark.parametrize("spacing", TIMESTEP_SPACINGS)
@pytest.mark.parametrize("n", [1, 7, 20, 50, 100, 999])
def test_timesteps_match_diffusers(spacing, n):
    peer = PeerDPM(timestep_spacing=spacing)
    peer.set_timesteps(n)
    ours = DPMSolverMultistepScheduler(timestep_spacing=spacing)
    ours.set_timesteps(n)
    assert torch.equal(ours.timesteps, peer.timesteps.long()), (ours.timesteps[:5], peer.timesteps[:5])
    assert torch.equal(ours.timesteps, dpm_timesteps(n, 1000, spacing))


@pytest.mark.parametrize("prediction_type", ["eps", "v", "x0"])
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("n", [10, 25])
def test_trajectory_matches_diffusers(prediction_type, order, clip, n):
    """A whole float32 trajectory against the stock peer; clipping x0 to [-1, 1] is diffusers' thresholding with
    sample_max_value=1 (its dynamic threshold is then clamped to exactly 1)."""
    ours = DPMSolverMultistepScheduler(prediction_type=prediction_type, solver_order=order, clip_sample=clip)
    peer = PeerDPM(prediction_type=PEER_PREDICTION[prediction_type], solver_order=order, thresholding=clip,
                   sample_max_value=1.0)
    ours.set_timesteps(n)
    peer.set_timesteps(n)
    x = 2 * torch.randn(4, 1, 8, 8, generator=seeded(0))  # large: clipping happens
    y = x.clone()
    clipped = False
    for t in ours.timesteps:
        out = ours.step(dummy_model(x, t), t, x)
        clipped |= bool(clip and out.pred_x0.abs().max() >= 1)
        x = out.prev_sample
        y = peer.step(dummy_model(y, t), t, y).prev_sample
    torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)
    assert clipped == clip


def test_order_one_is_ddim_on_the_same_timesteps():
    """DPM-Solver++ of order 1 is DDIM (eta = 0, eps recomputed from the clipped x0), step for step."""
    dpm = DPMSolverMultistepScheduler(solver_order=1)
    ddim = DDIMScheduler(use_clipped_model_output=True)
    dpm.set_timesteps(20)
    ddim.set_timesteps(20)
    ddim.timesteps = dpm.timesteps.clone()  # DDIM's own spacing differs; the maths must not
    x = 2 * torch.randn(3, 1, 8, 8, generator=seeded(1), dtype=torch.float64)
    y = x.clone()
    for t in dpm.timesteps:
        x = dpm.step(dummy_model(x, t), t, x).prev_sample
        y = ddim.step(dummy_model(y, t), t, y).prev_sample
    torch.testing.assert_close(x, y, rtol=0, atol=1e-10)


def test_second_order_converges_faster_than_ddim_on_a_gaussian():
    """Data x0 ~ N(mu, s^2): the optimal eps is sigma_t (x_t - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2) and the
    probability-flow ODE keeps z = (x_t - alpha_t mu) / sqrt(alpha_t^2 s^2 + sigma_t^2) constant. Compared at
    t = 500 (in every list below; the very last step jumps to sigma = 0 and returns the posterior mean, which is
    not an ODE step): halving the step size cuts DDIM's error 2x (first order), DPM-Solver++(2M)'s ~4x."""
    mu, s = 0.3, 0.5
    errors = {}
    for order in (1, 2):
        sched = DPMSolverMultistepScheduler(solver_order=order, clip_sample=False)
        for n in (10, 20, 40):
            sched.set_timesteps(n)
            ab = sched.alpha_bar[int(sched.timesteps[0])]
            x = torch.randn(4096, 1, generator=seeded(3), dtype=torch.float64)         # (B, 1) x_T
            z = (x - ab**0.5 * mu) / (ab * s**2 + 1 - ab) ** 0.5
            for t in sched.timesteps[:(sched.timesteps == 500).nonzero().item()]:       # stop on t = 500
                ab = sched.alpha_bar[int(t)]
                eps = (1 - ab) ** 0.5 * (x - ab**0.5 * mu) / (ab * s**2 + 1 - ab)
                x = sched.step(eps, t, x).prev_sample
            ab = sched.alpha_bar[500]
            errors[order, n] = (x - (ab**0.5 * mu + (ab * s**2 + 1 - ab) ** 0.5 * z)).abs().max().item()
    first = [errors[1, 10] / errors[1, 20], errors[1, 20] / errors[1, 40]]
    second = [errors[2, 10] / errors[2, 20], errors[2, 20] / errors[2, 40]]
    assert all(1.8 < r < 2.2 for r in first), first                     # measured 1.97, 1.99
    assert all(r > 3.3 for r in second), second                         # measured 3.51, 3.76
    assert errors[2, 40] < errors[1, 40] / 5                            # measured 4.0e-4 vs 2.8e-3


def test_guided_sample_runs_with_dpm_solver():
    from minildm.models.unet import UNet, UNetConfig
    from minildm.pipelines.guided import guided_sample
    torch.manual_seed(0)
    model = UNet(UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), attention=("none", "none"),
                            cross_attention=(False, False), num_classes=3))
    out = guided_sample(model, DPMSolverMultistepScheduler(), torch.tensor([0, 1, 2]), 1.5, seeded(0), 5,
                        progress=False)
    assert out.images.shape == (3, 1, 8, 8) and torch.isfinite(out.images).all()


@pytest.mark.parametrize("make, match", [
    (lambda: DPMSolverMultistepScheduler(solver_order=3), "solver_order must be 1"),
    (lambda: DPMSolverMultistepScheduler(timestep_spacing="karras"), "Unknown timestep_spacing"),
    (lambda: DPMSolverMultistepScheduler().set_timesteps(1000), r"int in \[1, 999\]"),
    (lambda: DPMSolverMultistepScheduler().set_timesteps(0), r"int in \[1, 999\]"),
    (lambda: DPMSolverMultistepScheduler().set_timesteps(None), "needs num_inference_steps"),
])
def test_bad_settings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_steps_out_of_order_are_refused():
    sched = DPMSolverMultistepScheduler()
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match="call set_timesteps"):
        sched.step(x, 999, x)
    sched.set_timesteps(10)
    with pytest.raises(ValueError, match="needs the step before"):
        sched.step(x, sched.timesteps[3], x)                      # skipped the first steps
    sched.step(x, sched.timesteps[0], x)
    with pytest.raises(ValueError, match="needs the step before"):
        sched.step(x, sched.timesteps[2], x)                      # skipped one
    with pytest.raises(ValueError, match="not in scheduler.timesteps"):
        sched.step(x, 998, x)
    sched.step(x, sched.timesteps[0], x)                          # the first timestep starts afresh
    sched.step(x, sched.timesteps[1], x)
