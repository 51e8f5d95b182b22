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


class GaussianEps(torch.nn.Module):
    """The exact eps-prediction for data z0 ~ N(0, sd^2 I): eps = sqrt(1 - a) z_t / (a sd^2 + 1 - a), a = alpha_bar_t.

    Sampling its probability-flow ODE from N(0, I) noise must end with latents of standard deviation sd."""

    def __init__(self, sd: float, error: float = 0.0):
        super().__init__()
        self.sd, self.error, self.dummy = sd, error, torch.nn.Parameter(torch.zeros(()))
        self.config = UNetConfig(in_channels=4, out_channels=4, image_size=8, base_channels=8, channel_mults=(1, 2),
                                 attention=("none", "none"), cross_attention=(False, False), groups=4, num_classes=10)
        self.alpha_bar = DDIMScheduler(1000, beta_schedule="cosine").alpha_bar

    def forward(self, z_t, t, cond=None):
        a = self.alpha_bar[torch.as_tensor(t).long()].to(z_t.dtype).reshape(-1, 1, 1, 1)
        return (1 + self.error) * (1 - a).sqrt() * z_t / (a * self.sd ** 2 + 1 - a)   # error: a 1% bias, say


def test_dpm_solver_solves_the_same_ode_as_ddim_in_20_steps(pair):
    _, vae = pair
    model, labels = GaussianEps(0.5), torch.arange(10).repeat(20)     # 200 samples
    dpm = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                      timestep_spacing="leading")      # "linspace" starts at t = 999: see notebook 04
    out = latent_guided_sample(model, vae, dpm, labels, 2.0, torch.Generator().manual_seed(0), 20, progress=False)
    fine = latent_guided_sample(model, vae, DDIMScheduler(1000, beta_schedule="cosine", clip_sample=False), labels,
                                2.0, torch.Generator().manual_seed(0), 200, progress=False)
    assert len(dpm.timesteps) == 20
    assert abs(out.latents.std().item() - 0.5) < 0.03 and abs(fine.latents.std().item() - 0.5) < 0.03
    assert (out.latents - fine.latents).abs().mean() < 0.05 * fine.latents.abs().mean()
    # the pitfall notebook 04 explains: "linspace" starts at t = 999, where alpha_bar ~ 1e-9; DPM-Solver++ works with
    # x0_hat = (z_t - sqrt(1 - alpha_bar) eps_hat) / sqrt(alpha_bar), which divides a 1% error in eps_hat by ~3e-5
    imperfect = GaussianEps(0.5, error=0.01)
    for spacing, ok in (("leading", True), ("linspace", False)):
        sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                            timestep_spacing=spacing)
        z = latent_guided_sample(imperfect, vae, sched, labels, 2.0, torch.Generator().manual_seed(0), 20,
                                 progress=False).latents
        assert (abs(z.std().item() - 0.5) < 0.1) == ok, (spacing, z.std())


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


def test_guidance_interval_guides_only_inside_it(pair):
    unet, vae = pair
    ddim = DDIMScheduler(100, beta_schedule="cosine", clip_sample=False)     # 5 steps: t = 80, 60, 40, 20, 0
    labels = torch.tensor([0, 7, 9])

    def run(s, interval=None):
        return latent_guided_sample(unet, vae, ddim, labels, s, torch.Generator().manual_seed(0), 5, progress=False,
                                    guidance_interval=interval).latents
    guided, conditional = run(3.0), run(1.0)
    assert not torch.allclose(guided, conditional)                            # guidance changes this model's samples
    assert torch.equal(run(3.0, (-1, 99)), guided)                            # every step inside: plain CFG
    assert torch.equal(run(3.0, (85, 99)), conditional)                       # no step inside: s = 1 throughout
    partial = run(3.0, (50, 99))                                              # guided at t = 80 and 60 only
    assert not torch.allclose(partial, guided) and not torch.allclose(partial, conditional)


@pytest.mark.parametrize("interval", [(5, 5), (9, 2), (3,), "ab", (1.5, 9), (-3, 2), 0])
def test_a_bad_guidance_interval_is_explained(pair, interval):
    unet, vae = pair
    ddim = DDIMScheduler(100, beta_schedule="cosine", clip_sample=False)
    with pytest.raises(ValueError, match=r"guidance_interval must be two integer timesteps \(lo, hi\)"):
        latent_guided_sample(unet, vae, ddim, torch.tensor([0]), 2.0, None, 2, progress=False,
                             guidance_interval=interval)
