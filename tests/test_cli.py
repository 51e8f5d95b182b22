"""The `minildm` command line: sample, train all, --help, and clear errors."""
import pytest
import torch
from PIL import Image

from minildm.checkpoints import save_model
from minildm.cli import TRAIN_ALL, main
from minildm.models.unet import UNet, UNetConfig

SCHED = {"num_train_timesteps": 100, "beta_schedule": "cosine", "prediction_type": "eps"}


@pytest.fixture
def tiny_cond(tmp_path, monkeypatch):
    torch.manual_seed(0)
    unet = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), attention=("none", "full"), heads=1, head_dim=8,
                           groups=4, time_dim=16, cross_attention=(False, False), num_classes=10))
    save_model(unet, tmp_path / "ddpm_cond", meta=SCHED)
    monkeypatch.setenv("MINILDM_CHECKPOINTS", str(tmp_path))
    return tmp_path


def test_sample_writes_a_png_grid_and_is_reproducible(tiny_cond, capsys):
    out_a, out_b = tiny_cond / "a.png", tiny_cond / "b.png"
    for out in (out_a, out_b):
        assert main(["sample", "ddpm_cond", "--label", "sneaker", "-n", "3", "--steps", "2", "-o", str(out),
                     "--upscale", "1"]) == 0
    assert Image.open(out_a).size == (3 * 32 + 4 * 2, 32 + 2 * 2)         # 3 images, 2-pixel padding
    assert out_a.read_bytes() == out_b.read_bytes()                          # same seed, same PNG
    assert "3 samples of ddpm_cond" in capsys.readouterr().out
    assert not list(tiny_cond.glob("*.part"))
    assert main(["sample", "ddpm_cond", "-n", "2", "--steps", "2", "--guidance-interval", "10", "60",
                 "-o", str(out_a)]) == 0                                      # guidance in a limited interval
    assert "2 samples of ddpm_cond" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["sample", "imagen"], "unknown model 'imagen'"),
    (["sample", "ddpm_cond", "--label", "scarf"], "unknown label 'scarf'"),
    (["sample", "ddpm", "--label", "3"], "ddpm is unconditional"),
    (["sample", "ddpm_cond", "-n", "0"], "must be >= 1"),
    (["sample", "ldm_cond", "-n", "1"], "no checkpoint named"),
    (["sample", "ddpm", "--guidance-interval", "100", "600"], "--guidance-interval is a guidance setting"),
    (["sample", "ddpm_cond", "--guidance-interval", "600", "100"], "guidance_interval must be two integer timesteps"),
    (["train", "imagen"], "unknown recipe 'imagen'"),
    (["train", "all", "--steps", "3"], "apply to one recipe"),
])
def test_errors_say_what_is_wrong(tiny_cond, monkeypatch, capsys, argv, message):
    monkeypatch.setattr("minildm.checkpoints.SHIPPED_DIR", tiny_cond / "nothing-shipped")
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_train_all_runs_every_recipe_in_dependency_order(monkeypatch):
    import minildm.recipes as recipes
    import minildm.models.classifier as classifier
    done = []
    monkeypatch.setattr(recipes, "train_recipe", lambda name, **kw: done.append(name) or f"{name}.safetensors")
    monkeypatch.setattr(classifier, "main", lambda argv: done.append("classifier") or 0)
    import minildm.text_training as text_training
    monkeypatch.setattr(text_training, "train_text_recipe", lambda name, **kw: done.append(name) or f"{name}.safetensors")
    assert main(["train", "all"]) == 0
    assert done == list(TRAIN_ALL) and done.index("vae") < done.index("ldm_cond")


@pytest.mark.parametrize("command", [[], ["train"], ["sample"], ["bench"], ["card"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(command + ["--help"])
    assert exit_.value.code == 0 and "usage: minildm" in capsys.readouterr().out


def test_sample_ldm_cond_takes_a_guidance_interval(tmp_path, monkeypatch, capsys):
    from minildm.checkpoints import sha256_file
    from minildm.models.vae import VAE, VAEConfig
    torch.manual_seed(0)
    vae_path = save_model(VAE(VAEConfig(base_channels=8)), tmp_path / "vae", meta={"latent_scale": 0.5})
    unet = UNet(UNetConfig(in_channels=4, out_channels=4, image_size=8, base_channels=8, channel_mults=(1, 2),
                           attention=("none", "full"), heads=1, head_dim=8, groups=4, time_dim=16,
                           cross_attention=(False, False), num_classes=10))
    save_model(unet, tmp_path / "ldm_cond", meta={**SCHED, "latent_vae": "vae", "latent_vae_sha256": sha256_file(vae_path)})
    monkeypatch.setenv("MINILDM_CHECKPOINTS", str(tmp_path))
    out = tmp_path / "a.png"
    assert main(["sample", "ldm_cond", "-n", "2", "--steps", "3", "--guidance-interval", "10", "60", "-o", str(out)]) == 0
    assert out.exists() and "2 samples of ldm_cond" in capsys.readouterr().out
    assert main(["sample", "ldm_cond", "-n", "2", "--steps", "3", "--guidance-interval", "60", "10", "-o", str(out)]) == 2
    assert "guidance_interval must be two integer timesteps" in capsys.readouterr().err
