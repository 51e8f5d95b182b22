"""Classifier-free guided sampling and brightness (loss) guidance on a tiny random class-conditional UNet."""
import pytest
import torch

from minildm.models.unet import UNet, UNetConfig
from minildm.pipelines import brightness_guided_sample, guided_sample, mean_brightness, sample
from minildm.schedulers import DDIMScheduler, DDPMScheduler

TINY = dict(image_size=8, base_channels=8, channel_mults=(1, 2), attention=("none", "full"), heads=1, head_dim=8,
            groups=4, time_dim=16, cross_attention=(False, False))
STEPS = 10
# guided_sample always runs the doubled batch (2B) while diffusion.sample runs B: CPU conv/attention kernels
# may pick a different algorithm (blocking, summation order) for another batch size, so one model call can
# differ by ~1e-6 (measured up to 7e-7 on this tiny UNet for B = 1 and 5, exactly 0 for B = 4). Also
# u + 1 * (c - u) is c only up to one rounding. Hence atol rather than torch.equal for s = 1; s = 0 is
# u + 0 * (c - u) = u exactly, so there only the batch-size effect remains (bit-equal for B = 4).
# End to end, after 10 steps, the largest difference measured was 5.4e-7 (DDIM, B = 5).
ATOL = 1e-5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return UNet(UNetConfig(num_classes=10, **TINY)).eval()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


LABELS = torch.tensor([0, 3, 9, 10, 5])  # 10 = the null class


@pytest.mark.parametrize("make_sched", [lambda: DDPMScheduler(50), lambda: DDIMScheduler(50)], ids=["ddpm", "ddim"])
def test_scale_one_is_conditional_and_zero_is_unconditional(model, make_sched):
    sched = make_sched()
    cond = sample(model, sched, len(LABELS), _gen(), cond=LABELS, num_inference_steps=STEPS, progress=False).images
    guided = guided_sample(model, sched, LABELS, 1.0, _gen(), STEPS, progress=False).images
    torch.testing.assert_close(guided, cond, atol=ATOL, rtol=0)
    null = torch.full_like(LABELS, 10)
    uncond = sample(model, sched, len(LABELS), _gen(), cond=null, num_inference_steps=STEPS, progress=False).images
    guided0 = guided_sample(model, sched, LABELS, 0.0, _gen(), STEPS, progress=False).images
    torch.testing.assert_close(guided0, uncond, atol=ATOL, rtol=0)
    assert not torch.allclose(cond, uncond, atol=1e-3)  # the labels do matter for this random model


def test_guidance_changes_samples_and_is_deterministic(model):
    sched = DDIMScheduler(50)
    s1 = guided_sample(model, sched, LABELS, 1.0, _gen(), STEPS, progress=False).images
    s3 = guided_sample(model, sched, LABELS, 3.0, _gen(), STEPS, progress=False).images
    s3_again = guided_sample(model, sched, LABELS, 3.0, _gen(), STEPS, progress=False).images
    assert torch.equal(s3, s3_again)
    assert not torch.allclose(s1[:3], s3[:3], atol=1e-3)
    # a null label gives eps_cond == eps_uncond, so the guidance scale cannot change its image
    torch.testing.assert_close(s3[3], s1[3], atol=ATOL, rtol=0)


def test_sampling_builds_no_autograd_graph(model):
    """Both guided loops run without gradients kept (a graph over every step would grow memory by gigabytes at
    n = 500; brightness guidance takes its one gradient per step inside and detaches it)."""
    assert all(p.requires_grad for p in model.parameters())
    out = guided_sample(model, DDIMScheduler(50), LABELS, 3.0, _gen(), STEPS, progress=False).images
    assert not out.requires_grad and out.grad_fn is None
    out = brightness_guided_sample(model, DDIMScheduler(50), LABELS[:2], 0.5, generator=_gen(),
                                   num_inference_steps=STEPS, progress=False).images
    assert not out.requires_grad and out.grad_fn is None


def test_intermediates_and_shapes(model):
    out = guided_sample(model, DDIMScheduler(50), torch.tensor([10, 10]), 2.0, _gen(), STEPS,
                        return_intermediates=True, progress=False)
    assert out.images.shape == (2, 1, 8, 8)
    assert out.images.abs().max() <= 1
    assert len(out.intermediates) == STEPS + 1 and len(out.pred_x0s) == STEPS


@pytest.mark.parametrize("labels, err, match", [
    (torch.tensor([0, -1]), ValueError, r"\[0, 10\].*null class"),
    (torch.tensor([0, 11]), ValueError, r"\[0, 10\].*null class"),
    (torch.tensor([0.0, 1.0]), TypeError, "integer"),
    (torch.tensor([[0, 1]]), ValueError, "1-D"),
    ([0, 1], TypeError, "tensor"),
    (torch.tensor([], dtype=torch.long), ValueError, "empty"),
])
def test_bad_labels(model, labels, err, match):
    with pytest.raises(err, match=match):
        guided_sample(model, DDIMScheduler(50), labels, 3.0, num_inference_steps=2, progress=False)


def test_bad_model_and_scale(model):
    torch.manual_seed(0)
    uncond = UNet(UNetConfig(**TINY))
    with pytest.raises(ValueError, match="class-conditional.*diffusion.sample"):
        guided_sample(uncond, DDIMScheduler(50), torch.tensor([0]), num_inference_steps=2, progress=False)
    for bad, err in [(float("nan"), ValueError), (float("inf"), ValueError), (True, TypeError), ("3", TypeError)]:
        with pytest.raises(err, match="guidance_scale"):
            guided_sample(model, DDIMScheduler(50), torch.tensor([0]), bad, num_inference_steps=2, progress=False)
    with pytest.raises(ValueError, match="target_brightness"):
        brightness_guided_sample(model, DDIMScheduler(50), torch.tensor([0]), 1.5, num_inference_steps=2,
                                 progress=False)
    with pytest.raises(ValueError, match="class-conditional"):
        brightness_guided_sample(uncond, DDIMScheduler(50), torch.tensor([0]), 0.5, num_inference_steps=2,
                                 progress=False)


def test_negative_guidance_allowed(model):
    out = guided_sample(model, DDIMScheduler(50), torch.tensor([1, 2]), -1.0, _gen(), STEPS, progress=False)
    assert torch.isfinite(out.images).all()


def test_brightness_guidance_moves_brightness(model):
    sched = DDIMScheduler(50)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    kw = dict(generator=None, num_inference_steps=STEPS, progress=False)
    plain = brightness_guided_sample(model, sched, labels, 0.5, loss_scale=0.0, **{**kw, "generator": _gen()})
    reference = guided_sample(model, sched, labels, 1.0, _gen(), STEPS, progress=False)
    torch.testing.assert_close(plain.images, reference.images, atol=ATOL, rtol=0)  # loss_scale 0: no guidance
    bright = brightness_guided_sample(model, sched, labels, 0.9, loss_scale=50.0, **{**kw, "generator": _gen()})
    dark = brightness_guided_sample(model, sched, labels, 0.1, loss_scale=50.0, **{**kw, "generator": _gen()})
    b_plain, b_bright, b_dark = (mean_brightness(o.images).mean().item() for o in (plain, bright, dark))
    assert b_dark < b_plain - 0.05 < b_plain + 0.05 < b_bright, (b_dark, b_plain, b_bright)
    assert abs(b_bright - 0.9) < abs(b_plain - 0.9) and abs(b_dark - 0.1) < abs(b_plain - 0.1)


def test_negative_labels_replace_the_null_class(model):
    sched = DDIMScheduler(50)
    labels = torch.tensor([1, 2])
    plain = guided_sample(model, sched, labels, 2.0, torch.Generator().manual_seed(0), 3, progress=False).images
    null = torch.full_like(labels, model.config.num_classes)
    same = guided_sample(model, sched, labels, 2.0, torch.Generator().manual_seed(0), 3, progress=False,
                         negative_labels=null).images
    other = guided_sample(model, sched, labels, 2.0, torch.Generator().manual_seed(0), 3, progress=False,
                          negative_labels=torch.tensor([5, 5])).images
    assert torch.equal(plain, same) and not torch.allclose(plain, other)
    with pytest.raises(ValueError, match="must match labels"):
        guided_sample(model, sched, labels, 2.0, None, 3, progress=False, negative_labels=torch.tensor([5]))


def test_guidance_interval_guides_only_inside_it(model):
    sched = DDIMScheduler(100)                                                # 5 steps: t = 80, 60, 40, 20, 0

    def run(s, interval=None):
        return guided_sample(model, sched, LABELS, s, _gen(), 5, progress=False, guidance_interval=interval).images
    guided, conditional = run(3.0), run(1.0)
    assert not torch.allclose(guided, conditional, atol=1e-3)
    assert torch.equal(run(3.0, (-1, 99)), guided)                            # every step inside: plain CFG
    assert torch.equal(run(3.0, (85, 99)), conditional)                       # no step inside: s = 1 throughout
    partial = run(3.0, (50, 99))                                              # guided at t = 80 and 60 only
    assert not torch.allclose(partial, guided, atol=1e-4) and not torch.allclose(partial, conditional, atol=1e-4)


@pytest.mark.parametrize("interval", [(5, 5), (9, 2), (3,), "ab", (1.5, 9), (-3, 2)])
def test_a_bad_guidance_interval_is_explained(model, interval):
    with pytest.raises(ValueError, match=r"guidance_interval must be two integer timesteps \(lo, hi\)"):
        guided_sample(model, DDIMScheduler(100), LABELS, 2.0, _gen(), 2, progress=False, guidance_interval=interval)
