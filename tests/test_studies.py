"""Chapter 04's studies: training to a wall-clock budget, snapshots, evaluation rows, the cost-table pieces."""
import dataclasses
import json

import pytest
import torch

from minildm import recipes, studies
from minildm.checkpoints import load_model
from minildm.models.unet import UNet, UNetConfig
from minildm.training import TrainConfig, train_diffusion
from minildm.schedulers import DDPMScheduler

TINY = dict(base_channels=8, channel_mults=(1, 2), attention=("none", "full"), heads=1, head_dim=8, groups=4,
            time_dim=16, cross_attention=(False, False))
SCHED = DDPMScheduler(100, beta_schedule="cosine")


def tiny_unet(**kw):
    torch.manual_seed(0)
    return UNet(UNetConfig(image_size=8, **{**TINY, **kw}))


def tiny_data(n=48, with_labels=False):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    labels = torch.randint(0, 10, (n,), generator=g)
    return torch.utils.data.TensorDataset(x0, labels) if with_labels else torch.utils.data.TensorDataset(x0)


def test_max_seconds_stops_early_checkpoints_and_resumes_exactly(tmp_path):
    cfg = TrainConfig(steps=10_000, batch_size=8, checkpoint_every=10_000, warmup_steps=1)
    ckpt = tmp_path / "state"
    first = train_diffusion(tiny_unet(), SCHED, tiny_data(), cfg, checkpoint=ckpt, progress=False, max_seconds=0.3)
    steps = len(first.losses)
    assert 0 < steps < 10_000
    meta = json.loads((tmp_path / "state.json").read_text())
    assert meta["step"] == steps and meta["seconds"] >= 0.3  # saved at the stop although not a checkpoint step
    more = train_diffusion(tiny_unet(), SCHED, tiny_data(), dataclasses.replace(cfg, steps=steps + 3),
                           checkpoint=ckpt, progress=False)
    straight = train_diffusion(tiny_unet(), SCHED, tiny_data(), dataclasses.replace(cfg, steps=steps + 3),
                               progress=False)
    assert more.losses == straight.losses  # stopping on time is an ordinary, exact resume point


@pytest.fixture
def tiny_recipe(monkeypatch):
    small = dataclasses.replace(recipes.DDPM_COND, model=UNetConfig(image_size=8, num_classes=10, **TINY),
                                train=TrainConfig(steps=10_000, batch_size=8, checkpoint_every=1000, warmup_steps=1,
                                                  p_uncond=0.1, hflip=False))
    monkeypatch.setitem(recipes.DIFFUSION_RECIPES, "ddpm_cond", small)
    monkeypatch.setattr(studies, "load_tensors", lambda split: tiny_data(n=32, with_labels=True))
    return small


def test_train_arm_snapshots_each_mark_and_skips_done_ones(tmp_path, tiny_recipe):
    paths = studies.train_arm("ddpm_cond", [0.004, 0.008], run_dir=tmp_path, progress=False)
    assert [p.name for p in paths] == ["ddpm_cond_0.004min.safetensors", "ddpm_cond_0.008min.safetensors"]
    early, late = (load_model(UNet, p) for p in paths)
    assert 0.24 - 0.05 <= early.meta["wall_clock_s"] < late.meta["wall_clock_s"]   # wall_clock_s is rounded to 0.1 s
    assert early.meta["steps"] < late.meta["steps"]
    assert late.meta["wall_clock_s"] >= 0.48 - 0.05
    step = json.loads((tmp_path / "ddpm_cond" / "state.json").read_text())["step"]
    studies.train_arm("ddpm_cond", [0.004, 0.008], run_dir=tmp_path, progress=False)  # nothing left to do
    assert json.loads((tmp_path / "ddpm_cond" / "state.json").read_text())["step"] == step


def test_eval_arm_needs_the_snapshot(tmp_path, tiny_recipe):
    with pytest.raises(FileNotFoundError, match="python -m minildm.studies train ddpm_cond --minutes 15"):
        studies.eval_arm("ddpm_cond", [15], run_dir=tmp_path, out=tmp_path / "r.json")
    with pytest.raises(ValueError, match="unknown diffusion recipe 'ldm_f3'"):
        studies.train_arm("ldm_f3", [1], run_dir=tmp_path)


def test_activation_bytes_scale_with_the_batch():
    model = tiny_unet()
    t = torch.zeros(4, dtype=torch.long)
    small = studies.activation_bytes(model, torch.randn(2, 1, 8, 8), t[:2], None)
    large = studies.activation_bytes(model, torch.randn(4, 1, 8, 8), t, None)
    assert small > 0 and large == pytest.approx(2 * small, rel=0.05)


def test_latent_recipe_is_the_cheap_one():
    # the chapter-04 claim in miniature: the latent UNet sees 16x fewer positions and is smaller
    latent, pixel = recipes.LDM_COND.model, recipes.DDPM_COND.model
    assert latent.image_size ** 2 * 16 == pixel.image_size ** 2
    assert sum(p.numel() for p in UNet(latent).parameters()) < sum(p.numel() for p in UNet(pixel).parameters()) / 3
