"""minildm.metrics and the shipped classifier: feature space, FID sanity, class accuracy, input checks."""
import math

import pytest
import torch
import torch.nn.functional as F

from minildm import metrics
from minildm.data import load_tensors, postprocess, to_uint8
from minildm.models.classifier import FashionClassifier, evaluate, load_classifier

N = 1000


@pytest.fixture(scope="module")
def test_split():
    return load_tensors("test").tensors  # (10000, 1, 32, 32) in [-1, 1], (10000,)


@pytest.fixture(scope="module")
def real(test_split):
    return test_split[0][:N], test_split[0][N:2 * N]  # two disjoint real sets


def _noisy(x, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def _blur(x, sigma):
    r = 3
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))  # (N, 1, 32 + 2r, 32): horizontal pass
    return F.conv2d(x, k.view(1, 1, -1, 1))  # (N, 1, 32, 32)


def test_shipped_classifier_reaches_92_percent(test_split):
    model = load_classifier()
    assert isinstance(model, FashionClassifier) and not model.training
    acc = evaluate(model, *test_split)
    assert acc >= 0.92
    assert acc == pytest.approx(model.meta["test_accuracy"], abs=5e-4)  # the model card's number (thread-count noise)


def test_classifier_rejects_28x28():
    with pytest.raises(ValueError, match="preprocess"):
        load_classifier()(torch.zeros(2, 1, 28, 28))


def test_features_shape_and_input_conventions(real):
    x = real[0][:16]
    extractor = metrics.FeatureExtractor()
    assert extractor.num_features == 256
    feats = extractor(x)
    assert feats.shape == (16, 256) and feats.dtype == torch.float64
    extractor.train()  # torchmetrics may call .train(); BatchNorm must stay frozen
    assert not extractor.classifier.training
    torch.testing.assert_close(extractor(to_uint8(x)), feats, atol=1e-4, rtol=1e-4)  # uint8 [0, 255]
    unit = metrics.FeatureExtractor(normalize=True)
    torch.testing.assert_close(unit(postprocess(x)), feats, atol=1e-4, rtol=1e-4)  # floats in [0, 1]
    assert metrics.extract_features(x).shape == (16, 256)


def test_fid_same_set_is_zero_and_real_sets_are_close(real):
    a, b = real
    assert metrics.fid(a, a) < 1e-3
    assert 0 < metrics.fid(a, b) < 5 * metrics.fid(_noisy(a, 0.1), b)


def test_fid_increases_with_noise_and_blur(real):
    a, b = real
    noise = [metrics.fid(_noisy(a, s), b) for s in (0.0, 0.05, 0.1, 0.2, 0.4)]
    blur = [metrics.fid(_blur(a, s), b) for s in (0.5, 1.0, 1.5)]
    assert noise == sorted(noise) and noise[-1] > 10 * noise[0], noise
    assert blur == sorted(blur) and blur[0] > noise[0], blur


def test_fid_report_floor(test_split):
    train = load_tensors("train", limit=500).tensors[0]
    report = metrics.fid_report(train)
    assert set(report) >= {"n_samples", "fid", "fid_floor", "fid_ratio"}
    assert report["n_samples"] == 500 and report["fid_floor"] > 0
    assert 0.5 < report["fid_ratio"] < 2  # real images sit at the real-vs-real floor
    assert metrics.fid_floor(500) == report["fid_floor"]  # cached and deterministic
    assert metrics.fid_report(_noisy(train, 0.2))["fid_ratio"] > 3


def test_kid_and_precision_recall(real):
    a, b = real[0][:500], real[1][:500]
    clean, noisy = metrics.kid(a, b, subsets=20), metrics.kid(_noisy(a, 0.3), b, subsets=20)
    assert abs(clean[0]) < noisy[0]
    assert metrics.kid(a, b, subsets=20) == clean  # seeded subsets
    pr = metrics.precision_recall(a, b)
    assert pr["precision"] > 0.6 and pr["recall"] > 0.6
    assert metrics.precision_recall(_noisy(a, 0.4), b)["precision"] < pr["precision"]


def test_class_accuracy_matches_classifier(real, test_split):
    x, y = test_split[0][:N], test_split[1][:N]
    result = metrics.class_accuracy(x, y)
    assert result["overall"] == pytest.approx(evaluate(load_classifier(), x, y), abs=1e-12)
    confusion = torch.tensor(result["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == N
    assert confusion.sum(1).tolist() == torch.bincount(y, minlength=10).tolist()
    for c in range(10):
        assert result["per_class"][c] == pytest.approx(confusion[c, c].item() / confusion[c].sum().item())
    assert math.isnan(metrics.class_accuracy(x[y != 3], y[y != 3])["per_class"][3])


def test_psnr_and_ssim(real):
    a = real[0][:100]
    assert metrics.psnr(a, a) == pytest.approx(100.0)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert metrics.psnr(_noisy(a, 0.05), a) > metrics.psnr(_noisy(a, 0.2), a) > 10
    assert metrics.ssim(_noisy(a, 0.05), a) > metrics.ssim(_noisy(a, 0.2), a)
    # sigma 0.1 on [-1, 1] is 0.05 on [0, 1]: PSNR about 10 log10(1 / 0.05^2) = 26 dB (a bit more: clamping)
    assert 25 < metrics.psnr(_noisy(a, 0.1), a) < 28


def test_bad_inputs_give_clear_errors(real, test_split):
    x = real[0][:10]
    with pytest.raises(ValueError, match="28x28"):
        metrics.fid(x[..., 2:-2, 2:-2], x)
    with pytest.raises(ValueError, match="grayscale"):
        metrics.fid(x.expand(-1, 3, -1, -1), x)
    with pytest.raises(ValueError, match="channel axis"):
        metrics.fid(x[:, 0], x)
    with pytest.raises(ValueError, match=r"\[0, 1\] images.*\* 2 - 1"):
        metrics.fid(postprocess(x), x)
    with pytest.raises(TypeError, match="uint8.*preprocess"):
        metrics.fid(to_uint8(x), x)
    with pytest.raises(ValueError, match=r"\[0, 255\] pixels stored as floats"):
        metrics.fid(to_uint8(x).float(), x)
    with pytest.raises(ValueError, match="clamp"):
        metrics.fid(x * 1.5, x)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.fid(x[:1], x)
    with pytest.raises(ValueError, match="NaN"):
        metrics.fid(torch.where(x > 0.9, float("nan"), x), x)
    with pytest.raises(ValueError, match="reference.*at least 2"):
        metrics.fid(x, x[:1])
    with pytest.raises(ValueError, match="one label per image"):
        metrics.class_accuracy(x, test_split[1][:9])
    with pytest.raises(ValueError, match=r"in \[0, 9\]"):
        metrics.class_accuracy(x, torch.full((10,), 10))
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(x[:5], x)
    with pytest.raises(ValueError, match="n=20"):
        metrics.fid_report(x, n=20)


def test_fid_gap_analysis_splits_fid_into_mean_and_covariance_terms():
    import importlib.util
    from pathlib import Path
    tool_path = Path(__file__).resolve().parent.parent / "tools" / "fid_gap_analysis.py"
    spec = importlib.util.spec_from_file_location("fid_gap", tool_path)
    tool = importlib.util.module_from_spec(spec)  # tools/ is not a package
    spec.loader.exec_module(tool)
    a = torch.randn(400, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = a - a.mean(0)  # zero-mean, so 2 * a has the same mean
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0, 3.0], dtype=torch.float64)
    same = tool.frechet_terms(a, a + shift)  # same covariance, shifted mean
    assert same["mean_term"] == pytest.approx(float((shift ** 2).sum()))
    assert abs(same["cov_term"]) < 1e-8
    wider = tool.frechet_terms(a, 2 * a)  # same mean, covariance x4: Tr(S + 4S - 2 * 2S) = Tr(S)
    assert wider["mean_term"] < 1e-20
    assert wider["cov_term"] == pytest.approx(float(torch.cov(a.T).trace()), rel=1e-6)
    assert wider["fid"] == wider["mean_term"] + wider["cov_term"]
