"""Sampling loops, written out: `diffusion.sample` (DDPM Algorithm 2 / DDIM) for pixel models, and
`guided.guided_sample` (classifier-free guidance) / `guided.brightness_guided_sample` (loss guidance) for
class-conditional models, and `latent.latent_guided_sample` (latent diffusion, decoded by the VAE)."""
from minildm.pipelines.diffusion import SampleOutput, sample, sample_batched
from minildm.pipelines.guided import brightness_guided_sample, guided_sample, mean_brightness
from minildm.pipelines.latent import LatentSampleOutput, encode_latents, latent_guided_sample

__all__ = ["LatentSampleOutput", "SampleOutput", "brightness_guided_sample", "encode_latents", "guided_sample",
           "latent_guided_sample", "mean_brightness", "sample", "sample_batched"]
