"""DPM-Solver++(2M): a second-order multistep solver of the diffusion ODE, in the data (x0) prediction form.

DDIM with eta = 0 is the first-order (Euler) solver of the probability-flow ODE written in the log-SNR
lambda_t = log(alpha_t / sigma_t), with alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t). With
h = lambda_prev - lambda_t (> 0: the step moves towards the data) and D0 = pred_x0 at t:

    first order (= DDIM, eta = 0):  x_prev = (sigma_prev / sigma_t) x_t - alpha_prev (e^{-h} - 1) D0
    second order (2M):              x_prev = first order - 1/2 alpha_prev (e^{-h} - 1) D1,
                                    D1 = (D0 - pred_x0 at the step before) / r,  r = h_last / h

D1 is a finite difference of the model's x0 predictions along lambda: the solver reuses the prediction it
made one step earlier, so each step still costs one model call (the "M" is multistep) but the local error
falls from O(h^2) to O(h^3). The first step has no history and is first order; so is the last one, which
lands on alpha_bar = 1 (sigma = 0, lambda = +inf, e^{-h} = 0) and returns D0 itself.

Clipping pred_x0 to [-1, 1] (`clip_sample=True`) equals diffusers' `thresholding=True, sample_max_value=1.0`
(its dynamic threshold s is clamped to [1, 1]); the clipped x0 is what the history stores, so the implied
eps always agrees with the clipped x0 (what `DDIMScheduler(use_clipped_model_output=True)` does).

Timesteps are diffusers' for this solver: "linspace" (its default) and "leading" place n + 1 points and drop
the final t = 0, because the last step goes all the way to sigma = 0; "trailing" is the usual T-1 downwards.

Notation (here -> DPM-Solver++ paper): alpha_prev, sigma_prev -> alpha_{t_i}, sigma_{t_i}; alpha_t, sigma_t
-> alpha_{t_{i-1}}, sigma_{t_{i-1}}; pred_x0 -> x_theta(x_{t_{i-1}}, t_{i-1}); h -> h_i; r -> r_i.

References:
    Lu, Zhou, Bao, Chen, Li, Zhu (2022), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
    Probabilistic Models", arXiv:2211.01095, Algorithm 2 (multistep second order, data prediction).
    Lu et al. (2022), "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around
    10 Steps", arXiv:2206.00927 (the log-SNR change of variables, Sec. 3.1).
    diffusers' DPMSolverMultistepScheduler (algorithm_type="dpmsolver++", solver_order=2, "midpoint").

Derived in notebooks/02_class_conditional.ipynb.
"""
from __future__ import annotations

import math

import torch

from .schedules import TIMESTEP_SPACINGS, NoiseSchedule, StepOutput, _check_finite, spaced_timesteps


def dpm_timesteps(num_inference_steps: int, num_train_timesteps: int, spacing: str = "linspace") -> torch.Tensor:
    """diffusers' DPM-Solver timesteps `(n,)` descending: n + 1 points without the final 0 ("leading",
    "linspace"), or the usual "trailing" list. Derived in notebooks/02_class_conditional.ipynb."""
    n, T = num_inference_steps, num_train_timesteps
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"Unknown timestep_spacing {spacing!r}. Choose one of {TIMESTEP_SPACINGS}.")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n < T:
        raise ValueError(f"num_inference_steps must be an int in [1, {T - 1}] for DPM-Solver (the last step goes "
                         f"to sigma = 0 on its own), got {n!r}; e.g. set_timesteps(25).")
    if spacing == "trailing":
        return spaced_timesteps(n, T, "trailing")                         # (n,)
    return spaced_timesteps(n + 1, T, spacing)[:-1]                       # (n,): drop the trailing t = 0


class DPMSolverMultistepScheduler(NoiseSchedule):
    """DPM-Solver++ (multistep, data prediction) of order 1 or 2 on top of the shared `NoiseSchedule`.

    Args:
        num_train_timesteps, beta_schedule, prediction_type, **schedule_kwargs: as `DDIMScheduler`.
        solver_order: 2 (DPM-Solver++(2M), the default and the one guided sampling wants) or 1 (= DDIM).
        clip_sample: clip pred_x0 to [-clip_sample_range, clip_sample_range] before it enters the solver.
        timestep_spacing: "linspace" (diffusers' default for this solver), "leading" or "trailing".

    The solver keeps the previous step's x0 prediction, so `step` must walk `self.timesteps` in order;
    stepping at the first timestep starts a new trajectory (the history is cleared).
    Derived in notebooks/02_class_conditional.ipynb.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 prediction_type: str = "eps", solver_order: int = 2, clip_sample: bool = True,
                 clip_sample_range: float = 1.0, timestep_spacing: str = "linspace", **schedule_kwargs):
        super().__init__(num_train_timesteps, beta_schedule, prediction_type, **schedule_kwargs)
        if solver_order not in (1, 2):
            raise ValueError(f"solver_order must be 1 (DDIM) or 2 (DPM-Solver++(2M)), got {solver_order!r}.")
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"Unknown timestep_spacing {timestep_spacing!r}. Choose one of {TIMESTEP_SPACINGS}.")
        self.solver_order = solver_order
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range
        self.timestep_spacing = timestep_spacing
        self.timesteps = torch.zeros(0, dtype=torch.long)
        self.num_inference_steps = None
        self._last = None  # (t, pred_x0) of the step before, for D1

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Build `self.timesteps` (descending) and clear the solver's history.

        Derived in notebooks/02_class_conditional.ipynb.
        """
        if num_inference_steps is None:
            raise ValueError("DPM-Solver needs num_inference_steps, e.g. set_timesteps(25); it has no default.")
        self.timesteps = dpm_timesteps(num_inference_steps, self.num_train_timesteps, self.timestep_spacing)
        self.num_inference_steps = num_inference_steps
        self._last = None

    def _alpha_sigma_lambda(self, t: int) -> tuple[float, float, float]:
        """alpha_t = sqrt(alpha_bar), sigma_t = sqrt(1 - alpha_bar) and lambda_t = log(alpha_t / sigma_t);
        t = -1 is "after the last step": alpha = 1, sigma = 0, lambda = +inf."""
        if t < 0:
            return 1.0, 0.0, math.inf
        ab = float(self.alpha_bar[t])
        alpha, sigma = ab**0.5, (1 - ab) ** 0.5
        return alpha, sigma, math.log(alpha) - math.log(sigma)           # DPM-Solver Sec. 3.1, lambda_t

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor,
             generator: torch.Generator | None = None) -> StepOutput:
        """One DPM-Solver++ step from x_t to the next (smaller) timestep of `self.timesteps`.

        `generator` is accepted for the common API and unused: the solver is deterministic.
        Derived in notebooks/02_class_conditional.ipynb.
        """
        if self.num_inference_steps is None:
            raise ValueError("DPMSolverMultistepScheduler.timesteps is empty: call set_timesteps(n) before step.")
        self._check_sample("x_t", x_t)
        self._check_same_shape("model_output", model_output, "x_t", x_t)
        _check_finite("model_output", model_output)
        t = self._scalar_t(t)
        prev_t = self.previous_timestep(t)                                # looked up in self.timesteps
        if t == int(self.timesteps[0]):
            self._last = None                                             # a new trajectory
        elif self._last is None or self.previous_timestep(self._last[0]) != t:
            raise ValueError(f"DPM-Solver is multistep: it needs the step before t={t}. Call set_timesteps(n) and "
                             "step through scheduler.timesteps in order, from the first.")

        pred_x0 = self.to_pred_x0(model_output, t, x_t)                   # D0 = x_theta(x_t, t)
        if self.clip_sample:
            pred_x0 = pred_x0.clamp(-self.clip_sample_range, self.clip_sample_range)

        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(t)
        alpha_prev, sigma_prev, lambda_prev = self._alpha_sigma_lambda(prev_t)
        h = lambda_prev - lambda_t                                        # step size in log-SNR (inf at the end)
        phi = math.expm1(-h)                                              # e^{-h} - 1, -1 at the last step
        prev_sample = (sigma_prev / sigma_t) * x_t - (alpha_prev * phi) * pred_x0  # DPM-Solver++ Sec. 4.1, 1st order (= DDIM)
        if self.solver_order == 2 and self._last is not None and prev_t >= 0:
            last_t, last_x0 = self._last
            h_last = lambda_t - self._alpha_sigma_lambda(last_t)[2]       # the previous step's h
            d1 = (pred_x0 - last_x0) / (h_last / h)                       # D1 = (D0 - D_last) / r
            prev_sample = prev_sample - 0.5 * (alpha_prev * phi) * d1     # DPM-Solver++ Algorithm 2, 2nd order
        self._last = (t, pred_x0)
        return StepOutput(prev_sample=prev_sample, pred_x0=pred_x0)
