"""Exercises with automatic checks: write a function in a notebook, then call `check_<name>(your_fn)`.

    check_q_sample(q_sample)     # prints "✓ q_sample: correct on 6 cases", or raises ExerciseFailed

Each checker calls your function on fixed, seeded inputs (a random batch and edge cases: the first and last
timestep, float64, latent shapes, padding...) and compares with minildm's reference. On a mismatch it raises
`ExerciseFailed` (an AssertionError) naming the case, with expected vs got, the max abs difference and a hint;
when your output equals a known mistake (a missing square root, an off-by-one in t, swapped CFG terms...),
the hint names it. A function that raises or returns no tensor, the wrong shape or NaN is reported alike.

One module per chapter: `data` (00), `ddpm` (01), `guidance` (02), `vae` (03), `latent` (04),
`text` (05); the shared runner is `_runner`.
Solutions: notebooks/solutions/.

References:
    Ho, Jain, Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
    Song, Meng, Ermon (2021), "Denoising Diffusion Implicit Models", arXiv:2010.02502.
    Kingma, Welling (2014), "Auto-Encoding Variational Bayes", arXiv:1312.6114.
    Ho, Salimans (2022), "Classifier-Free Diffusion Guidance", arXiv:2207.12598.
    Vaswani et al. (2017), "Attention Is All You Need", arXiv:1706.03762.
"""
from minildm.exercises._runner import ExerciseFailed
from minildm.exercises.data import check_class_means, check_preprocess, check_to_uint8
from minildm.exercises.ddpm import check_ddim_step, check_posterior_mean, check_q_sample
from minildm.exercises.guidance import check_brightness_loss, check_cfg, check_drop_condition
from minildm.exercises.latent import check_encode_latents, check_latent_sample, check_ldm_loss
from minildm.exercises.text import check_cross_attention, check_garment_brightness, check_masked_mean, check_text_sample
from minildm.exercises.vae import check_kl, check_latent_scale, check_reparameterise

__all__ = ["ExerciseFailed", "check_preprocess", "check_to_uint8", "check_class_means", "check_q_sample", "check_posterior_mean", "check_ddim_step", "check_cfg",
           "check_brightness_loss", "check_drop_condition", "check_reparameterise", "check_kl", "check_latent_scale",
           "check_ldm_loss", "check_encode_latents", "check_latent_sample", "check_cross_attention",
           "check_masked_mean", "check_garment_brightness", "check_text_sample"]
