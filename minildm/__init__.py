"""minildm: the reference implementations of a notebook-first diffusion course on Fashion-MNIST.

Modules: `data` (verified Fashion-MNIST, preprocessing), `viz` (grids, GIFs), `runtime` (quick mode, device),
`schedulers/` (DDPM, DDIM), `models/` (UNet, classifier), `pipelines/` (sampling loops), `training`,
`metrics` (feature-FID, class accuracy), `checkpoints`, `bench`, `cli`. Names: see STYLE.md.
"""
__version__ = "0.1.0"
