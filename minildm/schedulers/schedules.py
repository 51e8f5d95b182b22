"""Noise schedules and the machinery every sampler shares: betas, alpha_bar, q(x_t | x0), conversions.

`make_betas(name, T)` builds one of the schedules in `SCHEDULES`. `NoiseSchedule` holds the precomputed
tensors (`betas`, `alphas`, `alpha_bar`, ...) and everything that does not depend on the sampler:
`add_noise` (the forward process), the conversions between `eps`, `x0` and `v`, `training_target`, and
the timestep list `timesteps` with `previous_timestep(t)`, the single source of truth for "previous t".
`DDPMScheduler` and `DDIMScheduler` inherit it and add only `set_timesteps` and `step`.

Precision: the schedule is built and stored in float64 on the CPU; each method gathers the coefficients
it needs and casts them to the dtype and device of its input, so float32 images stay float32.

Schedules (all 0-based, t = 0 .. T-1):
    "linear":    betas = linspace(beta_start, beta_end, T), DDPM's choice (1e-4 .. 0.02).
                 Equal to diffusers' "linear".
    "cosine":    alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) * pi / 2), s = 0.008,
                 betas = min(1 - alpha_bar(t + 1) / alpha_bar(t), max_beta = 0.999).
                 Equal to diffusers' "squaredcos_cap_v2".
    "quadratic": betas = linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2.
                 Equal to diffusers' "scaled_linear" (Stable Diffusion uses it with 0.00085 .. 0.012).
    "sigmoid":   betas = sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start, the GeoDiff
                 schedule as written in diffusers' DDPMScheduler "sigmoid". (Not lucidrains'
                 `sigmoid_beta_schedule`, which defines alpha_bar through a sigmoid instead.)

References:
    Ho, Jain, Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
    Song, Meng, Ermon (2021), "Denoising Diffusion Implicit Models", arXiv:2010.02502.
    Nichol, Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", arXiv:2102.09672.
    Salimans, Ho (2022), "Progressive Distillation for Fast Sampling of Diffusion Models" (v-prediction),
    arXiv:2202.00512.

Derived in notebooks/01_ddpm_from_scratch.ipynb.
"""
from __future__ import annotations

import inspect
import math
import operator
from typing import NamedTuple

import torch

SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid")
PREDICTION_TYPES = ("eps", "x0", "v")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
# What diffusers calls the same prediction types; only used to make error messages helpful.
_DIFFUSERS_NAMES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


class StepOutput(NamedTuple):
    """What `step` returns: the sample at the previous timestep and the model's current estimate of x0."""

    prev_sample: torch.Tensor  # x_{t-1}, or x at the previous timestep of `timesteps`
    pred_x0: torch.Tensor      # \hat x_0, clipped when the scheduler clips


# --------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------
def _linear(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)  # DDPM Sec. 4


def _cosine(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    steps = torch.arange(T + 1, dtype=torch.float64) / T                  # t / T for t = 0 .. T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2               # Nichol & Dhariwal eq. (17)
    betas = 1 - f[1:] / f[:-1]                                            # beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}
    return betas.clamp(max=max_beta)                                      # the 0.999 cap of Sec. 3.2


def _quadratic(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2


def _sigmoid(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    x = torch.linspace(-6, 6, T, dtype=torch.float64)
    return torch.sigmoid(x) * (beta_end - beta_start) + beta_start


_SCHEDULE_FNS = {"linear": _linear, "cosine": _cosine, "quadratic": _quadratic, "sigmoid": _sigmoid}


def make_betas(name: str, num_train_timesteps: int = 1000, **kw) -> torch.Tensor:
    """The betas of schedule `name` as a float64 tensor `(T,)`; keyword arguments tune the schedule.

    `linear`, `quadratic` and `sigmoid` take `beta_start` and `beta_end`; `cosine` takes `s` and `max_beta`.
    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """
    if name not in _SCHEDULE_FNS:
        raise ValueError(f"Unknown beta schedule {name!r}. Choose one of {SCHEDULES}.")
    if not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be an int >= 2, got {num_train_timesteps!r}.")
    fn = _SCHEDULE_FNS[name]
    allowed = [p for p in inspect.signature(fn).parameters if p != "T"]
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(f"Schedule {name!r} does not take {unknown}; its options are {allowed}.")
    return fn(num_train_timesteps, **kw)


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------
def extract(coeffs: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Gather `coeffs[t]` for a batch of timesteps and shape it to broadcast over a `ndim`-d sample.

    `coeffs` is `(T,)`, `t` a long tensor `(B,)`; returns `(B, 1, ..., 1)` with `ndim` dims, on
    `coeffs`' device and dtype. Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """
    T = coeffs.shape[0]
    if t.ndim != 1 or t.dtype.is_floating_point:
        raise ValueError(f"t must be an integer tensor of shape (B,), got dtype {t.dtype}, shape {tuple(t.shape)}.")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
        raise ValueError(
            f"Timestep out of range: t must be in [0, {T}) but got values in [{int(t.min())}, {int(t.max())}]. "
            "Timesteps are 0-based here (DDPM's t = 1 .. T is t = 0 .. T-1)."
        )
    out = coeffs[t.to(coeffs.device)]                                     # (B,)
    return out.reshape(t.shape[0], *([1] * (ndim - 1)))                   # (B, 1, 1, 1) for images


def spaced_timesteps(num_inference_steps: int, num_train_timesteps: int, spacing: str = "leading") -> torch.Tensor:
    """A descending LongTensor of `num_inference_steps` timesteps out of `[0, num_train_timesteps)`.

    The three spacings of Lin et al. 2023 (arXiv:2305.08891) Table 2, computed like diffusers with
    `steps_offset=0`: "leading" (0, k, 2k, ..., k = T // n), "trailing" (T-1 downwards), "linspace".
    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """
    n, T = num_inference_steps, num_train_timesteps
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"Unknown timestep_spacing {spacing!r}. Choose one of {TIMESTEP_SPACINGS}.")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"num_inference_steps must be a positive int, got {n!r}.")
    if n > T:
        raise ValueError(
            f"num_inference_steps={n} is larger than num_train_timesteps={T}: the model was only trained on "
            f"{T} timesteps. Use num_inference_steps <= {T}."
        )
    if spacing == "leading":    # 0, k, 2k, ... (n-1)k, then reversed: the last step is t = 0
        timesteps = (torch.arange(n, dtype=torch.float64) * (T // n)).flip(0)
    elif spacing == "trailing":  # T-1, T-1-T/n, ...: the first step is t = T-1
        timesteps = torch.arange(T, 0, -T / n, dtype=torch.float64).round() - 1
    else:                        # "linspace": n evenly spaced points in [0, T-1], both ends included
        timesteps = torch.linspace(0, T - 1, n, dtype=torch.float64).round().flip(0)
    return timesteps.long()                                               # (n,), descending


def randn_like_sample(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gaussian noise shaped like `x`, drawn on the generator's device, as diffusers' `randn_tensor`.

    Drawing on the generator's device and then moving the result means that a CPU generator gives the same
    noise whatever device the sample lives on. Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """
    draw_device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=draw_device, dtype=x.dtype).to(x.device)


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        hint = ""
        if prediction_type in _DIFFUSERS_NAMES:
            hint = f" (diffusers calls it {prediction_type!r}; here it is {_DIFFUSERS_NAMES[prediction_type]!r})"
        raise ValueError(f"Unknown prediction_type {prediction_type!r}{hint}. Choose one of {PREDICTION_TYPES}.")


def _as_int(t) -> int:
    """A Python/NumPy integer timestep as an int; a float such as 3.5 is refused rather than truncated."""
    try:
        return operator.index(t)
    except TypeError:
        raise ValueError(f"t must be an integer timestep, got {t!r} ({type(t).__name__}).") from None


def _check_finite(name: str, x: torch.Tensor) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(
            f"{name} contains NaN or inf. Check the data scaling (pixels in [-1, 1]) and the model's outputs "
            "(a diverged training run produces NaN)."
        )


# --------------------------------------------------------------------------------------------------
# The shared base class
# --------------------------------------------------------------------------------------------------
class NoiseSchedule:
    """Betas, alpha_bar, the forward process q(x_t | x0) and the eps / x0 / v conversions.

    Derived in notebooks/01_ddpm_from_scratch.ipynb.
    """

    init_noise_sigma = 1.0  # x_T ~ N(0, I): pipelines scale their initial noise by this, as in diffusers

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 prediction_type: str = "eps", **schedule_kwargs):
        _check_prediction_type(prediction_type)
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.prediction_type = prediction_type
        self.betas = make_betas(beta_schedule, num_train_timesteps, **schedule_kwargs)  # (T,) float64
        self.alphas = 1.0 - self.betas                                    # alpha_t = 1 - beta_t
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)                # alpha_bar_t = prod_{s<=t} alpha_s
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        self.sqrt_alpha_bar = self.alpha_bar.sqrt()
        self.sqrt_one_minus_alpha_bar = (1.0 - self.alpha_bar).sqrt()
        self.final_alpha_bar = 1.0  # alpha_bar "after" the last step (x0 itself); DDIM may change it
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)  # (T,) descending; set_timesteps resets it

    # ---- checks -------------------------------------------------------------------------------------
    def _batch_t(self, t, x: torch.Tensor) -> torch.Tensor:
        """`t` as a long tensor `(B,)` for a sample `x` of batch size B: an int is used for the whole batch."""
        if isinstance(t, torch.Tensor):
            if t.dtype.is_floating_point:
                raise ValueError(f"t must hold integer timesteps, got dtype {t.dtype}. Use t.long().")
            if t.ndim == 0:
                t = t.reshape(1)                                          # (1,)
        else:
            t = torch.tensor([_as_int(t)])                                # (1,)
        if t.ndim != 1 or t.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"t has shape {tuple(t.shape)} but the batch has {x.shape[0]} samples: pass one int, or a "
                f"(B,) = ({x.shape[0]},) tensor with one timestep per sample."
            )
        return t.long().expand(x.shape[0])                                # (B,)

    def _coef(self, coeffs: torch.Tensor, t, x: torch.Tensor) -> torch.Tensor:
        """`coeffs[t]` as `(B, 1, ..., 1)` in the dtype and on the device of `x`."""
        return extract(coeffs, self._batch_t(t, x), x.ndim).to(x.dtype).to(x.device)

    @staticmethod
    def _check_sample(name: str, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"{name} must be a batched tensor (B, ...) with at least 2 dims, got {shape}. "
                "Add a batch dimension, e.g. x[None]."
            )

    @staticmethod
    def _check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
        if a.shape != b.shape:
            raise ValueError(
                f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; they must match "
                "(does the model output as many channels as the sample has?)."
            )

    def _scalar_t(self, t) -> int:
        """One timestep (int or tensor with one element) as a Python int, checked against [0, T)."""
        if isinstance(t, torch.Tensor):
            if t.numel() != 1 or t.dtype.is_floating_point:
                raise ValueError(
                    f"step takes one integer timestep for the whole batch, got a {t.dtype} tensor of shape "
                    f"{tuple(t.shape)}. Loop over `scheduler.timesteps` and pass each element."
                )
            t = t.item()
        t = _as_int(t)
        if not 0 <= t < self.num_train_timesteps:
            raise ValueError(f"Timestep out of range: t must be in [0, {self.num_train_timesteps}), got {t}.")
        return t

    # ---- the timestep list --------------------------------------------------------------------------
    def previous_timestep(self, t) -> int:
        """The timestep after `t` in `self.timesteps` (the one `step` lands on), or -1 after the last one.

        Derived in notebooks/01_ddpm_from_scratch.ipynb.
        """
        t = self._scalar_t(t)
        where = (self.timesteps == t).nonzero()
        if where.numel() == 0:
            raise ValueError(
                f"t={t} is not in scheduler.timesteps ({self.timesteps.numel()} steps, "
                f"{self.timesteps[:3].tolist()}...). Call set_timesteps(n) first and step through "
                "scheduler.timesteps in order."
            )
        i = int(where[0, 0])
        return int(self.timesteps[i + 1]) if i + 1 < self.timesteps.numel() else -1

    def _alpha_bar_at(self, t: int) -> float:
        """alpha_bar_t as a Python float (double precision); t = -1 means "after the last step"."""
        return float(self.alpha_bar[t]) if t >= 0 else float(self.final_alpha_bar)

    # ---- forward process --------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        """Sample q(x_t | x0) in closed form: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.

        `t` is an int or a long tensor `(B,)`. Derived in notebooks/01_ddpm_from_scratch.ipynb.
        """
        self._check_sample("x0", x0)
        self._check_same_shape("x0", x0, "eps", eps)
        _check_finite("x0", x0)
        _check_finite("eps", eps)
        a = self._coef(self.sqrt_alpha_bar, t, x0)                        # (B, 1, 1, 1)
        s = self._coef(self.sqrt_one_minus_alpha_bar, t, x0)              # (B, 1, 1, 1)
        return a * x0 + s * eps                                           # DDPM eq. (4)

    # ---- conversions between eps, x0 and v ----------------------------------------------------------
    def pred_x0_from_eps(self, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar). Derived in notebooks/01_ddpm_from_scratch.ipynb."""
        a, s = self._coef(self.sqrt_alpha_bar, t, x_t), self._coef(self.sqrt_one_minus_alpha_bar, t, x_t)
        return (x_t - s * eps) / a                                        # DDPM eq. (15)

    def eps_from_x0(self, x_t: torch.Tensor, t, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(alpha_bar) x0) / sqrt(1 - alpha_bar). Derived in notebooks/01_ddpm_from_scratch.ipynb."""
        a, s = self._coef(self.sqrt_alpha_bar, t, x_t), self._coef(self.sqrt_one_minus_alpha_bar, t, x_t)
        return (x_t - a * x0) / s                                         # DDPM eq. (4) solved for eps

    def v_target(self, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0. Derived in notebooks/01_ddpm_from_scratch.ipynb."""
        a, s = self._coef(self.sqrt_alpha_bar, t, x0), self._coef(self.sqrt_one_minus_alpha_bar, t, x0)
        return a * eps - s * x0                                           # Salimans & Ho Sec. 4

    def pred_x0_from_v(self, x_t: torch.Tensor, t, v: torch.Tensor) -> torch.Tensor:
        """x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v. Derived in notebooks/01_ddpm_from_scratch.ipynb."""
        a, s = self._coef(self.sqrt_alpha_bar, t, x_t), self._coef(self.sqrt_one_minus_alpha_bar, t, x_t)
        return a * x_t - s * v                                            # Salimans & Ho Sec. 4

    def eps_from_v(self, x_t: torch.Tensor, t, v: torch.Tensor) -> torch.Tensor:
        """eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v. Derived in notebooks/01_ddpm_from_scratch.ipynb."""
        a, s = self._coef(self.sqrt_alpha_bar, t, x_t), self._coef(self.sqrt_one_minus_alpha_bar, t, x_t)
        return s * x_t + a * v                                            # Salimans & Ho Sec. 4

    def to_pred_x0(self, model_output: torch.Tensor, t, x_t: torch.Tensor) -> torch.Tensor:
        """The model's estimate of x0, whatever `prediction_type` it was trained with (unclipped).

        Derived in notebooks/01_ddpm_from_scratch.ipynb.
        """
        if self.prediction_type == "eps":
            return self.pred_x0_from_eps(x_t, t, model_output)
        if self.prediction_type == "x0":
            return model_output
        return self.pred_x0_from_v(x_t, t, model_output)

    def to_eps(self, model_output: torch.Tensor, t, x_t: torch.Tensor) -> torch.Tensor:
        """The model's estimate of eps, whatever `prediction_type` it was trained with.

        Derived in notebooks/01_ddpm_from_scratch.ipynb.
        """
        if self.prediction_type == "eps":
            return model_output
        if self.prediction_type == "x0":
            return self.eps_from_x0(x_t, t, model_output)
        return self.eps_from_v(x_t, t, model_output)

    def training_target(self, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        """What the model should output for x_t = add_noise(x0, eps, t): eps, x0 or v (`prediction_type`).

        Derived in notebooks/01_ddpm_from_scratch.ipynb.
        """
        self._check_same_shape("x0", x0, "eps", eps)
        if self.prediction_type == "eps":
            return eps                                                    # DDPM eq. (14), L_simple
        if self.prediction_type == "x0":
            return x0
        return self.v_target(x0, eps, t)

    def __len__(self) -> int:
        return self.num_train_timesteps
