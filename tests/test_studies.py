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

from tiny import TINY, tiny_data, tiny_unet  # tests/tiny.py

SCHED = DDPMScheduler(100, beta_schedule="cosine")


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


def test_budget_arms_see_the_same_images_and_are_scored_alike(tmp_path, monkeypatch):
    from minildm.models.peers import DiffusersUNet, PeerConfig
    train = TrainConfig(steps=10_000, batch_size=4, checkpoint_every=1000, warmup_steps=1, p_uncond=0.1, hflip=False)
    mine = dataclasses.replace(recipes.DDPM_COND, model=UNetConfig(image_size=32, num_classes=10, **TINY), train=train)
    peer = dataclasses.replace(recipes.DDPM_COND_PEER, model=PeerConfig(layout="same-layout", num_classes=10),
                               train=train)
    monkeypatch.setitem(recipes.DIFFUSION_RECIPES, "ddpm_cond", mine)
    monkeypatch.setitem(recipes.DIFFUSION_RECIPES, "ddpm_cond_peer", peer)
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(16, 1, 32, 32, generator=g) * 2 - 1,
                                          torch.randint(0, 10, (16,), generator=g))
    monkeypatch.setattr(recipes, "load_tensors", lambda split: data)
    out = tmp_path / "equal_images.json"
    with pytest.raises(FileNotFoundError, match="python -m minildm.studies train ddpm_cond_peer --steps 3"):
        studies.eval_budget_arm("ddpm_cond_peer", 3, run_dir=tmp_path, out=out)
    a = studies.train_budget_arm("ddpm_cond", 3, run_dir=tmp_path, progress=False)
    b = studies.train_budget_arm("ddpm_cond_peer", 3, run_dir=tmp_path, progress=False)
    ma, mb = load_model(UNet, a), load_model(DiffusersUNet, b)
    assert ma.meta["images_seen"] == mb.meta["images_seen"] == 12      # the budget: 3 steps of 4 images, from scratch
    assert ma.meta["changes"] == [] and mb.meta["steps"] == 3           # not warm-started from shipped weights
    monkeypatch.setattr(studies, "train_recipe", lambda *a, **k: pytest.fail("an exported arm is not trained again"))
    assert studies.train_budget_arm("ddpm_cond", 3, run_dir=tmp_path) == a
    assert studies.equal_images_summary(out) is None                    # nothing scored yet
    rows = [studies.eval_budget_arm(name, 3, n=10, run_dir=tmp_path, out=out) for name in ("ddpm_cond", "ddpm_cond_peer")]
    saved = json.loads(out.read_text())
    assert saved["ddpm_cond_peer / 3 steps / s=1.5 / n=10"] == rows[1]
    assert rows[1]["params"] > rows[0]["params"] and rows[0]["sampler"] == "ddim-50"
    assert all(0 <= r["class_accuracy"] <= 1 and r["fid_ratio"] == r["fid"] / r["fid_floor"] for r in rows)
    summary = studies.equal_images_summary(out)
    assert summary.startswith(f"FID ratio {rows[0]['fid_ratio']:.2f} vs {rows[1]['fid_ratio']:.2f}")
    assert summary.endswith("(12 images each; n = 10, s = 1.5, ddim-50)")


def test_equal_images_summary_pairs_only_rows_measured_alike(tmp_path):
    def row(recipe, images, fid_ratio, acc, n=1000):
        return {"recipe": recipe, "images_seen": images, "n_samples": n, "guidance_scale": 1.5, "sampler": "ddim-50",
                "fid_ratio": fid_ratio, "class_accuracy": acc}
    path = tmp_path / "equal_images.json"
    path.write_text(json.dumps({"a": row("ddpm_cond", 128_000, 2.0, 0.9), "b": row("ddpm_cond_peer", 128_000, 3.0, 0.8),
                                "c": row("ddpm_cond", 256_000, 1.5, 0.95),  # no peer at this budget: not a pair
                                "d": row("ddpm_cond_peer", 128_000, 1.0, 0.99, n=5000)}))  # another n: not a pair
    assert studies.equal_images_summary(path) == ("FID ratio 2.00 vs 3.00, accuracy 0.900 vs 0.800: better on both "
                                                   "(128,000 images each; n = 1,000, s = 1.5, ddim-50)")
    path.write_text(json.dumps({"a": row("ddpm_cond", 128_000, 2.0, 0.7), "b": row("ddpm_cond_peer", 128_000, 3.0, 0.8)}))
    assert "not better on both" in studies.equal_images_summary(path)
    path.write_text(json.dumps({"a": row("ddpm_cond", 640_000, 2.0, 0.9), "w": row("ddpm_cond_wide", 640_000, 1.5, 0.95)}))
    assert studies.equal_images_summary(path) is None                    # no peer rows: no pair
    assert studies.equal_images_summary(path, "ddpm_cond_wide", "ddpm_cond").startswith(
        "FID ratio 1.50 vs 2.00, accuracy 0.950 vs 0.900: better on both (640,000 images each")  # the width study


def test_width_study_reads_ddpm_conds_snapshots_from_git_and_names_what_is_missing(tmp_path):
    import importlib.util
    from pathlib import Path
    from minildm import checkpoints
    from minildm.models.unet import UNet
    spec = importlib.util.spec_from_file_location("width_study", Path(__file__).resolve().parent.parent / "tools" / "width_study.py")
    tool = importlib.util.module_from_spec(spec)  # tools/ is not a package
    spec.loader.exec_module(tool)
    import subprocess
    if any(subprocess.run(["git", "-C", str(tool.ROOT), "cat-file", "-e", c], capture_output=True).returncode
           for c in tool.SNAPSHOTS.values()):
        pytest.skip("a shallow clone: the git history with ddpm_cond's early snapshots is not here")
    for step in tool.SNAPSHOTS:  # every commit named holds ddpm_cond at that step, on the constant lr
        model = checkpoints.load_model(UNet, tool.ddpm_cond_at(step, tmp_path))  # sha256 checked on load
        assert model.meta["steps"] == step and model.meta["train_config"]["steps"] == 30_000
        assert model.config.base_channels == 16
    with pytest.raises(SystemExit, match="no ddpm_cond snapshot at step 3000"):
        tool.ddpm_cond_at(3000, tmp_path)
    with pytest.raises(SystemExit, match="ddpm_cond_wide_5000.safetensors: train and export it first"):
        tool.main(["5000", "--arms", "ddpm_cond_wide", "--wide-dir", str(tmp_path)])
