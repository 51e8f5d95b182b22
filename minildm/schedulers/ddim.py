"""DDIM: a non-Markovian sampler that reuses a DDPM-trained model on a few steps, deterministic at eta = 0.

One step, from x_t to x_prev (prev = the next entry of `timesteps`, the sub-sequence tau of DDIM Sec. 4.2):
    pred_x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)        "predicted x0"
    sigma   = eta * sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) * sqrt(1 - alpha_bar_t / alpha_bar_prev)
    x_prev  = sqrt(alpha_bar_prev) pred_x0 + sqrt(1 - alpha_bar_prev - sigma^2) eps + sigma * noise
eta = 0 gives DDIM (no noise: the same x_T always gives the same image); eta = 1 gives sigma^2 equal to
the DDPM posterior variance, i.e. DDPM ancestral sampling on the sub-sequence.

Notation (variable here -> symbol in the DDIM paper). Careful: the DDIM paper writes alpha_t for what DDPM
and this library call alpha_bar_t.
    alpha_bar_t     -> alpha_t        (the cumulative product prod_s (1 - beta_s))
    alpha_bar_prev  -> alpha_{t-1}    (alpha_bar at the previous entry of `timesteps`; `final_alpha_bar`
                                       after the last entry)
    eps             -> epsilon_theta^(t)(x_t)
    pred_x0         -> "predicted x_0", f_theta^(t)(x_t) of eq. (9)
    sigma           -> sigma_t(eta) of eq. (16)
    dir_xt          -> "direction pointing to x_t" of eq. (12)
    prev_sample     -> x_{t-1}
    timesteps       -> the sub-sequence tau of Sec. 4.2, descending

The previous timestep is looked up in `self.timesteps`, never recomputed as t - T // n, so that every
spacing ("leading", "trailing", "linspace") is stepped consistently (cf. diffusers issues #11347, #12633).

References:
    Ho, Jain, Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
    Song, Meng, Ermon (2021), "Denoising Diffusion Implicit Models", arXiv:2010.02502.
    Nichol, Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", arXiv:2102.09672.
    Salimans, Ho (2022), "Progressive Distillation for Fast Sampling of Diffusion Models" (v-prediction),
    arXiv:2202.00512.
    Lin, Liu, Li, Yang (2023), "Common Diffusion Noise Schedules and Sample Steps are Flawed" (timestep
    spacings, Table 2), arXiv:2305.08891.

Derived in notebooks/01_ddpm_from_scratch.ipynb.
"""
from __future__ import annotations

import warnings

import torch

from .schedules import (
    TIMESTEP_SPACINGS,
    NoiseSchedule,
    StepOutput,
    _check_finite,
    randn_like_sample,
    spaced_timesteps,
)


class DDIMScheduler(NoiseSchedule):
    """The DDIM sampler (Song et al. 2021, eq. (12)) on top of the shared `NoiseSchedule`.

    Args:
        num_train_timesteps: T, the number of diffusion steps the model is trained on.
        beta_schedule: one of `SCHEDULES` ("linear", "cosine", "quadratic", "sigmoid").
        prediction_type: what the model outputs: "eps", "x0" or "v".
        clip_sample: clip pred_x0 to [-clip_sample_range, clip_sample_range] (pixels live in [-1, 1]).
        eta: default noise level, 0 (deterministic DDIM) .. 1 (DDPM-like); `step(..., eta=...)` overrides it.
        timestep_spacing: "leading" (0, k, 2k, ...; diffusers' default), "trailing" or "linspace".
        set_alpha_to_one: after the last step use alpha_bar = 1 (return pred_x0 itself), as diffusers;
            False uses alpha_bar_0 instead.
        use_clipped_model_output: recompute eps from the *clipped* pred_x0 (diffusers' `step` argument of that
            name; guided-diffusion's DDIM always does). False (diffusers' default) keeps the model's eps, which
            no longer agrees with a clipped x0: harmless for plain sampling, but with classifier-free guidance the
            extrapolated eps is large early on, and the mismatch turns samples into high-contrast noise
            (measured in notebooks/02_class_conditional.ipynb). Chapter 02's guided sampling therefore builds its
            DDIM with True (Stable Diffusion turns clipping off instead).
        **schedule_kwargs: passed to `make_betas`, e.g. beta_start=1e-4, beta_end=0.02.

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 prediction_type: str = "eps", clip_sample: bool = True, clip_sample_range: float = 1.0,
                 eta: float = 0.0, timestep_spacing: str = "leading", set_alpha_to_one: bool = True,
                 use_clipped_model_output: bool = False, **schedule_kwargs):
        super().__init__(num_train_timesteps, beta_schedule, prediction_type, **schedule_kwargs)
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"Unknown timestep_spacing {timestep_spacing!r}. Choose one of {TIMESTEP_SPACINGS}.")
        if eta < 0:
            raise ValueError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta}.")
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range
        self.eta = eta
        self.timestep_spacing = timestep_spacing
        self.set_alpha_to_one = set_alpha_to_one
        self.use_clipped_model_output = use_clipped_model_output
        self.final_alpha_bar = 1.0 if set_alpha_to_one else float(self.alpha_bar[0])
        # No default list: DDIM is meant to run on a sub-sequence, so set_timesteps(n) must be called first.
        self.timesteps = torch.zeros(0, dtype=torch.long)
        self.num_inference_steps = None

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Build `self.timesteps`, the descending sub-sequence tau that `step` walks through.

        Derived in notebooks/01_ddpm_from_scratch.ipynb.
        """
        if num_inference_steps is None:
            raise ValueError("DDIM needs num_inference_steps, e.g. set_timesteps(50); it has no all-steps default.")
        self.timesteps = spaced_timesteps(num_inference_steps, self.num_train_timesteps, self.timestep_spacing)
        self.num_inference_steps = num_inference_steps
        first = int(self.timesteps[0])
        ab = float(self.alpha_bar[first])
        if self.prediction_type == "eps" and not self.clip_sample and ab < 1e-6:  # e.g. cosine + "trailing"
            warnings.warn(
                f"the first DDIM timestep t={first} has alpha_bar={ab:.1e}: x0 predicted from eps there multiplies "
                f"the model's error by 1/sqrt(alpha_bar) = {ab ** -0.5:,.0f}, and clip_sample is off (latents), so "
                f"samples come out as noise. Use timestep_spacing='leading', clip_sample=True for images in [-1, 1], "
                f"or a v-prediction model (Lin et al. 2023, sec. 3).", stacklevel=2)

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, eta: float | None = None,
             generator: torch.Generator | None = None, use_clipped_model_output: bool | None = None) -> StepOutput:
        """One DDIM step from x_t to the next (smaller) timestep of `self.timesteps`.

        `t` is an int or a one-element tensor taken from `self.timesteps`; `eta=None` uses `self.eta` and
        `use_clipped_model_output=None` the constructor's value;
        `generator` makes the noise of eta > 0 reproducible (same noise as diffusers for the same seed).
        Derived in notebooks/01_ddpm_from_scratch.ipynb.
        """
        if self.num_inference_steps is None:
            raise ValueError("DDIMScheduler.timesteps is empty: call set_timesteps(num_inference_steps) before step.")
        eta = self.eta if eta is None else eta
        if eta < 0:
            raise ValueError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta}.")
        self._check_sample("x_t", x_t)
        self._check_same_shape("model_output", model_output, "x_t", x_t)
        _check_finite("model_output", model_output)
        t = self._scalar_t(t)
        prev_t = self.previous_timestep(t)                                # looked up in self.timesteps
        alpha_bar_t, alpha_bar_prev = self._alpha_bar_at(t), self._alpha_bar_at(prev_t)

        # 1. eps and x0 as the model sees them; x0 is clipped, eps stays the model's unless asked (as in diffusers)
        eps = self.to_eps(model_output, t, x_t)
        pred_x0 = self.to_pred_x0(model_output, t, x_t)                   # DDIM eq. (9), "predicted x0"
        if self.clip_sample:
            pred_x0 = pred_x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        if self.use_clipped_model_output if use_clipped_model_output is None else use_clipped_model_output:
            eps = (x_t - alpha_bar_t**0.5 * pred_x0) / (1 - alpha_bar_t) ** 0.5  # DDIM eq. (9) solved for eps

        # 2. the noise level sigma_t(eta)
        variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)  # DDPM's beta_tilde
        sigma = eta * variance**0.5                                       # DDIM eq. (16)

        # 3. x_prev = sqrt(alpha_bar_prev) pred_x0 + direction pointing to x_t (+ noise); max(., 0) guards eta > 1
        dir_xt = max(1 - alpha_bar_prev - sigma**2, 0.0) ** 0.5 * eps     # DDIM eq. (12), 2nd term
        prev_sample = alpha_bar_prev**0.5 * pred_x0 + dir_xt              # DDIM eq. (12), 1st + 2nd terms
        if eta > 0:
            noise = randn_like_sample(model_output, generator)
            prev_sample = prev_sample + sigma * noise                     # DDIM eq. (12), 3rd term
        return StepOutput(prev_sample=prev_sample, pred_x0=pred_x0)
