"""minildm.models: every layer's shapes, the UNet for each kind of conditioning, and its input checks.

Small configs keep the file fast (a few seconds on 2 CPU cores).
"""
import dataclasses

import pytest
import torch

from minildm.models import (Attention, ConvNextBlock, CrossAttention, Downsample, LinearAttention, PreNorm,
                            Residual, ResnetBlock, SinusoidalTimeEmbedding, UNet, UNetConfig, Upsample)

SMALL = dict(base_channels=8, channel_mults=(1, 2, 4), attention=("none", "linear", "full"),
             cross_attention=(False, True, True), heads=2, head_dim=8, groups=4, time_dim=32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from 2 threads, and on a busy 2-core machine OpenMP waits make them 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(**overrides) -> UNetConfig:
    return UNetConfig(**{**SMALL, **overrides})


# ---------------------------------------------------------------------------------------------- layers

@pytest.mark.parametrize("t", [torch.tensor([0, 5, 999]), torch.tensor([0.0, 0.5, 999.0])])
def test_sinusoidal_embedding_shape_and_halves(t):
    emb = SinusoidalTimeEmbedding(16)(t)
    assert emb.shape == (3, 16)
    assert torch.allclose(emb[0, :8], torch.zeros(8)) and torch.allclose(emb[0, 8:], torch.ones(8))  # sin | cos
    assert torch.allclose(emb.pow(2)[:, :8] + emb.pow(2)[:, 8:], torch.ones(3, 8), atol=1e-5)


def test_sinusoidal_embedding_rejects_bad_input():
    with pytest.raises(ValueError, match="even dim"):
        SinusoidalTimeEmbedding(7)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        SinusoidalTimeEmbedding(8)(torch.zeros(2, 1))


@pytest.mark.parametrize("cls", [ResnetBlock, ConvNextBlock])
@pytest.mark.parametrize("in_ch,out_ch", [(8, 8), (8, 16)])
def test_res_blocks_shapes(cls, in_ch, out_ch):
    x, temb = torch.randn(2, in_ch, 8, 8), torch.randn(2, 32)
    assert cls(in_ch, out_ch, time_dim=32)(x, temb).shape == (2, out_ch, 8, 8)
    assert cls(in_ch, out_ch)(x).shape == (2, out_ch, 8, 8)  # no time embedding at all
    with pytest.raises(ValueError, match="needs temb"):
        cls(in_ch, out_ch, time_dim=32)(x)


def test_resnet_block_time_embedding_is_used_and_groups_checked():
    block, x = ResnetBlock(8, 8, time_dim=16, groups=4), torch.randn(2, 8, 4, 4)
    assert not torch.allclose(block(x, torch.zeros(2, 16)), block(x, torch.ones(2, 16)))
    with pytest.raises(ValueError, match="divisible by groups"):
        ResnetBlock(12, 12, groups=8)


@pytest.mark.parametrize("cls", [Attention, LinearAttention])
def test_self_attention_shapes(cls):
    layer = cls(16, heads=2, head_dim=8)
    assert layer(torch.randn(3, 16, 4, 6)).shape == (3, 16, 4, 6)
    with pytest.raises(ValueError, match=r"expects a feature map \(B, 16, H, W\)"):
        layer(torch.randn(3, 8, 4, 4))


def test_cross_attention_shapes_mask_and_weights():
    layer = CrossAttention(16, cond_dim=12, heads=2, head_dim=8)
    x, cond = torch.randn(2, 16, 4, 4), torch.randn(2, 5, 12)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert layer(x, cond).shape == (2, 16, 4, 4)
    out, weights = layer(x, cond, mask, return_weights=True)
    assert out.shape == (2, 16, 4, 4) and weights.shape == (2, 2, 16, 5)  # (B, heads, HW, L)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 16))
    assert (weights[0, :, :, 3:] == 0).all()  # padding gets no attention
    assert torch.allclose(out, layer(x, cond, mask), atol=1e-5)  # the SDPA path agrees with the explicit one
    assert torch.allclose(out, layer(x, cond, mask.long()), atol=1e-6)  # 0/1 integer masks work too


def test_cross_attention_ignores_padding_token_states():
    layer = CrossAttention(16, cond_dim=12, heads=2, head_dim=8)
    x, cond = torch.randn(2, 16, 4, 4), torch.randn(2, 5, 12)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    other = cond.clone()
    other[~mask] = torch.randn(int((~mask).sum()), 12) * 10
    assert torch.allclose(layer(x, cond, mask), layer(x, other, mask), atol=1e-6)
    assert not torch.allclose(layer(x, cond), layer(x, other), atol=1e-3)  # without the mask they do matter


def test_cross_attention_rejects_bad_input():
    layer, x = CrossAttention(16, cond_dim=12, heads=2, head_dim=8), torch.randn(2, 16, 4, 4)
    with pytest.raises(ValueError, match=r"cond \(B=2, L, cond_dim=12\)"):
        layer(x, torch.randn(2, 5, 10))
    with pytest.raises(ValueError, match=r"shape \(B=2, L=5\)"):
        layer(x, torch.randn(2, 5, 12), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one True"):
        layer(x, torch.randn(2, 5, 12), torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        layer(x, torch.randn(2, 5, 12), torch.full((2, 5), 0.5))


def test_prenorm_residual_and_resampling_shapes():
    x = torch.randn(2, 8, 8, 8)
    block = Residual(PreNorm(8, Attention(8, heads=2, head_dim=4)))
    assert block(x).shape == x.shape
    assert Downsample(8, 16)(x).shape == (2, 16, 4, 4)
    assert Upsample(8, 4)(x).shape == (2, 4, 16, 16)
    with pytest.raises(ValueError, match="even H and W"):
        Downsample(8, 16)(torch.randn(2, 8, 7, 7))


# ---------------------------------------------------------------------------------------------- UNet

@pytest.mark.parametrize("image_size", [28, 32])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("block_type", ["resnet", "convnext"])
def test_unet_output_shape_equals_input(image_size, batch, block_type):
    model = UNet(small(image_size=image_size, block_type=block_type))
    x_t = torch.randn(batch, 1, image_size, image_size)
    assert model(x_t, torch.randint(0, 1000, (batch,))).shape == x_t.shape


def test_two_res_blocks_per_level_and_no_mid_attention():
    model = UNet(small(num_res_blocks=2, mid_attention=False, attention=("full", "none", "linear")))
    x_t = torch.randn(2, 1, 32, 32)
    assert model(x_t, 3).shape == x_t.shape


def test_default_config_runs_at_32x32():
    model = UNet(UNetConfig())
    assert 1_000_000 < model.num_parameters() < 3_000_000
    assert model(torch.randn(2, 1, 32, 32), torch.tensor([0, 999])).shape == (2, 1, 32, 32)


def test_class_conditional_unet_and_null_class():
    model = UNet(small(num_classes=10))
    x_t, t = torch.randn(3, 1, 32, 32), torch.randint(0, 1000, (3,))
    labels = torch.tensor([0, 9, 10])  # 10 = num_classes = the null class
    assert model.config.null_label == 10
    assert model(x_t, t, labels).shape == x_t.shape
    assert not torch.allclose(model(x_t, t, torch.tensor([0, 0, 0])), model(x_t, t, torch.tensor([10, 10, 10])))


def test_text_conditional_unet_and_padding_invariance():
    model = UNet(small(cond_dim=12))
    x_t, t = torch.randn(2, 1, 32, 32), torch.randint(0, 1000, (2,))
    cond, mask = torch.randn(2, 6, 12), torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    out = model(x_t, t, cond, mask)
    assert out.shape == x_t.shape
    other = cond.clone()
    other[~mask] = torch.randn(int((~mask).sum()), 12) * 10
    assert torch.allclose(out, model(x_t, t, other, mask), atol=1e-5)
    assert model(x_t, t, cond).shape == x_t.shape  # no mask: every token is real


def test_masked_mean_averages_the_real_tokens_only():
    from minildm.models.layers import masked_mean
    states = torch.arange(12.0).reshape(2, 3, 2)                      # (B, L, D)
    mask = torch.tensor([[1, 0, 0], [1, 1, 0]])                       # 0/1 integers, as tokenizers return
    assert torch.equal(masked_mean(states, mask), torch.tensor([[0.0, 1.0], [7.0, 8.0]]))
    assert torch.equal(masked_mean(states), states.mean(1))           # no mask: every token is real
    with pytest.raises(ValueError, match="at least one True"):
        masked_mean(states, torch.tensor([[0, 0, 0], [1, 1, 0]]))
    with pytest.raises(ValueError, match=r"shape \(B=2, L=3\)"):
        masked_mean(states, torch.ones(2, 4))


def test_pooled_text_reaches_the_time_embedding_and_ignores_padding():
    model = UNet(small(cond_dim=12, pooled_text=True)).eval()
    x_t, t = torch.randn(2, 1, 32, 32), torch.randint(0, 1000, (2,))
    cond, mask = torch.randn(2, 6, 12), torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        out = model(x_t, t, cond, mask)
        other = cond.clone()
        other[~mask] = torch.randn(int((~mask).sum()), 12) * 10
        assert torch.allclose(out, model(x_t, t, other, mask), atol=1e-5)     # padding changes nothing
        model.pooled_embed[-1].weight.zero_()
        model.pooled_embed[-1].bias.zero_()
        assert not torch.allclose(out, model(x_t, t, cond, mask), atol=1e-4)  # the pooled vector was contributing
    assert UNet(small(cond_dim=12)).pooled_embed is None                     # off by default: old checkpoints load
    with pytest.raises(ValueError, match="pooled_text pools text token states: it needs cond_dim"):
        small(pooled_text=True)


@pytest.mark.parametrize("cond_dim", [None, 12])
def test_latent_unet_4x8x8(cond_dim):
    config = small(in_channels=4, out_channels=4, image_size=8, channel_mults=(1, 2), attention=("none", "full"),
                   cross_attention=(True, True), cond_dim=cond_dim)
    x_t = torch.randn(3, 4, 8, 8)
    cond = torch.randn(3, 5, 12) if cond_dim else None
    assert UNet(config)(x_t, torch.randint(0, 1000, (3,)), cond).shape == x_t.shape


def test_scalar_t_is_broadcast_to_the_batch():
    model = UNet(small())
    x_t = torch.randn(3, 1, 32, 32)
    expected = model(x_t, torch.full((3,), 17, dtype=torch.long))
    for t in (17, torch.tensor(17), torch.tensor([17]), 17.0):
        assert torch.allclose(model(x_t, t), expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["unconditional", "class", "text", "convnext"])
def test_gradients_reach_every_parameter(kind):
    extra = {"class": dict(num_classes=10), "text": dict(cond_dim=12), "convnext": dict(block_type="convnext"),
             "unconditional": {}}[kind]
    model = UNet(small(**extra))
    x_t, t = torch.randn(2, 1, 32, 32), torch.randint(0, 1000, (2,))
    cond = {"class": torch.tensor([1, 10]), "text": torch.randn(2, 4, 12)}.get(kind)
    model(x_t, t, cond).pow(2).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    zero = [name for name, p in model.named_parameters() if not p.grad.any()]
    if kind == "class":  # only the rows of the labels used get a gradient
        zero = [n for n in zero if n != "class_embed.weight"]
    assert not zero, f"all-zero gradient for {zero}"


def test_checkpoint_round_trip(tmp_path):
    from minildm.checkpoints import load_model, save_model
    model = UNet(small(num_classes=10)).eval()
    save_model(model, tmp_path / "unet")
    loaded = load_model(UNet, tmp_path / "unet")
    assert loaded.config == model.config
    x_t, t, labels = torch.randn(2, 1, 32, 32), torch.tensor([3, 4]), torch.tensor([1, 10])
    assert torch.equal(loaded(x_t, t, labels), model(x_t, t, labels))


# ---------------------------------------------------------------------------------------------- errors

@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"plain": UNet(small()), "class": UNet(small(num_classes=10)), "text": UNet(small(cond_dim=12))}


@pytest.mark.parametrize("kind,x_t,t,cond,error,match", [
    ("plain", torch.randn(2, 3, 32, 32), 5, None, ValueError, "3 channels but this UNet expects in_channels=1"),
    ("plain", torch.randn(1, 32, 32), 5, None, ValueError, "rank 4"),
    ("plain", torch.randn(2, 1, 28, 28), 5, None, ValueError, "28x28 but this UNet was configured for 32x32"),
    ("plain", torch.full((2, 1, 32, 32), float("nan")), 5, None, ValueError, "NaN"),
    ("plain", torch.zeros(2, 1, 32, 32, dtype=torch.long), 5, None, TypeError, "float tensor"),
    ("plain", torch.randn(2, 1, 32, 32), torch.zeros(3), None, ValueError, r"t must have shape \(B,\)"),
    ("plain", torch.randn(2, 1, 32, 32), "5", None, TypeError, "t must be an int"),
    ("plain", torch.randn(2, 1, 32, 32), 5, torch.tensor([1, 2]), ValueError, "unconditional"),
    ("class", torch.randn(2, 1, 32, 32), 5, None, ValueError, r"class-conditional.*null class"),
    ("class", torch.randn(2, 1, 32, 32), 5, torch.tensor([1, 11]), ValueError, r"in \[0, 10\]"),
    ("class", torch.randn(2, 1, 32, 32), 5, torch.tensor([-1, 0]), ValueError, r"in \[0, 10\]"),
    ("class", torch.randn(2, 1, 32, 32), 5, torch.tensor([1.0, 2.0]), TypeError, "integer tensor"),
    ("class", torch.randn(2, 1, 32, 32), 5, torch.tensor([1, 2, 3]), ValueError, "3 labels for a batch of 2"),
    ("class", torch.randn(2, 1, 32, 32), 5, torch.tensor([[1], [2]]), ValueError, r"\(B,\) tensor"),
    ("text", torch.randn(2, 1, 32, 32), 5, None, ValueError, "text-conditional"),
    ("text", torch.randn(2, 1, 32, 32), 5, torch.randn(2, 4, 7), ValueError, "cond_dim=12"),
    ("text", torch.randn(2, 1, 32, 32), 5, torch.tensor([1, 2]), ValueError, "token states"),
])
def test_bad_inputs_raise_clear_errors(models, kind, x_t, t, cond, error, match):
    with pytest.raises(error, match=match):
        models[kind](x_t, t, cond)


def test_bad_masks_raise(models):
    x_t = torch.randn(2, 1, 32, 32)
    with pytest.raises(ValueError, match="cond_mask is for text models"):
        models["class"](x_t, 5, torch.tensor([1, 2]), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="unconditional"):
        models["plain"](x_t, 5, None, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"shape \(B=2, L=4\)"):
        models["text"](x_t, 5, torch.randn(2, 4, 12), torch.ones(2, 3, dtype=torch.bool))


@pytest.mark.parametrize("overrides,match", [
    (dict(attention=("none", "full")), "attention needs one entry per level"),
    (dict(cross_attention=(True,)), "cross_attention needs one entry per level"),
    (dict(attention=("none", "linear", "sparse")), "unknown attention"),
    (dict(block_type="transformer"), "unknown block_type"),
    (dict(image_size=30), "divisible by 2\\*\\*\\(levels-1\\) = 4"),
    (dict(channel_mults=()), "non-empty"),
    (dict(base_channels=6), "not divisible by groups"),
    (dict(num_classes=10, cond_dim=12), "not both"),
    (dict(num_classes=0), "num_classes must be a positive int"),
    (dict(dropout=1.5), "dropout"),
    (dict(time_dim=7), "time_dim must be even"),
])
def test_invalid_configs_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        small(**overrides)


def test_config_is_frozen_and_unet_wants_a_config():
    with pytest.raises(dataclasses.FrozenInstanceError):
        UNetConfig().base_channels = 64
    with pytest.raises(TypeError, match="UNetConfig"):
        UNet(dict(SMALL))
