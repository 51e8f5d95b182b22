"""Guided sampling for class-conditional models: classifier-free guidance (CFG), and loss guidance.

Classifier-free guidance runs the model twice per step, once with the labels and once with the null class
(`null_label = num_classes`, which the model learned through `training.drop_condition`), and extrapolates
from the unconditional prediction towards the conditional one:

    x_T ~ N(0, I)
    for t in scheduler.timesteps:
        eps_uncond, eps_cond = model([x_t, x_t], t, [null, labels]).chunk(2)      # one call, doubled batch
        eps = eps_uncond + s * (eps_cond - eps_uncond)                             # the CFG line
        x_t, pred_x0 = scheduler.step(eps, t, x_t)
    return x_0

Loss guidance (`brightness_guided_sample`) steers a trained model at sampling time without retraining: each
step nudges x_t down the gradient of a loss on the model's x0 estimate, here the squared distance between
the image's mean brightness and a target (the "colour guidance" of the Hugging Face diffusion course, made
grayscale). It is classifier guidance's idea (add the gradient of a differentiable score of x_t) with a
hand-written loss in place of a noisy-image classifier.

References:
    Ho, Salimans (2022), "Classifier-Free Diffusion Guidance", arXiv:2207.12598, eq. (6).
    Dhariwal, Nichol (2021), "Diffusion Models Beat GANs on Image Synthesis", arXiv:2105.05233
        (classifier guidance, Sec. 4: the idea behind loss guidance).
    diffusers' StableDiffusionPipeline.__call__ (the doubled batch [uncond, cond] and `.chunk(2)`).
    Hugging Face diffusion course, unit 2 "Fine-tuning and guidance" (`color_loss`, guidance by the
        gradient of a loss on the x0 prediction).
    Kynkäänniemi et al. (2024), "Applying Guidance in a Limited Interval Improves Sample and Distribution
        Quality in Diffusion Models", arXiv:2404.07724 (`guidance_interval`).

Derived in notebooks/02_class_conditional.ipynb.
"""
from __future__ import annotations

import math
import numbers

import torch
from tqdm.auto import tqdm

from minildm.pipelines.diffusion import SampleOutput, check_sampling_args, initial_noise


def _check_guided_args(model, labels, guidance_scale) -> tuple[int, float]:
    """Validate a class-conditional model, its labels `(B,)` and a finite scale; returns (num_classes, scale)."""
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    if num_classes is None:
        raise ValueError("guided sampling needs a class-conditional model (UNetConfig(num_classes=...)), but this "
                         "model has num_classes=None; for an unconditional model use "
                         "minildm.pipelines.diffusion.sample.")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a (B,) torch.long tensor of class indices, got {type(labels).__name__}; "
                        "e.g. torch.tensor([0, 1, 2]).")
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D tensor (B,) with one class per image, got shape "
                         f"{tuple(labels.shape)}; flatten it with labels.reshape(-1).")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor (torch.long), got {labels.dtype}; use labels.long().")
    if labels.numel() == 0:
        raise ValueError("labels is empty: pass one label per image to generate.")
    if int(labels.min()) < 0 or int(labels.max()) > num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}]: 0 .. {num_classes - 1} are the classes and "
                         f"{num_classes} (= num_classes) is the null class; got values in "
                         f"[{int(labels.min())}, {int(labels.max())}].")
    return num_classes, _check_real("guidance_scale", guidance_scale, "typical CFG scales are 1 .. 7")


def _check_real(name: str, value, hint: str) -> float:
    """`value` as a float, refusing bools, non-numbers, NaN and inf."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}; {hint}.")
    return float(value)


def check_guidance_interval(interval) -> tuple[int, float]:
    """`(lo, hi)` as two ints with lo < hi (guidance at lo < t <= hi); None means every step, (-1, inf)."""
    if interval is None:
        return -1, math.inf
    try:
        lo, hi = (int(v) if float(v) == int(v) else None for v in interval)
    except (TypeError, ValueError):
        lo = hi = None
    if lo is None or hi is None or not -1 <= lo < hi:
        raise ValueError(f"guidance_interval must be two integer timesteps (lo, hi) with -1 <= lo < hi (guidance at "
                         f"lo < t <= hi, e.g. (180, 870)), got {interval!r}.")
    return lo, hi


def _prepare(model, scheduler, labels, num_inference_steps, device) -> tuple[torch.Tensor, tuple, torch.device]:
    """The set-up both guided loops share: check the arguments, eval mode, the scheduler's timesteps.
    Returns the labels on the device as int64 `(B,)`, the sample shape `(B, C, H, W)` and the device."""
    config = model.config
    device = torch.device(device) if device is not None else next(model.parameters()).device
    shape = (labels.shape[0], config.in_channels, config.image_size, config.image_size)     # (B, C, H, W)
    check_sampling_args(model, shape, labels, num_inference_steps)
    model.eval()
    scheduler.set_timesteps(num_inference_steps)
    return labels.to(device).long(), shape, device                                  # labels (B,)


@torch.no_grad()
def guided_sample(model: torch.nn.Module, scheduler, labels: torch.Tensor, guidance_scale: float = 3.0,
                  generator: torch.Generator | None = None, num_inference_steps: int | None = None,
                  device: str | torch.device | None = None, return_intermediates: bool = False,
                  progress: bool = True, negative_labels: torch.Tensor | None = None,
                  guidance_interval: tuple[int, int] | None = None) -> SampleOutput:
    """Classifier-free guided sampling: one image per label, with any minildm scheduler.

    `guidance_scale` is s in `eps = eps_uncond + s * (eps_cond - eps_uncond)`: s = 1 is plain conditional
    sampling, s = 0 unconditional (the null class), s > 1 trades diversity for fidelity to the label (Ho &
    Salimans' w = s - 1). Negative s is allowed and pushes *away* from the label. `labels` may contain the
    null class `num_classes` itself (an unconditional sample, whatever s). The doubled batch is used at every
    s, so one seed gives the same noise, and images equal to float rounding, as `diffusion.sample` at s = 0
    (null labels) and s = 1 (the labels). `negative_labels` `(B,)` replace the null class in the first half of
    the batch — a negative prompt, for classes: guidance then pushes away from them.
    `guidance_interval=(lo, hi)`: guide only at timesteps lo < t <= hi and use s = 1 (plain conditional) elsewhere
    (Kynkäänniemi et al. 2024); None (default) guides at every step.
    Derived in notebooks/02_class_conditional.ipynb.
    """
    num_classes, guidance_scale = _check_guided_args(model, labels, guidance_scale)
    lo, hi = check_guidance_interval(guidance_interval)
    labels, shape, device = _prepare(model, scheduler, labels, num_inference_steps, device)
    null = torch.full_like(labels, num_classes)                                     # (B,) the null class
    if negative_labels is not None:                                                 # a negative "prompt"
        _check_guided_args(model, negative_labels, guidance_scale)
        if negative_labels.shape != labels.shape:
            raise ValueError(f"negative_labels {tuple(negative_labels.shape)} must match labels {tuple(labels.shape)}.")
        null = negative_labels.to(device).long()
    cond_in = torch.cat([null, labels])                                             # (2B,) [uncond, cond]
    x_t = initial_noise(shape, generator, device) * scheduler.init_noise_sigma     # x_T ~ N(0, I)
    frames, pred_x0s = ([x_t.cpu()], []) if return_intermediates else (None, None)
    for t in tqdm(scheduler.timesteps, desc="guided sampling", disable=not progress, leave=False):
        x_in = torch.cat([x_t, x_t])                                                # (2B, C, H, W)
        out = model(x_in, t.to(device), cond_in)                                    # (2B, C, H, W): eps, x0 or v
        eps_uncond, eps_cond = out.chunk(2)                                         # (B, C, H, W) each
        # Ho & Salimans eq. (6), eps~ = (1 + w) eps_cond - w eps_uncond, written with s = 1 + w:
        # s = 1 is plain conditional sampling, s = 0 unconditional. The combination is linear and x0 and v are
        # linear in eps at fixed (x_t, t), so the same line is exact CFG for x0- and v-prediction models too.
        s = guidance_scale if lo < int(t) <= hi else 1.0                            # s = 1 outside the interval
        eps = eps_uncond + s * (eps_cond - eps_uncond)
        x_t, pred_x0 = scheduler.step(eps, t, x_t, generator=generator)             # x_{t-1}
        if return_intermediates:
            frames.append(x_t.cpu())
            pred_x0s.append(pred_x0.cpu())
    return SampleOutput(x_t.clamp(-1, 1), frames, pred_x0s)


def mean_brightness(x: torch.Tensor) -> torch.Tensor:
    """Mean pixel brightness per image in [0, 1] of images `(B, C, H, W)` in [-1, 1]; returns `(B,)`."""
    return ((x + 1) / 2).flatten(1).mean(dim=1)                                     # (B,)


@torch.no_grad()
def brightness_guided_sample(model: torch.nn.Module, scheduler, labels: torch.Tensor, target_brightness: float,
                             guidance_scale: float = 1.0, loss_scale: float = 100.0,
                             generator: torch.Generator | None = None, num_inference_steps: int | None = None,
                             device: str | torch.device | None = None, progress: bool = True) -> SampleOutput:
    """Loss-guided (and optionally CFG) sampling that pulls each image's mean brightness towards a target.

    `target_brightness` is in [0, 1] (0 black, 1 white; Fashion-MNIST padded to 32x32 averages about
    0.22). Each step:
        1. the model runs with gradients on, on the doubled batch as in `guided_sample`; CFG with `guidance_scale`
        2. pred_x0 = scheduler.to_pred_x0(eps, t, x_t), the x0 estimate (works for eps, x0 and v models)
        3. loss = sum over images of (mean_brightness(pred_x0) - target)^2
        4. x_t <- x_t - loss_scale * d loss / d x_t, *before* the scheduler step (as the HF course does)
        5. x_t, pred_x0 = scheduler.step(eps, t, x_t): eps from step 1, x_t nudged
    The gradient goes through the model as well as through the x0 formula (an x0-prediction model would get
    no gradient through the formula alone). It scales like 1 / (pixels * sqrt(alpha_bar_t)), so noisy early
    steps get the largest nudges; `loss_scale` of order the pixel count (1024 at 32x32) moves brightness
    clearly. The loss is summed over images, so each image's nudge does not depend on the batch size.
    Derived in notebooks/02_class_conditional.ipynb.
    """
    num_classes, guidance_scale = _check_guided_args(model, labels, guidance_scale)
    loss_scale = _check_real("loss_scale", loss_scale, "0 turns the brightness guidance off")
    target_brightness = _check_real("target_brightness", target_brightness, "use a value in [0, 1]")
    if not 0.0 <= target_brightness <= 1.0:
        raise ValueError(f"target_brightness is a mean pixel value on the [0, 1] scale (0 black, 1 white), "
                         f"got {target_brightness}.")
    labels, shape, device = _prepare(model, scheduler, labels, num_inference_steps, device)
    cond_in = torch.cat([torch.full_like(labels, num_classes), labels])             # (2B,) [uncond, cond]
    x_t = initial_noise(shape, generator, device) * scheduler.init_noise_sigma     # x_T ~ N(0, I)
    for t in tqdm(scheduler.timesteps, desc="brightness guidance", disable=not progress, leave=False):
        with torch.enable_grad():
            x_t = x_t.detach().requires_grad_(True)
            out = model(torch.cat([x_t, x_t]), t.to(device), cond_in)               # (2B, C, H, W)
            eps_uncond, eps_cond = out.chunk(2)                                     # (B, C, H, W) each
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)             # CFG, as in guided_sample
            pred_x0 = scheduler.to_pred_x0(eps, t, x_t)                             # (B, C, H, W), unclipped
            loss = ((mean_brightness(pred_x0) - target_brightness) ** 2).sum()
            grad = torch.autograd.grad(loss, x_t)[0]                                # (B, C, H, W); no param .grad
        x_t = x_t.detach() - loss_scale * grad                                      # nudge, then step
        x_t, pred_x0 = scheduler.step(eps.detach(), t, x_t, generator=generator)   # x_{t-1}
    return SampleOutput(x_t.clamp(-1, 1), None, None)
