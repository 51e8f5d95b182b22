"""Sampling loops, written out: `diffusion.sample` (DDPM Algorithm 2 / DDIM) for pixel models."""
from minildm.pipelines.diffusion import SampleOutput, sample, sample_batched

__all__ = ["SampleOutput", "sample", "sample_batched"]
