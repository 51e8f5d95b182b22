"""Sample-quality metrics in the feature space of the course's Fashion-MNIST classifier.

Inception-v3 (standard FID) is trained on 299x299 ImageNet photos, is a poor judge of 28x28 garments and
cannot be downloaded offline, so every distribution metric here uses the penultimate layer (256 features) of
`minildm.models.classifier.FashionClassifier` instead, following Binkowski et al. (2018). The numbers are
therefore comparable within this course only, never with published Inception FIDs.

All images follow the course convention: float tensors `(N, 1, 32, 32)` in [-1, 1], as made by
`minildm.data.preprocess`. Inputs are validated and the errors say how to convert ([0, 1] images from
`minildm.data.postprocess`, uint8 pixels, 28x28 crops...).

`fid_report()` puts a FID next to its "real-vs-real floor": the FID of that many *real* training images
against the same reference (the 10,000 test images). FID is biased upwards at small n, so a raw number
means little; `fid_ratio = fid / fid_floor` near 1 means "as close to the test set as real data of that size".

References:
    Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter (2017), "GANs Trained by a Two Time-Scale Update Rule
    Converge to a Local Nash Equilibrium" (FID), NeurIPS, arXiv:1706.08500.
    Binkowski, Sutherland, Arbel, Gretton (2018), "Demystifying MMD GANs" (KID; domain-classifier features),
    ICLR, arXiv:1801.01401.
    Kynkaanniemi, Karras, Laine, Lehtinen, Aila (2019), "Improved Precision and Recall Metric for Assessing
    Generative Models", NeurIPS, arXiv:1904.06991.
    Wang, Bovik, Sheikh, Simoncelli (2004), "Image Quality Assessment: From Error Visibility to Structural
    Similarity" (SSIM), IEEE Trans. Image Processing 13(4).

Used from notebooks/01_ddpm_from_scratch.ipynb onwards (FID of samples), in notebook 02 (class accuracy of
conditional samples, guidance sweeps) and notebook 03 (PSNR/SSIM of VAE reconstructions).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn as nn
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from minildm.data import NUM_CLASSES
from minildm.runtime import default_device

REFERENCE = "Fashion-MNIST test split (10,000 images)"
_TOL = 1e-3  # float slack on the [-1, 1] range
_cache: dict = {}  # per-process: classifiers, test-set FID statistics, floors


# ----------------------------------------------------------------------------------------------------
# Input checks

def check_images(x, name: str = "images", min_samples: int = 1) -> torch.Tensor:
    """Validate course-convention images: float `(N, 1, 32, 32)` in [-1, 1], finite. Returns them as a tensor."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, 1, 32, 32) in [-1, 1], got {type(x).__name__}.")
    if x.dtype == torch.uint8:
        raise TypeError(f"{name} are uint8 pixels in [0, 255]; the metrics take floats in [-1, 1]. "
                        f"Convert with minildm.data.preprocess({name}) (28x28 input) or "
                        f"preprocess({name}, pad=False) (already 32x32).")
    if not x.is_floating_point():
        raise TypeError(f"{name} have dtype {x.dtype}; expected floats in [-1, 1] (see minildm.data.preprocess).")
    if x.dim() == 3 and x.shape[1:] in ((28, 28), (32, 32)):
        raise ValueError(f"{name} have shape {tuple(x.shape)} without a channel axis; use {name}.unsqueeze(1) "
                         f"to get (N, 1, H, W).")
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must be grayscale (N, 1, 32, 32), got shape {tuple(x.shape)}"
                         + (" (3 channels: take one with x[:, :1])" if x.dim() == 4 and x.shape[1] == 3 else "") + ".")
    if x.shape[2:] == (28, 28):
        raise ValueError(f"{name} are 28x28; the course canvas is 32x32. Pad with "
                         f"torch.nn.functional.pad({name}, (2, 2, 2, 2), value=-1.0), or preprocess uint8 pixels "
                         f"with minildm.data.preprocess.")
    if x.shape[2:] != (32, 32):
        raise ValueError(f"{name} must be (N, 1, 32, 32), got shape {tuple(x.shape)}.")
    if len(x) < min_samples:
        raise ValueError(f"{name}: need at least {min_samples} images, got {len(x)}"
                         + (" (a covariance needs 2; use >= 1,000 for a meaningful FID)." if min_samples == 2 else "."))
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).flatten(1).any(1).sum().item()
        raise ValueError(f"{name} contain NaN or inf values ({bad} of {len(x)} images); the sampler diverged?")
    lo, hi = x.min().item(), x.max().item()
    if hi > 1.5 and lo >= 0:
        raise ValueError(f"{name} look like [0, 255] pixels stored as floats (min {lo:.3g}, max {hi:.3g}); use "
                         f"minildm.data.preprocess({name}.round().to(torch.uint8)) or {name} / 127.5 - 1.")
    if lo < -1 - _TOL or hi > 1 + _TOL:
        raise ValueError(f"{name} have values in [{lo:.3g}, {hi:.3g}], outside [-1, 1]; clamp samples with "
                         f"{name}.clamp(-1, 1) (or check the scaling).")
    if lo >= 0:
        raise ValueError(f"{name} have no negative value (range [{lo:.3g}, {hi:.3g}]): they look like [0, 1] images "
                         f"(minildm.data.postprocess output), but the metrics take [-1, 1]. Convert with "
                         f"{name} * 2 - 1. (Real [-1, 1] images always have a black -1 background.)")
    return x


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must have the same shape.")


# ----------------------------------------------------------------------------------------------------
# Feature space

class FeatureExtractor(nn.Module):
    """The classifier's penultimate features as a torchmetrics feature module (`num_features` = 256).

    torchmetrics' FID/KID hand a custom module the images given to `update()` unchanged (their `normalize`
    flag only applies to the built-in Inception). So this module accepts uint8 pixels in [0, 255], or floats
    in [-1, 1] (`normalize=False`, the course convention) or in [0, 1] (`normalize=True`), maps them to the
    classifier's [-1, 1] input, and returns float64 features on the CPU (torchmetrics accumulates in float64).
    It stays in eval mode whatever `.train()` is called with, so BatchNorm and dropout never change a score.

    Used from notebooks/01_ddpm_from_scratch.ipynb onwards.
    """

    def __init__(self, classifier: nn.Module | None = None, normalize: bool = False,
                 device: str | torch.device | None = None):
        super().__init__()
        self.classifier = classifier if classifier is not None else _classifier(device)
        self.classifier.eval()
        self.normalize = normalize
        self.num_features = int(self.classifier.config.feature_dim)

    def train(self, mode: bool = True) -> "FeatureExtractor":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, 1, 32, 32)` uint8 or float images -> `(B, num_features)` float64 features."""
        device = next(self.classifier.parameters()).device
        if images.dtype == torch.uint8:
            x = images.to(device).float() / 127.5 - 1.0  # [0, 255] -> [-1, 1]
        elif self.normalize:
            x = images.to(device).float() * 2.0 - 1.0  # [0, 1] -> [-1, 1]
        else:
            x = images.to(device).float()
        return self.classifier.features(x).double().cpu()  # (B, num_features)


def _classifier(device=None) -> nn.Module:
    from minildm.models.classifier import load_classifier

    device = torch.device(device) if device is not None else default_device()
    key = ("classifier", str(device))
    if key not in _cache:
        _cache[key] = load_classifier(device)
    return _cache[key]


def extract_features(images: torch.Tensor, batch_size: int = 500, device=None) -> torch.Tensor:
    """`(N, 1, 32, 32)` images in [-1, 1] -> `(N, 256)` float64 classifier features (CPU).

    Used from notebooks/01_ddpm_from_scratch.ipynb onwards.
    """
    images = check_images(images)
    extractor = FeatureExtractor(_classifier(device))
    return torch.cat([extractor(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def _fid_metric(extractor: FeatureExtractor, real: torch.Tensor, batch_size: int) -> FrechetInceptionDistance:
    metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False)  # reset() keeps `real`
    for i in range(0, len(real), batch_size):
        metric.update(real[i:i + batch_size], real=True)
    return metric


def _fid_against(metric: FrechetInceptionDistance, generated: torch.Tensor, batch_size: int) -> float:
    metric.reset()  # clears the generated statistics only
    for i in range(0, len(generated), batch_size):
        metric.update(generated[i:i + batch_size], real=False)
    return max(float(metric.compute()), 0.0)  # the eigenvalue route can give -1e-12 for identical sets


def _test_images() -> torch.Tensor:
    if "test" not in _cache:
        from minildm.data import load_tensors
        _cache["test"] = load_tensors("test").tensors
    return _cache["test"][0]


def _reference_metric(batch_size: int, device) -> FrechetInceptionDistance:
    key = ("fid-reference", str(device))
    if key not in _cache:  # the test set's features are extracted once per process
        _cache[key] = _fid_metric(FeatureExtractor(_classifier(device)), _test_images(), batch_size)
    return _cache[key]


# ----------------------------------------------------------------------------------------------------
# Distribution metrics

def fid(generated: torch.Tensor, reference: torch.Tensor | None = None, batch_size: int = 500,
        device=None) -> float:
    """Frechet distance (Heusel et al. 2017) between two image sets in the classifier's feature space.

    `reference=None` means the 10,000 test images (their statistics are cached per process). Both sets are
    float `(N, 1, 32, 32)` in [-1, 1] with N >= 2; FID is biased at small N, so compare values at equal N,
    or use `fid_report()`, which gives the real-vs-real floor. Computed by torchmetrics'
    `FrechetInceptionDistance` (float64) with `FeatureExtractor` as its feature module.

    Used from notebooks/01_ddpm_from_scratch.ipynb onwards.
    """
    generated = check_images(generated, "generated", min_samples=2)
    if reference is None:
        return _fid_against(_reference_metric(batch_size, device), generated, batch_size)
    reference = check_images(reference, "reference", min_samples=2)
    metric = _fid_metric(FeatureExtractor(_classifier(device)), reference, batch_size)
    return _fid_against(metric, generated, batch_size)


def train_subset(num_train: int, n: int, seed: int = 0) -> torch.Tensor:
    """The indices of the fixed subset of `n` training images (out of `num_train`) drawn with `seed`: the images
    the real-vs-real floor uses (and the VAE floor's train-image variant in `minildm.bench`)."""
    return torch.randperm(num_train, generator=torch.Generator().manual_seed(seed))[:n]


def fid_floor(n: int, seed: int = 0, batch_size: int = 500, device=None) -> float:
    """FID of `n` real training images (a fixed subset drawn with `seed`) against the test set: the best
    score a generator can expect at that sample size. Cached per process.

    Used from notebooks/01_ddpm_from_scratch.ipynb onwards.
    """
    if n < 2 or n > 60000:
        raise ValueError(f"the FID floor needs 2 <= n <= 60,000 training images, got n={n}.")
    key = ("fid-floor", n, seed, str(device))
    if key not in _cache:
        from minildm.data import load_tensors
        x_train = load_tensors("train").tensors[0]
        subset = train_subset(len(x_train), n, seed)
        _cache[key] = _fid_against(_reference_metric(batch_size, device), x_train[subset], batch_size)
    return _cache[key]


def fid_report(generated: torch.Tensor, n: int | None = None, seed: int = 0, batch_size: int = 500,
               device=None) -> dict:
    """FID of the first `n` generated images against the 10,000 test images, beside its real-vs-real floor.

    Returns `{"n_samples", "fid", "fid_floor", "fid_ratio", "reference"}`; `fid_floor` is the FID of `n` real
    training images (fixed subset, `seed`) against the same reference, and `fid_ratio = fid / fid_floor`.

    Used from notebooks/01_ddpm_from_scratch.ipynb onwards.
    """
    generated = check_images(generated, "generated", min_samples=2)
    n = len(generated) if n is None else n
    if not 2 <= n <= len(generated):
        raise ValueError(f"n={n} must be between 2 and the number of generated images ({len(generated)}).")
    value = fid(generated[:n], None, batch_size, device)
    floor = fid_floor(n, seed, batch_size, device)
    return {"n_samples": n, "fid": value, "fid_floor": floor, "fid_ratio": value / floor, "reference": REFERENCE}


def kid(generated: torch.Tensor, reference: torch.Tensor | None = None, subsets: int = 100, seed: int = 0,
        batch_size: int = 500, device=None) -> tuple[float, float]:
    """Kernel distance (Binkowski et al. 2018): mean and std of the unbiased polynomial-kernel MMD^2 over
    `subsets` random subsets of size min(1000, N). `reference=None` means the test set. Deterministic (seed).

    Used from notebooks/01_ddpm_from_scratch.ipynb onwards.
    """
    generated = check_images(generated, "generated", min_samples=2)
    reference = _test_images() if reference is None else check_images(reference, "reference", min_samples=2)
    with warnings.catch_warnings():  # "KID keeps all features in memory": 256 floats per image is fine
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=FeatureExtractor(_classifier(device)), subsets=subsets,
                                         subset_size=min(1000, len(generated), len(reference)))
    for images, real in ((reference, True), (generated, False)):
        for i in range(0, len(images), batch_size):
            metric.update(images[i:i + batch_size], real=real)
    with torch.random.fork_rng(devices=[]):  # the subsets come from the global RNG: seed it locally
        torch.manual_seed(seed)
        mean, std = metric.compute()  # std is 0 when N <= 1000: every "subset" is then the whole set
    return float(mean), float(std)


def _knn_radii(features: torch.Tensor, k: int, chunk: int = 1000) -> torch.Tensor:
    """Distance from each feature vector to its k-th nearest neighbour in the same set (self excluded)."""
    radii = [torch.cdist(features[i:i + chunk], features).kthvalue(k + 1, dim=1).values  # +1: self at 0
             for i in range(0, len(features), chunk)]
    return torch.cat(radii)


def _coverage(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int = 1000) -> float:
    """Fraction of `queries` inside at least one ball (support_i, radius_i)."""
    inside = [(torch.cdist(queries[i:i + chunk], support) <= radii[None, :]).any(1)
              for i in range(0, len(queries), chunk)]
    return torch.cat(inside).double().mean().item()


def precision_recall(generated: torch.Tensor, reference: torch.Tensor | None = None, k: int = 3,
                     batch_size: int = 500, device=None) -> dict:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls in feature space.

    Precision: fraction of generated images inside the real manifold (fidelity); recall: fraction of real
    images inside the generated manifold (diversity). `reference=None` means the test set; use sets of equal
    size (the k-NN radii depend on N). Returns `{"precision", "recall", "k"}`.

    Used from notebooks/01_ddpm_from_scratch.ipynb onwards.
    """
    generated = check_images(generated, "generated", min_samples=k + 1)
    reference = _test_images() if reference is None else check_images(reference, "reference", min_samples=k + 1)
    fake = extract_features(generated, batch_size, device)
    real = extract_features(reference, batch_size, device)
    precision = _coverage(fake, real, _knn_radii(real, k))
    recall = _coverage(real, fake, _knn_radii(fake, k))
    return {"precision": precision, "recall": recall, "k": k}


# ----------------------------------------------------------------------------------------------------
# Conditional generation and reconstruction

@torch.no_grad()
def class_accuracy(images: torch.Tensor, requested_labels: torch.Tensor, batch_size: int = 500,
                   device=None) -> dict:
    """How often the classifier recognises the requested class in class-conditional samples.

    Returns `{"overall": float, "per_class": [10 floats, nan for a class never requested],
    "confusion": 10x10 list of counts, rows = requested class, columns = predicted class}`.

    Used in notebook 02 (class-conditional generation and guidance).
    """
    images = check_images(images, "images")
    labels = torch.as_tensor(requested_labels).reshape(-1).cpu()
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"requested_labels must be integer class indices, got {labels.dtype}.")
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} requested labels; pass one label per image.")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"requested labels must be in [0, {NUM_CLASSES - 1}], got range "
                         f"[{labels.min().item()}, {labels.max().item()}] (the null label {NUM_CLASSES} is not a class).")
    classifier = _classifier(device)
    device = next(classifier.parameters()).device
    predicted = torch.cat([classifier(images[i:i + batch_size].to(device)).argmax(1).cpu()
                           for i in range(0, len(images), batch_size)])
    confusion = torch.bincount(labels * NUM_CLASSES + predicted, minlength=NUM_CLASSES ** 2)
    confusion = confusion.reshape(NUM_CLASSES, NUM_CLASSES)  # (requested, predicted)
    totals = confusion.sum(1)
    per_class = [confusion[c, c].item() / totals[c].item() if totals[c] else math.nan for c in range(NUM_CLASSES)]
    return {"overall": (predicted == labels).double().mean().item(), "per_class": per_class,
            "confusion": confusion.tolist()}


def _unit_range(reconstructions, originals, border: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    reconstructions = check_images(reconstructions, "reconstructions")
    originals = check_images(originals, "originals")
    _check_pair(reconstructions, originals, ("reconstructions", "originals"))
    if border:  # (N, 1, 32 - 2 * border, 32 - 2 * border)
        reconstructions, originals = (x[..., border:-border, border:-border] for x in (reconstructions, originals))
    return (reconstructions.double() + 1) / 2, (originals.double() + 1) / 2  # [-1, 1] -> [0, 1]


def psnr(reconstructions: torch.Tensor, originals: torch.Tensor, border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB, on the [0, 1] scale (data range 1), averaged over images.

    Per-image PSNR = 10 log10(1 / MSE); identical images are capped at 100 dB (MSE floor 1e-10).
    `border=2` ignores the padding around the 28x28 Fashion-MNIST image (reconstructing it is trivial).

    Used in notebook 03 (VAE reconstructions).
    """
    x, y = _unit_range(reconstructions, originals, border)
    mse = (x - y).square().flatten(1).mean(1).clamp_min(1e-10)  # (N,)
    return (10 * torch.log10(1.0 / mse)).mean().item()


def ssim(reconstructions: torch.Tensor, originals: torch.Tensor, border: int = 0) -> float:
    """Mean structural similarity (Wang et al. 2004) on the [0, 1] scale: 11x11 Gaussian window, sigma 1.5.

    `border` as in `psnr`. Used in notebook 03 (VAE reconstructions).
    """
    x, y = _unit_range(reconstructions, originals, border)
    total = 0.0
    for i in range(0, len(x), 500):  # in chunks: torchmetrics' intermediates are ~10 copies of the batch in float64
        total += structural_similarity_index_measure(x[i:i + 500], y[i:i + 500], data_range=1.0).item() * len(x[i:i + 500])
    return total / len(x)  # the mean over images, as one call would give
