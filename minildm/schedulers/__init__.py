"""Noise schedules and samplers: one algorithm per file, one API.

    scheduler.set_timesteps(n)                       # builds scheduler.timesteps (descending)
    x_t = scheduler.add_noise(x0, eps, t)            # training: q(x_t | x0)
    out = scheduler.step(model_output, t, x_t, generator=None)   # sampling: StepOutput(prev_sample, pred_x0)

`schedules.py` holds the betas, `StepOutput` and the shared base class `NoiseSchedule`; `ddpm.py`,
`ddim.py` and `dpm_solver.py` (DPM-Solver++(2M), chapter 02) add a sampler each.

References:
    Ho, Jain, Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
    Song, Meng, Ermon (2021), "Denoising Diffusion Implicit Models", arXiv:2010.02502.
    Nichol, Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", arXiv:2102.09672.
    Salimans, Ho (2022), "Progressive Distillation for Fast Sampling of Diffusion Models" (v-prediction),
    arXiv:2202.00512.
    Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
    arXiv:2211.01095.

Derived in notebooks/01_ddpm_from_scratch.ipynb.
"""
from .ddim import DDIMScheduler
from .dpm_solver import DPMSolverMultistepScheduler, dpm_timesteps
from .ddpm import DDPMScheduler, posterior_coefficients
from .schedules import (
    PREDICTION_TYPES,
    SCHEDULES,
    TIMESTEP_SPACINGS,
    NoiseSchedule,
    StepOutput,
    extract,
    make_betas,
    randn_like_sample,
    spaced_timesteps,
)

__all__ = [
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "NoiseSchedule",
    "PREDICTION_TYPES",
    "SCHEDULES",
    "StepOutput",
    "TIMESTEP_SPACINGS",
    "dpm_timesteps",
    "extract",
    "make_betas",
    "posterior_coefficients",
    "randn_like_sample",
    "spaced_timesteps",
]
