"""Sampling loops, written out: `diffusion.sample` (DDPM Algorithm 2 / DDIM) for pixel models, and
`guided.guided_sample` (classifier-free guidance) / `guided.brightness_guided_sample` (loss guidance) for
class-conditional models."""
from minildm.pipelines.diffusion import SampleOutput, sample, sample_batched
from minildm.pipelines.guided import brightness_guided_sample, guided_sample, mean_brightness

__all__ = ["SampleOutput", "brightness_guided_sample", "guided_sample", "mean_brightness", "sample",
           "sample_batched"]
