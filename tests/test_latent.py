"""minildm.pipelines.latent and the latent recipe: shapes, the decode scale, scheduler interop with diffusers, bad input."""
import pytest
import torch
from diffusers import DDIMScheduler as PeerDDIM
from diffusers import DPMSolverMultistepScheduler

from minildm.models.unet import UNet, UNetConfig
from minildm.models.vae import VAE, VAEConfig
from minildm.pipelines.latent import encode_latents, latent_guided_sample
from minildm.schedulers import DDIMScheduler


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(base_channels=8)).eval()
    vae.meta = {"latent_scale": 0.7}
    unet = UNet(UNetConfig(in_channels=4, out_channels=4, image_size=8, base_channels=8, channel_mults=(1, 2),
                           attention=("none", "full"), cross_attention=(False, False), heads=1, head_dim=8, groups=4,
                           time_dim=16, num_classes=10)).eval()
    return unet, vae


def test_shapes_and_the_decode_scale(pair):
    unet, vae = pair
    out = latent_guided_sample(unet, vae, DDIMScheduler(100, beta_schedule="cosine", clip_sample=False),
                               torch.tensor([0, 7, 9]), 3.0, torch.Generator().manual_seed(0), 5, progress=False)
    assert out.images.shape == (3, 1, 32, 32) and out.latents.shape == (3, 4, 8, 8)
    assert out.images.min() >= -1 and out.images.max() <= 1
    with torch.no_grad():
        assert torch.allclose(out.images, vae.decode(out.latents / 0.7).clamp(-1, 1))   # decoded with 1 / scale


def test_encode_latents_are_scaled_posterior_modes(pair):
    _, vae = pair
    x = torch.rand(6, 1, 32, 32) * 2 - 1
    z = encode_latents(vae, x, 0.7, batch_size=4, progress=False)
    with torch.no_grad():
        assert torch.allclose(z, vae.encode(x).mode() * 0.7)
    with pytest.raises(ValueError, match="latent_scale must be a positive number"):
        encode_latents(vae, x, 0.0, progress=False)


def test_a_diffusers_ddim_scheduler_drives_a_minildm_model_like_ours(pair):
    unet, vae = pair
    labels, seed = torch.tensor([1, 2]), 3
    ours = DDIMScheduler(1000, beta_schedule="cosine", clip_sample=False)
    peer = PeerDDIM(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    a = latent_guided_sample(unet, vae, ours, labels, 2.0, torch.Generator().manual_seed(seed), 10, progress=False)
    b = latent_guided_sample(unet, vae, peer, labels, 2.0, torch.Generator().manual_seed(seed), 10, progress=False)
    assert torch.equal(ours.timesteps, peer.timesteps)
    torch.testing.assert_close(a.latents, b.latents, rtol=1e-4, atol=1e-4)


def test_dpm_solver_samples_in_20_steps(pair):
    unet, vae = pair
    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    out = latent_guided_sample(unet, vae, sched, torch.tensor([5, 6]), 3.0, torch.Generator().manual_seed(0), 20,
                               progress=False)
    assert len(sched.timesteps) == 20 and torch.isfinite(out.latents).all()


def test_bad_input_is_explained(pair):
    unet, vae = pair
    clipping = DDIMScheduler(100, beta_schedule="cosine")                     # clip_sample=True: wrong for latents
    with pytest.raises(ValueError, match="clip_sample=False"):
        latent_guided_sample(unet, vae, clipping, torch.tensor([0]), 1.0, None, 2, progress=False)
    ddim = DDIMScheduler(100, beta_schedule="cosine", clip_sample=False)
    with pytest.raises(ValueError, match="labels must be in"):
        latent_guided_sample(unet, vae, ddim, torch.tensor([11]), 1.0, None, 2, progress=False)
    wide = VAE(VAEConfig(base_channels=8, latent_channels=8))
    with pytest.raises(ValueError, match="the UNet takes 4 channels but the VAE's latents have 8"):
        latent_guided_sample(unet, wide, ddim, torch.tensor([0]), 1.0, None, 2, progress=False)
    with pytest.raises(ValueError, match="no meta\\['latent_scale'\\]"):
        latent_guided_sample(unet, VAE(VAEConfig(base_channels=8)), ddim, torch.tensor([0]), 1.0, None, 2,
                             progress=False)


def test_latent_recipe_uses_unclipped_ddpm_on_the_vae_latents():
    from minildm.recipes import DIFFUSION_RECIPES
    recipe = DIFFUSION_RECIPES["ldm_cond"]
    assert recipe.latent_vae == "vae" and recipe.model.in_channels == 4 and recipe.model.image_size == 8
    assert recipe.scheduler().clip_sample is False and DIFFUSION_RECIPES["ddpm"].scheduler().clip_sample is True
