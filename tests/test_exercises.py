"""minildm.exercises: every checker accepts the reference solution and rejects the typical mistakes."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from minildm.exercises import (
    ExerciseFailed,
    check_brightness_loss,
    check_cfg,
    check_cross_attention,
    check_ddim_step,
    check_kl,
    check_latent_scale,
    check_posterior_mean,
    check_q_sample,
    check_reparameterise,
    check_text_sample,
)
from minildm.exercises.ddpm import _ab, _ddim
from minildm.models.vae import DiagonalGaussian
from minildm.schedulers import DDIMScheduler


def _bc(c, x):
    return c.reshape(-1, *[1] * (x.ndim - 1)).to(x.dtype)  # (B,) -> (B, 1, ..., 1)


# ---- the solutions a learner should write -------------------------------------------------------------
def q_sample(x0, t, eps, alpha_bar):
    a = _bc(alpha_bar[t], x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def posterior_mean(x0, x_t, t, betas):
    alphas = 1 - betas
    alpha_bar = torch.cumprod(alphas, 0)
    alpha_bar_prev = torch.cat([torch.ones(1, dtype=betas.dtype), alpha_bar[:-1]])
    c1 = alpha_bar_prev[t].sqrt() * betas[t] / (1 - alpha_bar[t])
    c2 = alphas[t].sqrt() * (1 - alpha_bar_prev[t]) / (1 - alpha_bar[t])
    return _bc(c1, x0) * x0 + _bc(c2, x0) * x_t


def ddim_step(eps_pred, t, t_prev, x_t, alpha_bar):
    ab_t = alpha_bar[t]
    ab_prev = alpha_bar[t_prev] if t_prev >= 0 else torch.ones((), dtype=alpha_bar.dtype)
    pred_x0 = (x_t - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt()
    return (ab_prev.sqrt() * pred_x0 + (1 - ab_prev).sqrt() * eps_pred).to(x_t.dtype)


def reparameterise(mu, logvar, eps):
    return mu + torch.exp(0.5 * logvar) * eps


def kl(mu, logvar):
    return -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=tuple(range(1, mu.ndim)))


def cfg(eps_uncond, eps_cond, guidance_scale):
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def cross_attention(q, k, v, mask):
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, h, N, L)
    logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    return logits.softmax(dim=-1) @ v


# ---- accepting ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("check, solution, n", [
    (check_q_sample, q_sample, 6), (check_posterior_mean, posterior_mean, 6), (check_ddim_step, ddim_step, 7),
    (check_reparameterise, reparameterise, 6), (check_kl, kl, 6), (check_cfg, cfg, 6),
    (check_cross_attention, cross_attention, 6)])
def test_checker_accepts_the_solution(check, solution, n, capsys):
    check(solution)
    name = check.__name__.removeprefix("check_")
    assert capsys.readouterr().out.strip() == f"✓ {name}: correct on {n} cases"


def test_checkers_are_deterministic_and_docstrings_name_their_notebook(capsys):
    check_q_sample(q_sample)
    check_q_sample(q_sample)
    assert capsys.readouterr().out.count("✓") == 2
    for check in (check_q_sample, check_posterior_mean, check_ddim_step, check_reparameterise, check_kl,
                  check_cfg, check_cross_attention, check_text_sample):
        assert "notebooks/0" in check.__doc__ and "fn(" in check.__doc__


def test_references_agree_with_the_library():
    torch.manual_seed(0)
    sched = DDIMScheduler(clip_sample=False)
    sched.set_timesteps(10)  # leading: 900, 800, ..., 0
    for t in (500, 0):       # a middle step, and the last one (t_prev = -1, alpha_bar_prev = 1)
        eps, x_t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, dtype=torch.float64)
        t_prev = sched.previous_timestep(t)
        ours = _ddim(eps, x_t, _ab(sched.alpha_bar, t), _ab(sched.alpha_bar, t_prev))  # the checker's reference
        torch.testing.assert_close(ours, sched.step(eps, t, x_t).prev_sample)
    # reparameterise: DiagonalGaussian.sample draws eps from the generator; the same eps gives the same z
    mu, logvar = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    z = DiagonalGaussian(mu, logvar).sample(torch.Generator().manual_seed(1))
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(reparameterise(mu, logvar, eps), z)
    # cross-attention: our solution is what CrossAttention computes with SDPA and a bool mask
    q, k, v = torch.randn(2, 2, 6, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    mask = torch.tensor([[True, True, False, False, False], [True] * 5])
    torch.testing.assert_close(cross_attention(q, k, v, mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :]))


# ---- rejecting typical mistakes, with the case and the specific hint ---------------------------------------
def _q_with(lookup):  # q_sample on a wrong alpha_bar lookup
    def q(x0, t, eps, alpha_bar):
        a = _bc(lookup(alpha_bar, t), x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps
    return q


def posterior_mean_naive_prev(x0, x_t, t, betas):  # alpha_bar_prev = alpha_bar[t - 1]: wraps around at t = 0
    alphas = 1 - betas
    ab = torch.cumprod(alphas, 0)
    c1 = ab[t - 1].sqrt() * betas[t] / (1 - ab[t])
    c2 = alphas[t].sqrt() * (1 - ab[t - 1]) / (1 - ab[t])
    return _bc(c1, x0) * x0 + _bc(c2, x0) * x_t


def posterior_mean_sqrt_alpha_bar(x0, x_t, t, betas):  # sqrt(alpha_bar_t) in the factor of x_t
    ab = torch.cumprod(1 - betas, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=betas.dtype), ab[:-1]])
    c1 = ab_prev[t].sqrt() * betas[t] / (1 - ab[t])
    c2 = ab[t].sqrt() * (1 - ab_prev[t]) / (1 - ab[t])
    return _bc(c1, x0) * x0 + _bc(c2, x0) * x_t


def _ddim_with(prev=lambda ab, t, tp: ab[tp] if tp >= 0 else torch.ones((), dtype=ab.dtype), root=True, sign=1):
    def step(eps_pred, t, t_prev, x_t, alpha_bar):
        r = (lambda v: v.sqrt()) if root else (lambda v: v)
        ab_t, ab_prev = alpha_bar[t], prev(alpha_bar, t, t_prev)
        pred_x0 = (x_t - sign * r(1 - ab_t) * eps_pred) / r(ab_t)
        return r(ab_prev) * pred_x0 + r(1 - ab_prev) * eps_pred
    return step


MISTAKES = [
    # q_sample
    (check_q_sample, lambda x0, t, eps, ab: _bc(ab[t], x0) * x0 + _bc(1 - ab[t], x0) * eps,
     r"case 1 of 6: a random batch with a different t per sample.*square roots are missing"),
    (check_q_sample, lambda x0, t, eps, ab: _bc(ab[t].sqrt(), x0) * x0 - _bc((1 - ab[t]).sqrt(), x0) * eps,
     r"wrong sign"),
    (check_q_sample, _q_with(lambda ab, t: ab[t + 1]), r"case 1 of 6.*alpha_bar\[t \+ 1\]: an off-by-one in t\?"),
    (check_q_sample, _q_with(lambda ab, t: ab[t - 1]), r"case 1 of 6.*alpha_bar\[t - 1\]: an off-by-one in t\?"),
    (check_q_sample, _q_with(lambda ab, t: ab[t[0]].expand(len(t))), r"alpha_bar\[t\[0\]\] is used for every sample"),
    (check_q_sample, _q_with(lambda ab, t: torch.cat([ab[:1], ab[1:] / ab[:-1]])[t]), r"alphas\[t\] \(one step\)"),
    (check_q_sample, lambda x0, t, eps, ab: q_sample(x0, t, eps, ab) + 0 * _bc(ab[t + 1], x0),  # fails at T-1 only
     r"case 4 of 6: t = T-1 \(the last step\).*raised IndexError.*alpha_bar\[t \+ 1\] does not exist"),
    (check_q_sample, lambda x0, t, eps, ab: q_sample(x0, t, eps, ab).float(),
     r"case 5 of 6: float64 inputs.*float32 precision only, but the inputs were float64"),
    # posterior_mean
    (check_posterior_mean, lambda x0, x_t, t, betas: posterior_mean(x0, x_t, t, betas).flip(0),
     r"case 1 of 6: a random batch with a different t per sample.*max abs difference"),
    (check_posterior_mean, lambda x0, x_t, t, betas: posterior_mean(x_t, x0, t, betas), r"coefficients are swapped"),
    (check_posterior_mean, posterior_mean_naive_prev,
     r"case 2 of 6: t = 0 \(the first step\).*alpha_bar_prev at t = 0 must be 1.*wraps around"),
    (check_posterior_mean, lambda x0, x_t, t, betas: posterior_mean(x0, x_t, (t + 1).clamp(max=999), betas),
     r"case 1 of 6.*off-by-one in t"),
    (check_posterior_mean, posterior_mean_sqrt_alpha_bar, r"sqrt\(alpha_bar_t\); it is sqrt\(alpha_t\)"),
    (check_posterior_mean, lambda x0, x_t, t, betas: posterior_mean(x0, x_t, t, betas.to(x0.dtype)),
     r"case 2 of 6: t = 0.*a rounding problem\?.*keep the schedule in float64"),
    # ddim_step
    (check_ddim_step, _ddim_with(prev=lambda ab, t, tp: ab[tp]),
     r"case 3 of 7: the last step: t = 0 -> t_prev = -1.*wraps around to alpha_bar\[T-1\]"),
    (check_ddim_step, _ddim_with(prev=lambda ab, t, tp: ab[t - 1]), r"case 1 of 7.*alpha_bar\[t - 1\] is used"),
    (check_ddim_step, _ddim_with(sign=-1), r"case 1 of 7.*wrong sign in pred_x0"),
    (check_ddim_step, _ddim_with(root=False), r"square roots are missing, in pred_x0 and in x_prev"),
    (check_ddim_step, lambda e, t, tp, x, ab: (x - (1 - ab[t]).sqrt() * e) / ab[t].sqrt(), r"you returned pred_x0"),
    (check_ddim_step, lambda e, t, tp, x, ab: ddim_step(e, t, tp, x, ab.float()).to(x.dtype),
     r"case 6 of 7: float64 inputs.*float32 precision only"),
    # reparameterise
    (check_reparameterise, lambda mu, logvar, eps: mu + logvar * eps,
     r"case 1 of 6: a random batch of latents.*logvar is used as the standard deviation"),
    (check_reparameterise, lambda mu, logvar, eps: mu + logvar.exp() * eps, r"exp\(logvar\) is the variance"),
    (check_reparameterise, lambda mu, logvar, eps: mu.clone(), r"noise term is missing"),
    # kl
    (check_kl, lambda mu, logvar: -kl(mu, logvar), r"case 1 of 6: a random batch.*sign is flipped"),
    (check_kl, lambda mu, logvar: 2 * kl(mu, logvar), r"factor 0.5 is missing"),
    (check_kl, lambda mu, logvar: -0.5 * torch.mean(1 + logvar - mu**2 - logvar.exp(), dim=tuple(range(1, mu.ndim))),
     r"averaged over the latent dims"),
    (check_kl, lambda mu, logvar: kl(mu, logvar).sum(), r"expected shape \(4,\), got \(\).*one value per sample"),
    # cfg
    (check_cfg, lambda u, c, s: c + s * (u - c), r"case 1 of 6: s = 3.*swapped"),
    (check_cfg, lambda u, c, s: c + s * (c - u), r"w convention of Ho & Salimans"),
    (check_cfg, lambda u, c, s: u + s * c, r"not subtracted"),
    # cross-attention
    (check_cross_attention, lambda q, k, v, m: cross_attention(q * math.sqrt(q.shape[-1]), k, v, m),
     r"case 1 of 6: no padding.*not scaled: divide q @ k\^T by sqrt\(d\)"),
    (check_cross_attention, lambda q, k, v, m: cross_attention(q, k, v, m | True),
     r"case 2 of 6: padding: sample 0 has 3 real tokens.*mask is ignored"),
    (check_cross_attention, lambda q, k, v, m: (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-2) @ v,
     r"case 1 of 6.*wrong axis"),
    (check_cross_attention, lambda q, k, v, m: cross_attention(q, k, v, ~m), r"case 1 of 6.*NaN.*mask inverted"),
]


@pytest.mark.parametrize("check, wrong, match", MISTAKES)
def test_checker_rejects_a_typical_mistake(check, wrong, match):
    with pytest.raises(ExerciseFailed, match=f"(?s){match}"):
        check(wrong)


# ---- broken functions -----------------------------------------------------------------------------------
def _boom(*args):
    raise ValueError("not implemented yet")


@pytest.mark.parametrize("check", [check_q_sample, check_posterior_mean, check_ddim_step, check_reparameterise,
                                   check_kl, check_cfg, check_cross_attention])
def test_broken_functions_are_reported_with_the_case(check):
    with pytest.raises(ExerciseFailed, match=r"(?s)case 1 of \d.*raised ValueError: not implemented yet"):
        check(_boom)
    with pytest.raises(ExerciseFailed, match=r"(?s)case 1 of.*got a NoneType.*forget `return`"):
        check(lambda *args: None)
    with pytest.raises(ExerciseFailed, match=r"(?s)case 1 of.*expected shape \(.*\), got \(1,\)"):
        check(lambda *args: torch.zeros(1))
    with pytest.raises(ExerciseFailed, match=r"(?s)case 1 of.*NaN/inf entries"):
        check(lambda *args: torch.full_like(args[0], float("nan")) if check is not check_kl
              else torch.full(args[0].shape[:1], float("nan")))
    with pytest.raises(TypeError, match="takes your function itself"):
        check(42)


def test_messages_show_expected_vs_got_and_the_difference():
    with pytest.raises(ExerciseFailed) as info:
        check_cfg(lambda u, c, s: u + s * (c - u) + 0.5)
    msg = str(info.value)
    assert msg.startswith("✗ cfg: wrong on case 1 of 6: s = 3 on a random batch")
    assert "inputs: eps_uncond (4, 1, 32, 32) float32, eps_cond (4, 1, 32, 32) float32, guidance_scale = 3.0" in msg
    assert "expected vs got at index" in msg and "max abs difference: 0.5" in msg
    assert "hint: eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)." in msg
    assert isinstance(info.value, AssertionError)


def test_shape_bug_inside_the_function_gets_a_broadcasting_hint():
    with pytest.raises(ExerciseFailed, match=r"(?s)case 1 of 6.*RuntimeError.*reshaping to \(B, 1, 1, 1\)"):
        check_q_sample(lambda x0, t, eps, ab: ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * eps)


# ---- 02: the brightness loss; 03: the latent scale ------------------------------------------------------
def brightness_loss(pred_x0, target):
    return (((pred_x0 + 1) / 2).flatten(1).mean(1) - target).pow(2).sum()


def test_brightness_loss_checker_accepts_the_reference_and_the_pipeline_agrees(capsys):
    from minildm.pipelines.guided import mean_brightness
    check_brightness_loss(brightness_loss)
    check_brightness_loss(lambda x, target: ((mean_brightness(x) - target) ** 2).sum())  # the pipeline's formula
    assert "✓ brightness_loss: correct on 4 cases" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, b: (x.flatten(1).mean(1) - b).pow(2).sum(), "[0, 1] scale"),
    (lambda x, b: (((x + 1) / 2).flatten(1).mean(1) - b).pow(2).mean(), "sum over images"),
    (lambda x, b: (((x + 1) / 2).flatten(1).mean(1) - b).sum(), "square the difference"),
])
def test_brightness_loss_checker_names_the_mistake(wrong, hint):
    with pytest.raises(ExerciseFailed, match=re.escape(hint)):
        check_brightness_loss(wrong)


def test_latent_scale_checker_accepts_the_reference_and_minildm_agrees(capsys):
    from minildm.models.vae import latent_scale

    class Identity(torch.nn.Module):  # "encodes" latents to themselves, so latent_scale sees z directly
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def encode(self, z):
            return DiagonalGaussian(z, torch.full_like(z, -60.0))   # logvar clamped to -30: std ~3e-7

    check_latent_scale(lambda z: 1 / z.std())
    check_latent_scale(lambda z: torch.tensor(latent_scale(Identity(), z.float(), sample=False), dtype=z.dtype))
    assert "✓ latent_scale: correct on 3 cases" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda z: z.std(), "its inverse"), (lambda z: 1 / z.var(), "square root is missing"),
    (lambda z: (1 / z.std(dim=(0, 2, 3))).mean(), "one number, over all elements"),
])
def test_latent_scale_checker_names_the_mistake(wrong, hint):
    with pytest.raises(ExerciseFailed, match=re.escape(hint)):
        check_latent_scale(wrong)


def test_drop_condition_checker_accepts_minildm_and_names_mistakes(capsys):
    from minildm.exercises import check_drop_condition

    def reference(cond, drop, null):  # drop_condition with p = 1 on the dropped rows only
        return torch.where(drop.view(-1, *[1] * (cond.dim() - 1)), torch.as_tensor(null, dtype=cond.dtype), cond)

    check_drop_condition(reference)
    assert "✓ drop_condition: correct on 3 cases" in capsys.readouterr().out
    inverted = lambda c, d, n: reference(c, ~d, n)  # noqa: E731
    with pytest.raises(ExerciseFailed, match="the mask is inverted"):
        check_drop_condition(inverted)
    no_broadcast = lambda c, d, n: torch.where(d, torch.as_tensor(n, dtype=c.dtype), c)  # noqa: E731
    with pytest.raises(ExerciseFailed, match="text states"):
        check_drop_condition(no_broadcast)


def test_an_untouched_stub_is_reported_as_not_attempted_not_as_an_error(capsys):
    def cfg(eps_uncond, eps_cond, guidance_scale):
        raise NotImplementedError("your turn")

    check_cfg(cfg)                                   # no exception: "Run all" goes on past the exercise
    assert "· cfg: not attempted yet" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed):              # a function that raises anything else still fails
        check_cfg(lambda u, c, s: 1 / 0)


# ---- chapter 04: the latent sampling loop ------------------------------------------------------------------
def latent_sample(z_T, labels, unet, vae, scheduler, guidance_scale, latent_scale, num_inference_steps):
    scheduler.set_timesteps(num_inference_steps)
    z_t = z_T
    null = torch.full_like(labels, unet.config.num_classes)
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps_uncond, eps_cond = unet(torch.cat([z_t, z_t]), t, torch.cat([null, labels])).chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            z_t = scheduler.step(eps, t, z_t).prev_sample
        return vae.decode(z_t / latent_scale).clamp(-1, 1)


def test_latent_sample_checker_accepts_the_solution_and_minildm_agrees(capsys):
    from minildm.exercises import check_latent_sample
    from minildm.exercises.latent import _tiny_pair
    from minildm.pipelines.latent import latent_guided_sample
    check_latent_sample(latent_sample)
    assert "✓ latent_sample: correct on 5 cases" in capsys.readouterr().out
    unet, vae = (m.float() for m in _tiny_pair(0))  # minildm's pipeline is the same loop: same noise -> same images
    sched = DDIMScheduler(100, beta_schedule="cosine", clip_sample=False)
    labels = torch.tensor([1, 7])
    g = torch.Generator().manual_seed(3)
    out = latent_guided_sample(unet, vae, sched, labels, 3.0, g, 5, latent_scale=0.4, progress=False)
    z_T = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out.images, latent_sample(z_T, labels, unet, vae, sched, 3.0, 0.4, 5))


def _latent_wrong(kind):
    def fn(z_T, labels, unet, vae, scheduler, guidance_scale, latent_scale, num_inference_steps):
        scheduler.set_timesteps(num_inference_steps)
        z_t, null = z_T, torch.full_like(labels, unet.config.num_classes)
        with torch.no_grad():
            for t in scheduler.timesteps:
                a, b = unet(torch.cat([z_t, z_t]), t, torch.cat([null, labels])).chunk(2)
                eps = b + guidance_scale * (a - b) if kind == "swap" else a + guidance_scale * (b - a)
                z_t = scheduler.step(eps, t, z_t).prev_sample
            z = z_t * latent_scale if kind == "multiply" else z_t if kind == "none" else z_t / latent_scale
            return vae.decode(z) if kind == "noclamp" else vae.decode(z).clamp(-1, 1)
    return fn


@pytest.mark.parametrize("kind, hint", [("none", "decoded z_0 itself"), ("multiply", "divide by the scale"),
                                        ("swap", "swapped"), ("noclamp", "not clamped")])
def test_latent_sample_checker_names_the_mistake(kind, hint):
    from minildm.exercises import check_latent_sample
    with pytest.raises(ExerciseFailed, match=hint):
        check_latent_sample(_latent_wrong(kind))


def ldm_loss(z0, eps, t, alpha_bar, eps_model):
    a = alpha_bar[t].reshape(-1, 1, 1, 1)
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
    return F.mse_loss(eps_model(z_t, t), eps)


def test_ldm_loss_checker_accepts_the_solution_and_the_training_loss_agrees(capsys):
    from minildm.exercises import check_ldm_loss
    from minildm.schedulers import DDPMScheduler
    from minildm.training import diffusion_loss
    check_ldm_loss(ldm_loss)
    assert "✓ ldm_loss: correct on 4 cases" in capsys.readouterr().out
    sched = DDPMScheduler(1000, beta_schedule="cosine")  # the loss minildm trains with, on the same inputs
    g = torch.Generator().manual_seed(0)
    z0, eps, t = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g), torch.tensor([0, 500, 999])
    model = lambda z, t: z.tanh()  # noqa: E731
    ours = diffusion_loss(model(sched.add_noise(z0, eps, t), t), sched.training_target(z0, eps, t))
    torch.testing.assert_close(ours, ldm_loss(z0, eps, t, sched.alpha_bar.float(), model))


@pytest.mark.parametrize("wrong, hint", [
    (lambda z0, eps, t, ab, m: F.mse_loss(m(ab[t].reshape(-1, 1, 1, 1) * z0 + (1 - ab[t].reshape(-1, 1, 1, 1)) * eps, t), eps),
     "without square roots"),
    (lambda z0, eps, t, ab, m: F.mse_loss(m(ab[t].reshape(-1, 1, 1, 1).sqrt() * z0 + (1 - ab[t].reshape(-1, 1, 1, 1)).sqrt()
                                            * eps, t), z0), "not the clean latent"),
    (lambda z0, eps, t, ab, m: F.mse_loss(m(ab[t].reshape(-1, 1, 1, 1).sqrt() * z0 + (1 - ab[t].reshape(-1, 1, 1, 1)).sqrt()
                                            * eps, t), eps, reduction="sum"), "summed over the elements"),
])
def test_ldm_loss_checker_names_the_mistake(wrong, hint):
    from minildm.exercises import check_ldm_loss
    with pytest.raises(ExerciseFailed, match=hint):
        check_ldm_loss(wrong)


def test_encode_latents_checker_accepts_minildm_and_names_mistakes(capsys):
    from minildm.exercises import check_encode_latents
    from minildm.pipelines.latent import encode_latents
    check_encode_latents(lambda x, vae, s: encode_latents(vae, x, s, progress=False).to(x.dtype))
    assert "✓ encode_latents: correct on 3 cases" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="not scaled"):
        check_encode_latents(lambda x, vae, s: vae.encode(x).mode())
    with pytest.raises(ExerciseFailed, match="multiply when encoding"):
        check_encode_latents(lambda x, vae, s: vae.encode(x).mode() / s)
    with pytest.raises(ExerciseFailed, match="posterior mean"):
        check_encode_latents(lambda x, vae, s: vae.encode(x).sample() * s)


# ---- chapter 00: preprocessing, its inverse, class means ---------------------------------------------------
def test_data_checkers_accept_minildm(capsys):
    from minildm.data import preprocess, to_uint8
    from minildm.exercises import check_class_means, check_preprocess, check_to_uint8
    check_preprocess(preprocess)
    check_to_uint8(lambda x: to_uint8(x, unpad=True)[:, 0])
    check_class_means(lambda x, labels: torch.stack([x[labels == c, 0].mean(0) for c in range(10)]))
    out = capsys.readouterr().out
    assert "✓ preprocess: correct on 4 cases" in out and "✓ to_uint8" in out and "✓ class_means" in out


@pytest.mark.parametrize("wrong, hint", [
    (lambda im: F.pad(im.float()[:, None] / 127.5 - 1, (2, 2, 2, 2), value=0.0), "padded with 0"),
    (lambda im: F.pad(im.float()[:, None] / 255, (2, 2, 2, 2), value=-1.0), r"in \[0, 1\]"),
    (lambda im: F.pad(im.float()[:, None] / 128 - 1, (2, 2, 2, 2), value=-1.0), "divided by 128"),
    (lambda im: im.float()[:, None] / 127.5 - 1, "expected shape"),
])
def test_preprocess_checker_names_the_mistake(wrong, hint):
    from minildm.exercises import check_preprocess
    with pytest.raises(ExerciseFailed, match=hint):
        check_preprocess(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x: ((x + 1) * 127.5).round().to(torch.uint8)[:, 0, 2:-2, 2:-2], "not clamped"),
    (lambda x: ((x.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)[:, 0, 2:-2, 2:-2], "truncated"),
])
def test_to_uint8_checker_names_the_mistake(wrong, hint):
    from minildm.exercises import check_to_uint8
    with pytest.raises(ExerciseFailed, match=hint):
        check_to_uint8(wrong)


def test_class_means_checker_names_the_mistake():
    from minildm.exercises import check_class_means
    with pytest.raises(ExerciseFailed, match="divided by the total number"):
        check_class_means(lambda x, labels: torch.stack([x[labels == c, 0].sum(0) for c in range(10)]) / len(labels))


# ---- chapter 05: mean pooling, garment brightness ------------------------------------------------------------
def test_masked_mean_checker(capsys):
    from minildm.exercises import check_masked_mean
    check_masked_mean(lambda s, m: (s * m[..., None]).sum(1) / m.sum(1, keepdim=True))
    assert "✓ masked_mean: correct on 4 cases" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="padding tokens were averaged in"):
        check_masked_mean(lambda s, m: s.mean(1))
    with pytest.raises(ExerciseFailed, match="divided by the full length"):
        check_masked_mean(lambda s, m: (s * m[..., None]).sum(1) / s.shape[1])


def test_garment_brightness_checker_accepts_the_caption_measure(capsys):
    from minildm.captions import measure
    from minildm.exercises import check_garment_brightness
    check_garment_brightness(lambda x: measure(x)["brightness"].to(x.dtype))
    assert "✓ garment_brightness: correct on 4 cases" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="background was averaged in"):
        check_garment_brightness(lambda x: ((x + 1) / 2).flatten(1).mean(1))
    with pytest.raises(ExerciseFailed, match=r"map them to \[0, 1\]"):
        check_garment_brightness(lambda x: (x * (x > -0.8)).flatten(1).sum(1) / (x > -0.8).flatten(1).sum(1).clamp(min=1))


def text_sample(z_T, prompts, negative_prompts, unet, vae, text_encoder, scheduler, guidance_scale, latent_scale,
                num_inference_steps, kind=None):
    negative = negative_prompts if negative_prompts is not None and kind != "ignore" else [""] * len(prompts)
    text, neg = text_encoder(prompts), text_encoder(negative)
    states, mask = torch.cat([neg.states, text.states]), torch.cat([neg.mask, text.mask])
    scheduler.set_timesteps(num_inference_steps)
    z_t = z_T
    with torch.no_grad():
        for t in scheduler.timesteps:
            a, b = unet(torch.cat([z_t, z_t]), t, states, mask).chunk(2)
            eps = b + guidance_scale * (a - b) if kind == "swap" else a + guidance_scale * (b - a)
            z_t = scheduler.step(eps, t, z_t).prev_sample
        images = vae.decode(z_t if kind == "none" else z_t / latent_scale)
        return images if kind == "noclamp" else images.clamp(-1, 1)


def test_text_sample_checker_accepts_the_solution_and_minildm_agrees(capsys):
    from minildm.exercises import check_text_sample
    from minildm.exercises.text import _tiny_text_parts
    from minildm.pipelines.text import text_to_image
    check_text_sample(text_sample)
    assert "✓ text_sample: correct on 5 cases" in capsys.readouterr().out
    enc, unet, vae = (m.float() for m in _tiny_text_parts(0))   # the pipeline is the same loop: same noise, same images
    sched = DDIMScheduler(100, beta_schedule="cosine", clip_sample=False)
    out = text_to_image(unet, vae, enc, sched, ["a shoe", "a bag"], ["sandal", "a boot"], 4.0,
                        torch.Generator().manual_seed(3), 5, latent_scale=0.5, progress=False)
    z_T = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out.images, text_sample(z_T, ["a shoe", "a bag"], ["sandal", "a boot"], unet, vae, enc,
                                                       sched, 4.0, 0.5, 5))


@pytest.mark.parametrize("kind, hint", [("ignore", "negative prompt was ignored"), ("swap", "swapped"),
                                        ("none", "decoded z_0 itself"), ("noclamp", "not clamped")])
def test_text_sample_checker_names_the_mistake(kind, hint):
    from minildm.exercises import check_text_sample
    with pytest.raises(ExerciseFailed, match=hint):
        check_text_sample(lambda *args: text_sample(*args, kind=kind))
