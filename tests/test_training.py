"""Training loop, checkpoints, sampling pipeline and CLI: resume, NaN stop, seeds, clear errors."""
import json
import dataclasses

import pytest
import torch

from minildm import checkpoints
from minildm.checkpoints import CheckpointError, load_model, save_model
from minildm.cli import main as cli_main
from minildm.models.unet import UNet, UNetConfig
from minildm.pipelines.diffusion import sample, sample_batched
from minildm.schedulers import DDIMScheduler, DDPMScheduler
from minildm.training import TrainConfig, TrainingDiverged, drop_condition, learning_rate, train_diffusion

from tiny import TINY, tiny_data, tiny_unet  # tests/tiny.py


SCHED = DDPMScheduler(100, beta_schedule="cosine")


def test_resume_continues_exactly(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=16, checkpoint_every=3, warmup_steps=2)
    straight = train_diffusion(tiny_unet(), SCHED, tiny_data(), cfg, progress=False)
    ckpt = tmp_path / "state"
    train_diffusion(tiny_unet(), SCHED, tiny_data(), TrainConfig(**{**cfg.__dict__, "steps": 3}),
                    checkpoint=ckpt, progress=False)
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 3
    resumed = train_diffusion(tiny_unet(), SCHED, tiny_data(), cfg, checkpoint=ckpt, progress=False)
    assert resumed.losses == straight.losses
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.parameters(), resumed.ema.parameters()):
        assert torch.equal(a, b)


def test_stop_at_snapshots_mid_run_with_the_whole_runs_schedule(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=16, checkpoint_every=100, warmup_steps=2, decay_steps=4)
    straight = train_diffusion(tiny_unet(), SCHED, tiny_data(), cfg, progress=False)
    ckpt = tmp_path / "state"
    first = train_diffusion(tiny_unet(), SCHED, tiny_data(), cfg, checkpoint=ckpt, progress=False, stop_at=3)
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 3   # checkpointed at the stop
    assert first.losses == straight.losses[:3]    # the same lr so far: `steps=3` would have decayed it already
    short = train_diffusion(tiny_unet(), SCHED, tiny_data(), TrainConfig(**{**cfg.__dict__, "steps": 3}), progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(short.model.parameters(), first.model.parameters()))
    resumed = train_diffusion(tiny_unet(), SCHED, tiny_data(), cfg, checkpoint=ckpt, progress=False)
    for a, b in zip(straight.ema.parameters(), resumed.ema.parameters()):
        assert torch.equal(a, b)                  # going on from the snapshot is the uninterrupted run


def test_resume_with_another_model_config_is_refused(tmp_path):
    ckpt = tmp_path / "state"
    train_diffusion(tiny_unet(), SCHED, tiny_data(), TrainConfig(steps=2, batch_size=16, checkpoint_every=1),
                    checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="trained with model config"):
        train_diffusion(tiny_unet(base_channels=16), SCHED, tiny_data(), TrainConfig(steps=4, batch_size=16),
                        checkpoint=ckpt, progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    ckpt = tmp_path / "state"
    data = tiny_data(n=32)
    train_diffusion(tiny_unet(), SCHED, data, TrainConfig(steps=2, batch_size=16, checkpoint_every=1),
                    checkpoint=ckpt, progress=False)
    before = (tmp_path / "state.safetensors").read_bytes()

    class Diverging(UNet):  # a model whose output blows up, as after a too-large learning rate
        def forward(self, x_t, t, cond=None, cond_mask=None):
            return super().forward(x_t, t, cond, cond_mask) * float("nan")

    torch.manual_seed(0)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 2.*last good checkpoint"):
        train_diffusion(Diverging(tiny_unet().config), SCHED, data,
                        TrainConfig(steps=4, batch_size=16, checkpoint_every=1), checkpoint=ckpt, progress=False)
    assert (tmp_path / "state.safetensors").read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_loss_decreases_on_a_tiny_problem():
    data = torch.utils.data.TensorDataset(torch.zeros(64, 1, 8, 8) - 1)  # one constant image: easy
    result = train_diffusion(tiny_unet(), SCHED, data, TrainConfig(steps=60, batch_size=32, lr=3e-3,
                             warmup_steps=5, hflip=False), progress=False)
    assert sum(result.losses[-10:]) < 0.5 * sum(result.losses[:10])


def test_class_conditional_training_needs_labels():
    with pytest.raises(ValueError, match="no conditions"):
        train_diffusion(tiny_unet(num_classes=10), SCHED, tiny_data(), TrainConfig(steps=1, batch_size=8),
                        progress=False)
    with pytest.raises(ValueError, match="p_uncond > 0 needs"):
        train_diffusion(tiny_unet(), SCHED, tiny_data(), TrainConfig(steps=1, batch_size=8, p_uncond=0.1),
                        progress=False)
    out = train_diffusion(tiny_unet(num_classes=10), SCHED, tiny_data(with_labels=True),
                          TrainConfig(steps=2, batch_size=8, p_uncond=0.2), progress=False)
    assert len(out.losses) == 2


def test_drop_condition_rate_and_null():
    labels = torch.zeros(20_000, dtype=torch.long)
    dropped = drop_condition(labels, 0.15, null=10, generator=torch.Generator().manual_seed(0))
    rate = (dropped == 10).float().mean().item()
    assert abs(rate - 0.15) < 4 * (0.15 * 0.85 / 20_000) ** 0.5
    assert set(dropped.unique().tolist()) == {0, 10}


def test_learning_rate_warms_up_holds_and_decays_to_zero():
    cfg = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100, decay_steps=400)
    lrs = [learning_rate(cfg, s) for s in range(cfg.steps)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[99] == pytest.approx(1e-3)           # linear warm-up
    assert all(lr == pytest.approx(1e-3) for lr in lrs[100:601])                     # constant until steps - decay
    assert lrs[800] == pytest.approx(0.5e-3)                                          # half-way down the cosine
    assert all(a >= b for a, b in zip(lrs[600:], lrs[601:])) and lrs[-1] < 1e-7       # decays monotonically to ~0
    assert learning_rate(TrainConfig(steps=1000, warmup_steps=100), 999) == pytest.approx(1e-3)  # default: constant
    short = TrainConfig(steps=10, warmup_steps=1, decay_steps=400)                   # shorter than the decay: all of it
    assert learning_rate(short, 0) == pytest.approx(1e-3) and learning_rate(short, 9) < 0.03e-3
    with pytest.raises(ValueError, match="decay_steps"):
        TrainConfig(steps=10, decay_steps=-1)


def test_bad_train_config():
    with pytest.raises(ValueError, match="unknown loss 'l3'"):
        TrainConfig(loss="l3")
    with pytest.raises(ValueError, match="p_uncond"):
        TrainConfig(p_uncond=1.0)


def test_sampling_is_reproducible_and_seed_dependent():
    model, ddpm = tiny_unet(), DDPMScheduler(50)
    a = sample(model, ddpm, 3, torch.Generator().manual_seed(1), progress=False).images
    b = sample(model, ddpm, 3, torch.Generator().manual_seed(1), progress=False).images
    c = sample(model, ddpm, 3, torch.Generator().manual_seed(2), progress=False).images
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 1, 8, 8) and a.min() >= -1 and a.max() <= 1


def test_ddim_pipeline_intermediates_and_batched():
    model, ddim = tiny_unet(), DDIMScheduler(50)
    out = sample(model, ddim, 2, torch.Generator().manual_seed(0), num_inference_steps=10,
                 return_intermediates=True, progress=False)
    assert len(out.intermediates) == 11 and len(out.pred_x0s) == 10
    batched = sample_batched(model, ddim, 5, batch_size=2, seed=3, num_inference_steps=5, progress=False)
    assert batched.shape == (5, 1, 8, 8)
    assert torch.equal(batched, sample_batched(model, ddim, 5, batch_size=2, seed=3, num_inference_steps=5,
                                               progress=False))


def test_sampling_bad_inputs():
    model = tiny_unet(num_classes=10)
    with pytest.raises(ValueError, match="2 conditions for a batch of 3"):
        sample(model, DDPMScheduler(50), 3, cond=torch.tensor([1, 2]), progress=False)
    with pytest.raises(ValueError, match="num_inference_steps"):
        sample(tiny_unet(), DDIMScheduler(50), 2, num_inference_steps=0, progress=False)
    with pytest.raises(ValueError, match="exceed|more than|larger|cannot be"):
        sample(tiny_unet(), DDIMScheduler(50), 2, num_inference_steps=51, progress=False)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    model = tiny_unet()
    path = save_model(model, tmp_path / "m", meta={"note": "test"})
    loaded = load_model(UNet, path)
    assert loaded.meta == {"note": "test"} and loaded.config == model.config
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
    with torch.no_grad():
        assert torch.equal(loaded(x, t), model.eval()(x, t))
    assert not list(tmp_path.glob("*.tmp"))
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="m.safetensors is corrupt: sha256"):
        load_model(UNet, path)


def test_checkpoint_errors(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="not found.*minildm train"):
        load_model(UNet, tmp_path / "missing")
    path = save_model(tiny_unet(), tmp_path / "m")
    from minildm.models.classifier import FashionClassifier
    with pytest.raises(CheckpointError, match="holds a UNet, not a FashionClassifier"):
        load_model(FashionClassifier, path)
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["config"]["wings"] = 2
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not know"):
        load_model(UNet, path)
    monkeypatch.setattr(checkpoints, "SHIPPED_DIR", tmp_path / "none")
    with pytest.raises(CheckpointError, match="no checkpoint named 'nope'"):
        checkpoints.find("nope")


def test_weights_that_do_not_fit_are_explained(tmp_path):
    path = save_model(tiny_unet(), tmp_path / "m")
    big = UNet(UNetConfig(image_size=8, **{**TINY, "base_channels": 16}))
    tensors, _ = checkpoints.load_tensors(path)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        checkpoints.load_state(big, tensors, "m")


def test_cli_lists_recipes_and_rejects_unknown(capsys):
    assert cli_main(["train", "--list"]) == 0
    assert "ddpm" in capsys.readouterr().out
    assert cli_main(["train", "dalle"]) == 2
    assert "unknown recipe 'dalle'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["--help"])


def test_recipe_trains_resumes_and_exports(tmp_path, monkeypatch):
    import dataclasses
    from minildm import recipes
    small = dataclasses.replace(recipes.DDPM, model=UNetConfig(image_size=8, **TINY),
                                train=TrainConfig(steps=4, batch_size=8, checkpoint_every=2, warmup_steps=1))
    monkeypatch.setitem(recipes.DIFFUSION_RECIPES, "ddpm", small)
    monkeypatch.setattr(recipes, "load_tensors", lambda split: tiny_data(n=32))
    out = recipes.train_recipe("ddpm", steps=2, run_dir=tmp_path / "runs", out_dir=tmp_path, init_from_shipped=False,
                               progress=False)
    first = load_model(UNet, out)
    assert first.meta["steps"] == 2 and first.meta["images_seen"] == 16 and first.meta["recipe"] == "ddpm"
    out = recipes.train_recipe("ddpm", steps=4, run_dir=tmp_path / "runs", out_dir=tmp_path, init_from_shipped=False,
                               progress=False)
    resumed = load_model(UNet, out)
    assert resumed.meta["steps"] == 4  # resumed from runs/ddpm/state, not restarted
    assert resumed.meta["changes"] == ["from step 2: steps 2 -> 4"]  # a new run length is stated on the card
    with pytest.raises(ValueError, match="unknown recipe 'sdxl'"):
        recipes.train_recipe("sdxl")


def test_warm_start_at_another_batch_size_counts_each_part_at_its_own(tmp_path, monkeypatch, capsys):
    import dataclasses
    from minildm import recipes
    small = dataclasses.replace(recipes.DDPM, model=UNetConfig(image_size=8, **TINY),
                                train=TrainConfig(steps=4, batch_size=8, checkpoint_every=2, warmup_steps=1))
    monkeypatch.setitem(recipes.DIFFUSION_RECIPES, "ddpm", small)
    monkeypatch.setattr(recipes, "load_tensors", lambda split: tiny_data(n=32))
    monkeypatch.setattr(recipes, "SHIPPED_DIR", tmp_path / "shipped")
    recipes.train_recipe("ddpm", steps=2, run_dir=tmp_path / "a", out_dir=tmp_path / "shipped", init_from_shipped=False,
                         progress=False)  # the "shipped" weights: 2 steps of 8 images
    out = recipes.train_recipe("ddpm", steps=3, batch_size=4, run_dir=tmp_path / "b", out_dir=tmp_path, progress=False)
    meta = load_model(UNet, out).meta
    assert meta["steps"] == 5 and meta["images_seen"] == 2 * 8 + 3 * 4  # not 5 * 4
    assert meta["train_config"]["batch_size"] == 4 and "it ran 3 steps of batch 4 at lr" in meta["changes"][-1]
    assert cli_main(["train", "vae", "--batch-size", "512"]) == 2  # diffusion recipes only
    assert "--batch-size 512 needs a diffusion recipe" in capsys.readouterr().err


def test_card_history_names_the_device_of_each_part_of_a_warm_started_run():
    from minildm.recipes import _history
    lineage = {"init_from": "data/checkpoints/ddpm.safetensors", "steps_before": 17_000, "wall_clock_s": 7200.0,
               "device_before": "AMD EPYC, 1 threads", "device": "Intel Xeon, 2 threads", "inherited_changes": ["a"]}
    history = _history(lineage)
    assert history[0] == "a" and history[1].startswith("from step 17,000: continued from the exported EMA weights")
    assert history[1].endswith("; the steps before it ran on AMD EPYC, 1 threads (2.00 h), those from it on Intel Xeon, 2 threads")
    assert "ran on" not in _history({**lineage, "device_before": "Intel Xeon, 2 threads"})[1]  # one device: nothing to add
    schedule = _history(lineage, TrainConfig(steps=5000, lr=1e-3, warmup_steps=500, decay_steps=6000))[1]
    assert schedule.endswith("; it ran 5,000 steps of batch 128 at lr 0.001 after a 500-step warm-up, decaying to 0 (cosine) over its last 5,000")


def test_minutes_stop_a_recipe_with_a_checkpoint_and_the_next_run_resumes(tmp_path, monkeypatch, capsys):
    import dataclasses
    from minildm import recipes
    small = dataclasses.replace(recipes.DDPM, model=UNetConfig(image_size=8, **TINY),
                                train=TrainConfig(steps=4, batch_size=8, checkpoint_every=100, warmup_steps=1))
    monkeypatch.setitem(recipes.DIFFUSION_RECIPES, "ddpm", small)
    monkeypatch.setattr(recipes, "load_tensors", lambda split: tiny_data(n=32))
    out = recipes.train_recipe("ddpm", run_dir=tmp_path / "runs", out_dir=tmp_path, init_from_shipped=False,
                               progress=False, max_seconds=0)   # stops after its first step, checkpointing it
    assert load_model(UNet, out).meta["steps"] == 1
    out = recipes.train_recipe("ddpm", run_dir=tmp_path / "runs", out_dir=tmp_path, init_from_shipped=False,
                               progress=False)                   # the next run goes on from step 1 to the end
    assert load_model(UNet, out).meta["steps"] == 4
    for argv, message in [(["train", "vae", "--minutes", "5"], "--minutes 5.0 needs a diffusion recipe"),
                          (["train", "ddpm", "--minutes", "0"], "a positive number"),
                          (["train", "vae", "--until", "500"], "--until 500 needs a diffusion recipe")]:
        assert cli_main(argv) == 2
        assert message in capsys.readouterr().err


def test_the_wide_recipe_is_ddpm_cond_at_the_diffusers_recipes_widths():
    from minildm.recipes import DIFFUSION_RECIPES
    wide, base = DIFFUSION_RECIPES["ddpm_cond_wide"], DIFFUSION_RECIPES["ddpm_cond"]
    assert [wide.model.base_channels * m for m in wide.model.channel_mults] == [32, 64, 128, 256]
    assert wide.model == dataclasses.replace(base.model, base_channels=32)       # only the width differs
    assert wide.train.steps * wide.train.batch_size == 5_120_000 and wide.train.p_uncond == base.train.p_uncond
    assert round(sum(p.numel() for p in UNet(wide.model).parameters()) / 1e6, 2) == 7.95


def test_bf16_precision_trains_resumes_and_is_stated_on_the_card(tmp_path, monkeypatch, capsys):
    from minildm import recipes
    from minildm.cards import write_card
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        TrainConfig(precision="fp16")
    cfg = TrainConfig(steps=4, batch_size=16, checkpoint_every=2, warmup_steps=1, precision="bf16", p_uncond=0.2)
    straight = train_diffusion(tiny_unet(num_classes=10), SCHED, tiny_data(with_labels=True), cfg, progress=False)
    assert all(torch.isfinite(torch.tensor(straight.losses)))
    assert all(p.dtype == torch.float32 for p in straight.ema.parameters())  # autocast: the weights stay fp32
    fp32 = train_diffusion(tiny_unet(num_classes=10), SCHED, tiny_data(with_labels=True),
                           dataclasses.replace(cfg, precision="fp32"), progress=False)
    assert straight.losses[0] != fp32.losses[0] and abs(straight.losses[0] - fp32.losses[0]) < 0.05  # bf16 rounding only
    ckpt = tmp_path / "state"
    train_diffusion(tiny_unet(num_classes=10), SCHED, tiny_data(with_labels=True), dataclasses.replace(cfg, steps=2),
                    checkpoint=ckpt, progress=False)
    resumed = train_diffusion(tiny_unet(num_classes=10), SCHED, tiny_data(with_labels=True), cfg, checkpoint=ckpt,
                              progress=False)
    assert resumed.losses == straight.losses  # bf16 on CPU is deterministic too
    small = dataclasses.replace(recipes.DDPM, model=UNetConfig(image_size=8, **TINY),
                                train=TrainConfig(steps=2, batch_size=8, checkpoint_every=100, warmup_steps=1))
    monkeypatch.setitem(recipes.DIFFUSION_RECIPES, "ddpm", small)
    monkeypatch.setattr(recipes, "load_tensors", lambda split: tiny_data(n=32))
    out = recipes.train_recipe("ddpm", run_dir=tmp_path / "runs", out_dir=tmp_path, init_from_shipped=False,
                               progress=False, precision="bf16")
    model = load_model(UNet, out)
    assert model.meta["train_config"]["precision"] == "bf16"
    monkeypatch.setenv("MINILDM_CHECKPOINTS", str(tmp_path))  # the card reads the exported ddpm here
    card = write_card("ddpm", results_path=tmp_path / "none.json", out_dir=tmp_path).read_text()
    assert "- Precision: the forward pass under bf16 autocast (`--precision bf16`)" in card
    for argv, message in [(["train", "vae", "--precision", "bf16"], "--precision bf16 needs a diffusion recipe"),
                          (["train", "ddpm", "--precision", "bf16", "--export-only"], "and no --export-only")]:
        assert cli_main(argv) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["train", "ddpm", "--precision", "fp16"])  # argparse names the choices
