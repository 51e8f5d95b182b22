"""DDPM: ancestral sampling through the Gaussian posterior q(x_{t-1} | x_t, x0).

Training (`NoiseSchedule.add_noise`, `training_target`) and sampling (`DDPMScheduler.step`) of Ho et al.
2020, with three things from later papers: the x0 and v parameterisations (Salimans & Ho 2022), other
beta schedules (Nichol & Dhariwal 2021), and sampling on fewer steps than the model was trained on.

One step, from x_t to x_prev (prev = the next entry of `timesteps`; t - 1 when sampling on all T steps):
    1. pred_x0 = the model's estimate of x0 (from eps, x0 or v), clipped to [-1, 1] if `clip_sample`
    2. mean    = coef1 * pred_x0 + coef2 * x_t                     DDPM eq. (7), the posterior mean
    3. x_prev  = mean + sqrt(variance) * noise  (no noise at t = 0)  DDPM Algorithm 2
With prev = t - 1 this is exactly DDPM's eq. (11) written through pred_x0. With skipped steps the same
formulas hold with beta_t replaced by 1 - alpha_bar_t / alpha_bar_prev (the forward process from prev to
t is again Gaussian), which is what diffusers' DDPMScheduler does; `step` matches it number for number.

Timesteps are 0-based: t = 0 .. T-1 here is t = 1 .. T in the DDPM paper.

References:
    Ho, Jain, Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
    Song, Meng, Ermon (2021), "Denoising Diffusion Implicit Models", arXiv:2010.02502.
    Nichol, Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", arXiv:2102.09672.
    Salimans, Ho (2022), "Progressive Distillation for Fast Sampling of Diffusion Models" (v-prediction),
    arXiv:2202.00512.

Derived in notebooks/01_ddpm_from_scratch.ipynb.
"""
from __future__ import annotations

import torch

from .schedules import (
    NoiseSchedule,
    StepOutput,
    _check_finite,
    randn_like_sample,
    spaced_timesteps,
)

VARIANCE_TYPES = ("fixed_small", "fixed_large")


def posterior_coefficients(alpha_bar_t, alpha_bar_prev):
    """coef1, coef2 and variance of q(x_prev | x_t, x0) = N(coef1 * x0 + coef2 * x_t, variance).

    Works on floats or tensors. With alpha_bar_prev = alpha_bar_{t-1} these are DDPM eq. (7) exactly.
    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """
    alpha_t = alpha_bar_t / alpha_bar_prev                                # alpha_t (of the jump prev -> t)
    beta_t = 1 - alpha_t                                                  # beta_t
    coef1 = alpha_bar_prev**0.5 * beta_t / (1 - alpha_bar_t)              # DDPM eq. (7), factor of x0
    coef2 = alpha_t**0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar_t)       # DDPM eq. (7), factor of x_t
    variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t          # DDPM eq. (7), beta_tilde
    return coef1, coef2, variance


class DDPMScheduler(NoiseSchedule):
    """The DDPM sampler (Ho et al. 2020, Algorithm 2) on top of the shared `NoiseSchedule`.

    Args:
        num_train_timesteps: T, the number of diffusion steps the model is trained on.
        beta_schedule: one of `SCHEDULES` ("linear", "cosine", "quadratic", "sigmoid").
        prediction_type: what the model outputs: "eps", "x0" or "v".
        clip_sample: clip pred_x0 to [-clip_sample_range, clip_sample_range] (pixels live in [-1, 1]).
        variance_type: "fixed_small" (sigma_t^2 = beta_tilde_t) or "fixed_large" (sigma_t^2 = beta_t),
            the two choices of DDPM Sec. 3.2.
        **schedule_kwargs: passed to `make_betas`, e.g. beta_start=1e-4, beta_end=0.02.

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 prediction_type: str = "eps", clip_sample: bool = True, clip_sample_range: float = 1.0,
                 variance_type: str = "fixed_small", **schedule_kwargs):
        super().__init__(num_train_timesteps, beta_schedule, prediction_type, **schedule_kwargs)
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(f"Unknown variance_type {variance_type!r}. Choose one of {VARIANCE_TYPES}.")
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range
        self.variance_type = variance_type

        # q(x_{t-1} | x_t, x0) for consecutive steps, all (T,) float64
        coef1, coef2, variance = posterior_coefficients(self.alpha_bar, self.alpha_bar_prev)
        self.posterior_mean_coef1 = coef1                                 # DDPM eq. (7)
        self.posterior_mean_coef2 = coef2                                 # DDPM eq. (7)
        self.posterior_variance = variance                                # DDPM eq. (7), beta_tilde; 0 at t = 0
        # log(beta_tilde) with the t = 0 entry (log 0) replaced by the t = 1 entry, as in the DDPM code
        self.posterior_log_variance_clipped = torch.log(torch.cat([variance[1:2], variance[1:]]))
        self.set_timesteps()

    def set_timesteps(self, num_inference_steps: int | None = None) -> None:
        """Build `self.timesteps` (descending): all T steps by default, or `num_inference_steps` of them
        with "leading" spacing (0, k, 2k, ..., k = T // n), as diffusers does.

        Derived in notebooks/01_ddpm_from_scratch.ipynb.
        """
        n = self.num_train_timesteps if num_inference_steps is None else num_inference_steps
        self.timesteps = spaced_timesteps(n, self.num_train_timesteps, "leading")  # (n,)
        self.num_inference_steps = n

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t):
        """Mean, variance and log-variance of q(x_{t-1} | x_t, x0); variance tensors are `(B, 1, ..., 1)`.

        Derived in notebooks/01_ddpm_from_scratch.ipynb.
        """
        self._check_sample("x_t", x_t)
        self._check_same_shape("x0", x0, "x_t", x_t)
        coef1 = self._coef(self.posterior_mean_coef1, t, x_t)             # (B, 1, 1, 1)
        coef2 = self._coef(self.posterior_mean_coef2, t, x_t)             # (B, 1, 1, 1)
        mean = coef1 * x0 + coef2 * x_t                                   # DDPM eq. (6), (7)
        variance = self._coef(self.posterior_variance, t, x_t)            # (B, 1, 1, 1), DDPM eq. (7)
        log_variance = self._coef(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor,
             generator: torch.Generator | None = None) -> StepOutput:
        """One ancestral sampling step from x_t to the previous timestep of `self.timesteps`.

        `t` is an int or a one-element tensor (an element of `self.timesteps`); `generator` makes the noise
        reproducible (the same seeded generator gives the same noise as diffusers' DDPMScheduler).
        Derived in notebooks/01_ddpm_from_scratch.ipynb.
        """
        self._check_sample("x_t", x_t)
        self._check_same_shape("model_output", model_output, "x_t", x_t)
        _check_finite("model_output", model_output)
        t = self._scalar_t(t)
        prev_t = self.previous_timestep(t)                                # looked up in self.timesteps
        alpha_bar_t, alpha_bar_prev = self._alpha_bar_at(t), self._alpha_bar_at(prev_t)

        # 1. the model's estimate of x0, clipped to the data range
        pred_x0 = self.to_pred_x0(model_output, t, x_t)                   # DDPM eq. (15) for eps
        if self.clip_sample:
            pred_x0 = pred_x0.clamp(-self.clip_sample_range, self.clip_sample_range)

        # 2. the mean of q(x_prev | x_t, x0 = pred_x0)
        coef1, coef2, variance = posterior_coefficients(alpha_bar_t, alpha_bar_prev)
        if self.variance_type == "fixed_large":
            variance = 1 - alpha_bar_t / alpha_bar_prev                   # sigma_t^2 = beta_t, DDPM Sec. 3.2
        mean = coef1 * pred_x0 + coef2 * x_t                              # DDPM eq. (7)

        # 3. add noise, except on the last step (t = 0), which returns the mean
        if t == 0:
            return StepOutput(prev_sample=mean, pred_x0=pred_x0)
        noise = randn_like_sample(model_output, generator)
        prev_sample = mean + variance**0.5 * noise                        # DDPM Algorithm 2, line 4
        return StepOutput(prev_sample=prev_sample, pred_x0=pred_x0)
