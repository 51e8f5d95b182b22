"""minildm.vae_training: the autoencoder loop (l1/mse + KL + patch GAN), exact resume, NaN stop, the recipe export."""
import dataclasses
import json

import pytest
import torch

from minildm.models.vae import VAE, VAEConfig
from minildm.training import TrainingDiverged
from minildm.vae_training import (PatchDiscriminator, PatchDiscriminatorConfig, VAETrainConfig, adaptive_weight,
                                  load_vae_training_state, train_vae)

TINY = VAEConfig(base_channels=8, downsample_factor=4)


def tiny_data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(torch.rand(n, 1, 32, 32, generator=g) * 2 - 1)


def test_patch_discriminator_gives_one_logit_per_patch():
    d = PatchDiscriminator(PatchDiscriminatorConfig(channels=8, layers=2))
    assert d(torch.randn(3, 1, 32, 32)).shape == (3, 1, 8, 8)


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    rec, adv = (3 * w).sum(), (w**2).sum()          # grads (3, 3) and (2, 4)
    expected = (3 * 2**0.5) / (20**0.5 + 1e-4)
    assert adaptive_weight(rec, adv, w).item() == pytest.approx(expected, rel=1e-6)


def test_training_lowers_the_reconstruction_error():
    from minildm.data import load_tensors
    torch.manual_seed(0)
    garments = torch.utils.data.TensorDataset(load_tensors("train", limit=64).tensors[0])
    result = train_vae(VAE(TINY), garments, VAETrainConfig(steps=30, batch_size=16, lr=3e-3, warmup_steps=1),
                       progress=False)
    rec = result.history["recon"]
    assert sum(rec[-5:]) / 5 < 0.8 * sum(rec[:5]) / 5
    assert result.images_seen == 30 * 16 and not result.history["d_loss"]   # no discriminator without disc_weight


def test_resume_across_the_gan_switch_is_exact(tmp_path):
    cfg = VAETrainConfig(steps=6, batch_size=16, disc_start=2, disc_weight=0.5, checkpoint_every=3)
    torch.manual_seed(0)
    straight = train_vae(VAE(TINY), tiny_data(), cfg, progress=False)
    torch.manual_seed(0)
    train_vae(VAE(TINY), tiny_data(), dataclasses.replace(cfg, steps=3), checkpoint=tmp_path / "s", progress=False)
    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = train_vae(VAE(TINY), tiny_data(), cfg, checkpoint=tmp_path / "s", progress=False)
    assert resumed.history["loss"] == straight.history["loss"] and len(straight.history["d_loss"]) == 4
    for a, b in zip(straight.vae.parameters(), resumed.vae.parameters()):
        assert torch.equal(a, b)
    vae, meta = load_vae_training_state(tmp_path / "s", VAE)
    assert meta["step"] == 6 and isinstance(vae, VAE)


def test_resume_refuses_another_model_config(tmp_path):
    train_vae(VAE(TINY), tiny_data(), VAETrainConfig(steps=1, batch_size=16), checkpoint=tmp_path / "s", progress=False)
    with pytest.raises(ValueError, match="trained with model config"):
        train_vae(VAE(VAEConfig(base_channels=16)), tiny_data(), VAETrainConfig(steps=2, batch_size=16),
                  checkpoint=tmp_path / "s", progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    data = tiny_data()
    cfg = VAETrainConfig(steps=2, batch_size=16, checkpoint_every=1)
    train_vae(VAE(TINY), data, cfg, checkpoint=tmp_path / "s", progress=False)
    before = (tmp_path / "s.safetensors").read_bytes()
    from minildm import vae_training
    real_loss = vae_training.vae_loss

    def diverging_loss(*args):  # what a too-large learning rate does, without waiting for it
        parts = real_loss(*args)
        return parts._replace(loss=parts.loss * float("nan"))

    monkeypatch.setattr(vae_training, "vae_loss", diverging_loss)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 2.*last good checkpoint"):
        train_vae(VAE(TINY), data, dataclasses.replace(cfg, steps=4), checkpoint=tmp_path / "s", progress=False)
    assert (tmp_path / "s.safetensors").read_bytes() == before


@pytest.mark.parametrize("kwargs, match", [({"recon": "l2"}, "recon must be"), ({"steps": 0}, "positive"),
                                           ({"beta": -1.0}, ">= 0")])
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAETrainConfig(**kwargs)


def test_vae_recipe_exports_fp16_weights_with_the_latent_scale(tmp_path, monkeypatch):
    from minildm import recipes
    recipe = dataclasses.replace(recipes.VAE_F4, model=TINY,
                                 train=dataclasses.replace(recipes.VAE_F4.train, steps=2, batch_size=8))
    monkeypatch.setitem(recipes.VAE_RECIPES, "vae", recipe)
    monkeypatch.setattr(recipes, "load_tensors", lambda split, limit=None: tiny_data(16))
    path = recipes.train_recipe("vae", run_dir=tmp_path / "runs", out_dir=tmp_path, progress=False)
    header = json.loads(path.with_suffix(".json").read_text())
    assert header["meta"]["steps"] == 2 and header["meta"]["latent_scale"] > 0
    from minildm.checkpoints import load_model
    vae = load_model(VAE, path)
    assert vae.config == TINY
