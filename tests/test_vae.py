"""minildm.models.vae: the Gaussian KL against Monte Carlo, the reparameterisation trick, shapes for every f,
latent_scale, input checks, checkpoint round trips and a short training run on real images.

Small configs (base_channels=8) keep the file fast on a busy 2-core machine.
"""
import math

import pytest
import torch

from minildm.checkpoints import load_model, save_model
from minildm.models.vae import (VAE, DiagonalGaussian, MLPVAE, MLPVAEConfig, VAEConfig, VAEOutput, latent_scale,
                                vae_loss)

SMALL = dict(base_channels=8, groups=4)


def small(**overrides) -> VAE:
    return VAE(VAEConfig(**{**SMALL, **overrides}))


# ---------------------------------------------------------------------------------------------- DiagonalGaussian

@pytest.mark.parametrize("mu,logvar", [(0.0, 0.0), (0.5, -1.0), (-1.2, 0.7), (2.0, -3.0)])
def test_closed_form_kl_matches_monte_carlo(mu, logvar):
    n = 200_000
    q = DiagonalGaussian(torch.full((n, 1), mu, dtype=torch.float64), torch.full((n, 1), logvar, dtype=torch.float64))
    z = q.sample(torch.Generator().manual_seed(1))  # (n, 1)
    eps = (z - mu) / math.exp(0.5 * logvar)
    log_ratio = -0.5 * logvar - 0.5 * eps**2 + 0.5 * z**2  # log q(z) - log p(z); the 2 pi terms cancel
    mc, se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(n)
    closed = q.kl()[0].item()
    assert abs(closed - mc) <= 4 * se + 1e-12, (closed, mc, se)


def test_kl_of_standard_normal_is_zero_and_kl_is_nonnegative():
    assert torch.equal(DiagonalGaussian(torch.zeros(3, 4, 2, 2), torch.zeros(3, 4, 2, 2)).kl(), torch.zeros(3))
    q = DiagonalGaussian(3 * torch.randn(64, 4, 8, 8), 3 * torch.randn(64, 4, 8, 8))
    kl = q.kl()
    assert kl.shape == (64,) and (kl >= 0).all()


def test_kl_sums_over_latent_dims():
    mu, logvar = torch.randn(5, 3, 2, 2), torch.randn(5, 3, 2, 2)
    per_dim = DiagonalGaussian(mu.reshape(-1, 1), logvar.reshape(-1, 1)).kl().reshape(5, 12)
    assert torch.allclose(DiagonalGaussian(mu, logvar).kl(), per_dim.sum(1), atol=1e-5)


def test_logvar_is_clamped_like_diffusers():
    q = DiagonalGaussian(torch.zeros(1, 2), torch.tensor([[-100.0, 100.0]]))
    assert q.logvar.tolist() == [[-30.0, 20.0]] and torch.isfinite(q.kl()).all()


def test_reparameterisation_passes_gradients_and_is_seeded():
    mu = torch.randn(4, 3, requires_grad=True)
    logvar = torch.randn(4, 3, requires_grad=True)
    q = DiagonalGaussian(mu, logvar)
    z = q.sample(torch.Generator().manual_seed(7))
    z.sum().backward()
    eps = torch.randn(4, 3, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(mu.grad, torch.ones(4, 3))
    assert torch.allclose(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps, atol=1e-6)  # dz/dlogvar
    again = q.sample(torch.Generator().manual_seed(7))
    assert torch.equal(z, again) and not torch.equal(z, q.sample(torch.Generator().manual_seed(8)))
    assert torch.equal(q.mode(), mu)


def test_diagonal_gaussian_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"mu\[:, None\]"):
        DiagonalGaussian(torch.zeros(5), torch.zeros(5))


# ---------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("f", [1, 2, 4, 8])
def test_vae_shapes_for_each_downsample_factor(f):
    vae = small(downsample_factor=f)
    assert len(vae.config.channel_mults) == int(math.log2(f)) + 1 and vae.config.latent_size == 32 // f
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    out = vae(x)
    assert isinstance(out, VAEOutput)
    assert out.z.shape == out.posterior.mu.shape == (2, 4, 32 // f, 32 // f)
    assert out.reconstruction.shape == (2, 1, 32, 32)
    assert vae.decode(torch.randn(3, 4, 32 // f, 32 // f)).shape == (3, 1, 32, 32)
    assert torch.equal(vae(x, sample=False).z, out.posterior.mu)


def test_vae_mid_attention_and_latent_channels():
    vae = small(latent_channels=3, mid_attention=True, channel_mults=(1, 2, 2), num_res_blocks=2)
    out = vae(torch.randn(2, 1, 32, 32))
    assert out.z.shape == (2, 3, 8, 8) and out.reconstruction.shape == (2, 1, 32, 32)


def test_mlp_vae_shapes():
    vae = MLPVAE(MLPVAEConfig(hidden=64))
    out = vae(torch.randn(5, 1, 32, 32))
    assert out.z.shape == (5, 2) and out.posterior.kl().shape == (5,)
    assert out.reconstruction.shape == (5, 1, 32, 32)
    assert vae.decode(torch.randn(7, 2)).shape == (7, 1, 32, 32)


def test_vae_loss_normalisation():
    vae = small()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    out = vae(x, generator=torch.Generator().manual_seed(0))
    loss = vae_loss(x, out, beta=0.5)
    assert torch.allclose(loss.recon, ((out.reconstruction - x) ** 2).mean())
    assert torch.allclose(loss.kl, out.posterior.kl().mean() / 1024)  # nats per pixel
    assert torch.allclose(loss.loss, loss.recon + 0.5 * loss.kl)
    assert torch.allclose(vae_loss(x, out, 0.0, recon="l1").loss, (out.reconstruction - x).abs().mean())
    with pytest.raises(ValueError, match="recon must be"):
        vae_loss(x, out, 1.0, recon="bce")
    with pytest.raises(ValueError, match="beta must be"):
        vae_loss(x, out, -1.0)


# ---------------------------------------------------------------------------------------------- latent_scale

def test_latent_scale_makes_latents_unit_variance():
    vae = small()
    x = torch.rand(40, 1, 32, 32) * 2 - 1
    base = latent_scale(vae, x, batch_size=16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        vae.encoder["out"][-1].weight[:4] *= 10  # the mu rows of the last conv: latents 10x larger
        vae.encoder["out"][-1].bias[:4] *= 10
    scale = latent_scale(vae, x, batch_size=16, generator=torch.Generator().manual_seed(0))
    assert scale < base / 3
    with torch.no_grad():
        z = vae(x, generator=torch.Generator().manual_seed(1)).z  # other noise than latent_scale saw
    assert abs(scale * z.std().item() - 1) < 0.02
    mode_scale = latent_scale(vae, x, sample=False)
    assert mode_scale == pytest.approx(1 / vae.encode(x).mu.std().item(), rel=1e-4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(40)), batch_size=7)
    assert latent_scale(vae, loader, sample=False) == pytest.approx(mode_scale, rel=1e-4)
    assert vae.training  # mode restored


def test_latent_scale_rejects_empty_input():
    with pytest.raises(ValueError, match="at least one image"):
        latent_scale(small(), torch.zeros(0, 1, 32, 32))


# ---------------------------------------------------------------------------------------------- bad input

def test_vae_config_rejects_bad_values():
    with pytest.raises(ValueError, match="downsample_factor must be one of"):
        VAEConfig(downsample_factor=3)
    with pytest.raises(ValueError, match="not divisible by downsample_factor=8"):
        VAEConfig(image_size=36, downsample_factor=8)
    with pytest.raises(ValueError, match="channel_mults needs 3"):
        VAEConfig(channel_mults=(1, 2))
    with pytest.raises(ValueError, match="groups=8"):
        VAEConfig(base_channels=12)
    with pytest.raises(ValueError, match="latent_dim must be a positive int"):
        MLPVAEConfig(latent_dim=0)


def test_vae_rejects_bad_input():
    vae = small()
    with pytest.raises(ValueError, match="1 in dim 1"):
        vae.encode(torch.randn(2, 3, 32, 32))  # wrong channels
    with pytest.raises(ValueError, match="x is 30x30, not divisible by downsample_factor=4"):
        vae.encode(torch.randn(2, 1, 30, 30))
    with pytest.raises(ValueError, match="x\\[None\\]"):
        vae.encode(torch.randn(1, 32, 32))
    with pytest.raises(ValueError, match="NaN"):
        vae.encode(torch.full((1, 1, 32, 32), float("nan")))
    with pytest.raises(TypeError, match="float"):
        vae.encode(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 4, 8, 8\)"):
        vae.decode(torch.randn(2, 1, 32, 32))  # an image, not a latent
    mlp = MLPVAE(MLPVAEConfig(hidden=16))
    with pytest.raises(ValueError, match="built for 32x32"):
        mlp.encode(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        mlp.decode(torch.randn(2, 4, 8, 8))


# ---------------------------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("model", [lambda: small(mid_attention=True), lambda: MLPVAE(MLPVAEConfig(hidden=32))])
def test_save_load_round_trip(tmp_path, model):
    vae = model().eval()
    save_model(vae, tmp_path / "vae", meta={"note": "test"})
    loaded = load_model(type(vae), tmp_path / "vae")
    assert loaded.config == vae.config and loaded.meta == {"note": "test"}
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        a, b = vae(x, generator=torch.Generator().manual_seed(3)), loaded(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.reconstruction, b.reconstruction) and torch.equal(a.z, b.z)


# ---------------------------------------------------------------------------------------------- training

def test_short_training_lowers_the_loss():
    from minildm.data import load_tensors
    x = load_tensors("test", limit=64).tensors[0]  # (64, 1, 32, 32) in [-1, 1]
    vae = small()
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)

    def eval_loss():
        with torch.no_grad():
            return vae_loss(x, vae(x, sample=False), beta=1e-3).loss.item()

    before = eval_loss()
    for _ in range(30):
        loss = vae_loss(x, vae(x, generator=gen), beta=1e-3).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)


def test_the_shipped_vae_meets_its_targets_on_a_test_slice():
    """Chapter 03's reference on the first 1,000 test images (the full numbers: `minildm bench vae`, its card)."""
    from minildm import checkpoints, metrics
    from minildm.bench import reconstruct
    from minildm.data import load_tensors
    vae = checkpoints.load_model(VAE, checkpoints.find("vae"))
    x, labels = load_tensors("test", limit=1000).tensors
    rec = reconstruct(vae, x)
    assert metrics.psnr(rec, x, border=2) >= 26.0                        # dB on the 28x28 image area
    assert metrics.class_accuracy(rec, labels)["overall"] >= 0.90         # meaning is kept
    with torch.no_grad():
        z = vae.encode(x).mode() * vae.meta["latent_scale"]
    assert 0.9 < z.std().item() < 1.1 and z.shape[1:] == (4, 8, 8)       # unit-scale 4x8x8 latents
