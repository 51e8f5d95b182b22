"""`minildm bench`: rows with the promised keys, merged JSON, markdown table, README update, clear errors."""
import json

import pytest

from minildm import bench, speed
from minildm.cli import main as cli_main

KEYS = {"n_samples", "sampler", "steps", "fid", "fid_floor", "fid_ratio", "train_img_per_s", "sample_s_per_img",
        "device", "date", "peer_train_img_per_s", "speedup_vs_peer"}


@pytest.fixture(scope="module")
def quick_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    with pytest.warns(UserWarning, match="n=8 < 5000"):
        rows = bench.run(["ddpm"], n=8, steps=5, out_dir=out, quick=True, readme=False)
    return rows, out


def test_bench_writes_json_and_markdown(quick_rows):
    rows, out = quick_rows
    assert KEYS <= set(rows[0])
    saved = json.loads((out / "metrics.json").read_text())
    assert list(saved) == ["ddpm / ddim-5 / n=8"] and saved["ddpm / ddim-5 / n=8"]["n_samples"] == 8
    assert rows[0]["fid_ratio"] == pytest.approx(rows[0]["fid"] / rows[0]["fid_floor"], rel=1e-6)
    table = (out / "metrics.md").read_text()
    assert table.startswith("| model / sampler | n |") and "| ddpm / ddim-5 / n=8 | 8 |" in table


def test_rows_merge_and_readme_section_is_replaced(tmp_path):
    row = {"model": "m", "sampler": "ddim", "steps": 50, "n_samples": 10, "fid": 2.0, "fid_floor": 1.0,
           "fid_ratio": 2.0, "device": "cpu", "date": "2026-01-01"}
    bench.write_results([row], tmp_path)
    bench.write_results([{**row, "steps": 10}], tmp_path)
    assert list(json.loads((tmp_path / "metrics.json").read_text())) == ["m / ddim-10 / n=10", "m / ddim-50 / n=10"]
    table = (tmp_path / "metrics.md").read_text()  # the table keeps the JSON's sorted order, not arrival order
    assert table.index("| m / ddim-10 / n=10 |") < table.index("| m / ddim-50 / n=10 |")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.README_START}\nold\n{bench.README_END}\nafter\n")
    assert bench.update_readme("| new |\n", readme)
    assert readme.read_text() == f"intro\n{bench.README_START}\n| new |\n{bench.README_END}\nafter\n"


def test_table_marks_rows_of_earlier_weights(tmp_path):
    from minildm import results
    (tmp_path / "m.json").write_text(json.dumps({"sha256": "b" * 64}))
    assert results.shipped_sha256s({"m", "gone"}, tmp_path) == {"m": "b" * 64}  # no checkpoint: left out
    row = {"model": "m", "sampler": "ddim", "steps": 50, "n_samples": 10, "fid": 2.0, "fid_floor": 1.0,
           "fid_ratio": 2.0, "device": "cpu", "date": "2026-01-01"}
    rows = {"old": {**row, "checkpoint_sha256": "a" * 64}, "new": {**row, "checkpoint_sha256": "b" * 64},
            "unknown": row}
    lines = results.markdown_table(rows, {"m": "b" * 64}).splitlines()
    assert lines[0].endswith("| weights |") and lines[1].count("---") == 13
    assert lines[2].endswith("| `aaaaaaaa` earlier |") and lines[3].endswith("| `bbbbbbbb` |")
    assert lines[4].endswith("| – |")  # a row that did not record its weights
    assert results.markdown_table(rows).splitlines()[2].endswith("| `aaaaaaaa` |")  # nothing shipped to compare


def test_bench_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        bench.run(["imagen"], n=8, quick=True)
    with pytest.raises(ValueError, match="at least 2 samples"):
        bench.run(["ddpm"], n=1, quick=True)
    with pytest.raises(ValueError, match="unknown sampler"):
        bench.run(["ddpm"], n=8, sampler="euler", quick=True)
    with pytest.raises(ValueError, match="unknown timestep spacing 'middle'"):
        bench.run(["ddpm"], n=8, spacing="middle", quick=True)
    with pytest.raises(ValueError, match=r"eta=1.5 is outside \[0, 1\]"):
        bench.run(["ddpm"], n=8, eta=1.5, quick=True)
    with pytest.raises(ValueError, match="use them with --sampler ddim"):
        bench.run(["ddpm"], n=8, sampler="ddpm", spacing="trailing", quick=True)
    with pytest.raises(ValueError, match=r"not to \['vae'\]"):
        bench.run(["ddpm", "vae"], n=8, eta=1.0, quick=True)
    with pytest.raises(ValueError, match=r"dpm\+\+2m is measured for ddpm_cond.*not for \['ddpm'\]"):
        bench.run(["ddpm"], n=8, sampler="dpm++2m", quick=True)


def test_row_keys_name_non_default_ddim_settings():
    row = {"model": "ddpm", "sampler": "ddim", "steps": 50, "n_samples": 1000}
    assert bench.row_key(row) == "ddpm / ddim-50 / n=1000"
    assert bench.row_key({**row, "timestep_spacing": "leading", "eta": 0.0}) == "ddpm / ddim-50 / n=1000"
    assert bench.row_key({**row, "timestep_spacing": "trailing", "eta": 1.0}) == "ddpm / ddim-50 trailing eta=1 / n=1000"
    assert bench.row_key({**row, "eta": 0.5, "n_samples": 5000}) == "ddpm / ddim-50 eta=0.5"


def test_ddim_settings_reach_the_sampler(tmp_path):
    rows = bench.run(["ddpm"], n=8, steps=5, out_dir=tmp_path, quick=True, readme=False, spacing="trailing", eta=1.0)
    assert rows[0]["timestep_spacing"] == "trailing" and rows[0]["eta"] == 1.0
    assert list(json.loads((tmp_path / "metrics.json").read_text())) == ["ddpm / ddim-5 trailing eta=1 / n=8"]
    default = bench.run(["ddpm"], n=8, steps=5, out_dir=tmp_path, quick=True, readme=False)[0]
    assert default["fid"] != rows[0]["fid"]  # other timesteps and fresh noise: other samples


def test_dpm_solver_reaches_the_guided_bench(tmp_path):
    rows = bench.run(["ddpm_cond"], n=20, steps=4, out_dir=tmp_path, quick=True, readme=False, sampler="dpm++2m",
                     guidance_scale=1.25)
    assert rows[0]["sampler"] == "dpm++2m" and rows[0]["steps"] == 4 and rows[0]["solver_timestep_spacing"] == "linspace"
    assert list(json.loads((tmp_path / "metrics.json").read_text())) == ["ddpm_cond / dpm++2m-4 / s=1.25 / n=20"]
    ddim = bench.run(["ddpm_cond"], n=20, steps=4, out_dir=tmp_path, quick=True, readme=False, guidance_scale=1.25)[0]
    assert ddim["fid"] != rows[0]["fid"]  # the same noise through another solver: other samples


def test_cli_bench_reports_errors(capsys):
    assert cli_main(["bench", "imagen", "--quick"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_model_card_is_generated_from_metadata_and_results(tmp_path):
    from minildm.cards import write_card
    row = {"model": "ddpm", "sampler": "ddim", "steps": 50, "n_samples": 5000, "fid": 0.5, "fid_floor": 0.25,
           "fid_ratio": 2.0, "device": "cpu", "date": "2026-01-01", "sample_s_per_img": 0.1,
           "train_img_per_s": 200.0, "peer_train_img_per_s": 100.0, "speedup_vs_peer": 2.0}
    results = tmp_path / "metrics.json"
    results.write_text(json.dumps({"ddpm / ddim-50": row, "other / ddim-50": {**row, "model": "other"}}))
    card = write_card("ddpm", results_path=results, out_dir=tmp_path).read_text()
    assert "| ddim-50 | 5,000 | 0.500 | 0.250 | 2.00 |" in card
    assert "other" not in card.split("## Measured")[1].split("## Targets")[0]
    assert "| training speed vs diffusers UNet2DModel (same layout) | ≥ 1.3x | 2.00 |" in card
    assert "| feature-FID ratio, DDPM 1000 steps | ≤ 1.5 | not measured yet |" in card


def test_card_compares_ddim_settings_with_ddpm_1000_at_the_same_n(tmp_path):
    from minildm.cards import write_card
    base = {"model": "ddpm", "sampler": "ddim", "steps": 50, "n_samples": 1000, "fid_floor": 1.0, "device": "cpu",
            "date": "2026-01-01", "sample_s_per_img": 0.1}
    rows = {"ddpm / ddpm-1000 / n=1000": {**base, "sampler": "ddpm", "steps": 1000, "fid": 2.0, "fid_ratio": 2.0},
            "ddpm / ddim-50 / n=1000": {**base, "fid": 4.0, "fid_ratio": 4.0},
            "ddpm / ddim-50 trailing eta=1 / n=1000": {**base, "fid": 3.0, "fid_ratio": 3.0,
                                                       "timestep_spacing": "trailing", "eta": 1.0},
            "ddpm / ddim-50": {**base, "n_samples": 5000, "fid": 1.0, "fid_ratio": 1.0}}  # another n: not compared
    results = tmp_path / "metrics.json"
    results.write_text(json.dumps(rows))
    card = write_card("ddpm", results_path=results, out_dir=tmp_path).read_text()
    assert "(same n; leading spacing, eta 0) | ≤ 1.25 | 2.00 |" in card
    assert "| the same, best DDIM-50 setting measured (spacing, eta, eps from clipped x0) | ≤ 1.25 | 1.50 (trailing, eta 1) |" in card
    assert "| ddim-50 trailing eta=1 / n=1000 | 1,000 | 3.000 |" in card


def test_class_conditional_bench_reports_accuracy(tmp_path, monkeypatch):
    import torch
    from minildm.checkpoints import save_model
    from minildm.models.unet import UNet, UNetConfig
    torch.manual_seed(0)
    tiny = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), attention=("none", "full"), heads=1, head_dim=8,
                           groups=4, time_dim=16, cross_attention=(False, False), num_classes=10))
    save_model(tiny, tmp_path / "ddpm_cond", meta={"num_train_timesteps": 100, "beta_schedule": "cosine",
                                                    "prediction_type": "eps"})
    monkeypatch.setenv("MINILDM_CHECKPOINTS", str(tmp_path))
    timings = []  # the training speed is timed once per model per run, not once per guidance scale
    monkeypatch.setattr(speed, "compare_throughput", lambda *a, **kw: timings.append(a) or {"minildm": 20.0, "diffusers": 10.0})
    with pytest.warns(UserWarning):
        rows = bench.run(["ddpm_cond"], n=20, steps=2, out_dir=tmp_path / "out", quick=True, readme=False,
                         guidance_scale=[2.0, 0.0])  # a sweep: one row per scale
    assert len(timings) == 1 and set(timings[0][0]) == {"minildm", "diffusers"}
    assert rows[0]["speedup_vs_peer"] == rows[1]["speedup_vs_peer"] == 2.0
    monkeypatch.undo()
    monkeypatch.setenv("MINILDM_CHECKPOINTS", str(tmp_path))
    with pytest.warns(UserWarning):  # the real timing, once
        rows = bench.run(["ddpm_cond"], n=20, steps=2, out_dir=tmp_path / "out", quick=True, readme=False,
                         guidance_scale=[2.0, 0.0])
    assert [bench.row_key(r) for r in rows] == ["ddpm_cond / ddim-2 / s=2 / n=20", "ddpm_cond / ddim-2 / s=0 / n=20"]
    row = rows[0]
    assert 0.0 <= row["class_accuracy"] <= 1.0 and len(row["class_accuracy_per_class"]) == 10
    assert sum(map(sum, row["confusion"])) == 20 and row["ddim_eps_from_clipped_x0"]
    assert "| ddpm_cond / ddim-2 / s=2 / n=20 | 20 |" in (tmp_path / "out" / "metrics.md").read_text()
    # training speed against chapter 02's standard diffusers recipe, in the same row
    assert "chapter 02's standard recipe" in row["peer"] and row["peer_train_img_per_s"] > 0
    assert row["speedup_vs_peer"] == pytest.approx(row["train_img_per_s"] / row["peer_train_img_per_s"], rel=0.02)
    with pytest.warns(UserWarning):  # guidance in a limited interval: recorded and named in the key
        limited = bench.run(["ddpm_cond"], n=10, steps=2, out_dir=tmp_path / "out", quick=True, readme=False,
                            guidance_scale=2.0, guidance_interval=(30, 90))[0]
    assert limited["guidance_interval"] == [30, 90]
    assert bench.row_key(limited) == "ddpm_cond / ddim-2 / s=2 in (30, 90] / n=10"


def test_card_targets_use_the_best_guided_row_with_enough_samples():
    from minildm.cards import _best_guided, _best_scale_of, _guided_summary
    from minildm.cards_ddpm import ddim_vs_ddpm as _ddim_vs_ddpm
    ddim = {"sampler": "ddim", "steps": 50}
    rows = {"a / s=1": {"n_samples": 5000, "class_accuracy": 0.8, "fid_ratio": 3.0, "guidance_scale": 1.0, **ddim},
            "a / s=3": {"n_samples": 5000, "class_accuracy": 0.93, "fid_ratio": 5.0, "guidance_scale": 3.0, **ddim},
            "a / s=5": {"n_samples": 5000, "class_accuracy": 0.95, "fid_ratio": 6.0, "guidance_scale": 5.0, **ddim},
            "a / s=2 / n=100": {"n_samples": 100, "class_accuracy": 0.99, "fid_ratio": 1.0, "guidance_scale": 2.0, **ddim},
            "a / s=4 / n=200": {"n_samples": 200, "class_accuracy": 0.97, "fid_ratio": 2.0, "guidance_scale": 4.0, **ddim}}
    assert _best_guided(rows)["class_accuracy"] == 0.93     # lowest ratio among the >= 0.9 rows, n >= 5,000
    assert _best_guided(rows, min_n=100)["fid_ratio"] == 1.0  # smaller rows count only when asked for
    assert _best_guided(rows, min_n=200, max_n=200)["guidance_scale"] == 4.0  # one n only: ratios of one floor
    assert _best_scale_of(rows) == "ddim-50, s = 3 (of the scales measured at n ≥ 5,000: 1, 3, 5)"
    rows["a / s=3 trailing"] = {**rows["a / s=3"], "fid_ratio": 4.0, "timestep_spacing": "trailing"}
    assert _best_scale_of(rows) == "ddim-50 trailing eta 0, s = 3 (of the scales measured at n ≥ 5,000: 1, 3, 5)"
    del rows["a / s=3 trailing"]
    assert _best_scale_of({}) is None
    assert _guided_summary({"guidance_scale": 2.0, "class_accuracy": 0.9671, "fid_ratio": 2.904, "n_samples": 1000,
                            **ddim}) == "ddim-50, s = 2: accuracy 0.967, FID ratio 2.90 (n = 1,000)"
    assert _guided_summary(None) is None
    del rows["a / s=3"], rows["a / s=5"]
    assert _best_guided(rows)["class_accuracy"] == 0.8      # none reaches 0.9: the most accurate
    ddpm = {"ddpm / ddpm-1000 / n=1000": {"n_samples": 1000, "fid": 4.0},
            "ddpm / ddim-50 / n=1000": {"n_samples": 1000, "fid": 5.0}, "ddpm / ddim-50": {"n_samples": 5000, "fid": 1.0}}
    assert _ddim_vs_ddpm(ddpm) == 1.25                      # compared at the same n


def test_card_vs_alike_pairs_rows_measured_alike_only():
    from minildm.cards import _vs_alike
    like = {"sampler": "ddim", "steps": 50, "guidance_scale": 1.25, "ddim_eps_from_clipped_x0": True,
            "timestep_spacing": "leading", "eta": 0.0, "n_samples": 5000}
    mine = {"m": {**like, "model": "ddpm_cond", "fid_ratio": 1.96, "class_accuracy": 0.942, "train_images_seen": 100},
            "m100": {**like, "steps": 100, "model": "ddpm_cond", "fid_ratio": 1.7, "class_accuracy": 0.95}}
    wide = {**like, "model": "ddpm_cond_wide", "fid_ratio": 1.89, "class_accuracy": 0.948, "train_images_seen": 200}
    assert _vs_alike(mine, {}, "ddpm_cond_wide") is None                     # not measured: no pair
    assert _vs_alike(mine, {"w": {**wide, "n_samples": 1000}}, "ddpm_cond_wide") is None  # below min_n
    assert _vs_alike(mine, {"w": {**wide, "guidance_scale": 2.0}}, "ddpm_cond_wide") is None  # other scale
    assert _vs_alike(mine, {"w": wide}, "ddpm_cond_wide") == (
        "ddim-50, s = 1.25: FID ratio 1.89 vs 1.96, accuracy 0.948 vs 0.942 (200 vs 100 images; n = 5,000)")


def test_card_compares_with_the_diffusers_recipe_only_at_the_same_budget_and_setting():
    from minildm.cards import _vs_peer
    like = {"sampler": "ddim", "steps": 50, "guidance_scale": 2.0, "ddim_eps_from_clipped_x0": True,
            "timestep_spacing": "leading", "eta": 0.0, "n_samples": 5000}
    ours = {"a": {**like, "model": "ddpm_cond", "class_accuracy": 0.95, "fid_ratio": 2.0, "train_images_seen": 1000}}
    peer = {**like, "model": "ddpm_cond_peer", "class_accuracy": 0.92, "fid_ratio": 3.0}
    assert _vs_peer(ours, {}).startswith("not measured yet: no ddpm_cond_peer row like the best one at 1,000")
    every = {"p": {**peer, "train_images_seen": 500}}                     # another budget: not compared
    assert _vs_peer(ours, every).endswith("(there are rows at 500)")
    every["q"] = {**peer, "train_images_seen": 1000, "guidance_scale": 3.0}  # another scale: not compared
    assert _vs_peer(ours, every).startswith("not measured yet")
    every["r"] = {**peer, "train_images_seen": 1000}
    assert _vs_peer(ours, every) == ("FID ratio 2.00 vs 3.00, accuracy 0.950 vs 0.920: better on both "
                                     "(1,000 images each)")
    every["r"]["class_accuracy"] = 0.97
    assert "not better on both" in _vs_peer(ours, every)
    assert _vs_peer({}, every) is None


def test_card_compares_the_best_ddim_setting_over_fresh_seeds():
    from minildm.cards_ddpm import ddim_vs_ddpm_mean as _ddim_vs_ddpm_mean
    base = {"model": "ddpm", "sampler": "ddim", "steps": 50, "n_samples": 1000}
    rows = {"ddpm / ddpm-1000 / n=1000": {"model": "ddpm", "sampler": "ddpm", "n_samples": 1000, "fid": 1.0},
            "ddpm / ddpm-1000 / n=1000 / seed=1": {"model": "ddpm", "sampler": "ddpm", "n_samples": 1000, "fid": 1.2,
                                                   "seed": 1},
            "ddpm / ddim-50 eta=0.5 / n=1000": {**base, "eta": 0.5, "fid": 1.1},           # chosen on seed 0
            "ddpm / ddim-50 / n=1000": {**base, "fid": 2.0},
            "ddpm / ddim-50 / n=1000 / seed=1": {**base, "fid": 9.0, "seed": 1},           # another setting
            "ddpm / ddim-50 eta=0.5 / n=1000 / seed=1": {**base, "eta": 0.5, "fid": 1.3, "seed": 1}}
    assert _ddim_vs_ddpm_mean(rows) is None                    # one fresh seed is not a mean
    rows["ddpm / ddim-50 eta=0.5 / n=1000 / seed=2"] = {**base, "eta": 0.5, "fid": 1.5, "seed": 2}
    assert _ddim_vs_ddpm_mean(rows) == ("1.27 (DDIM-50: 1.400 ± 0.141 over seeds 1, 2; "
                                        "DDPM-1000: 1.100 over seeds 0, 1)")  # seed 0 (the choice) left out


def test_card_states_the_speed_against_the_peer_per_machine():
    from minildm.cards import _speed_by_device
    cpu, gpu = "Intel Xeon, 2 threads", "NVIDIA H200"
    rows = {"a": {"device": cpu, "date": "2026-12-03", "speedup_vs_peer": 6.5},
            "b": {"device": cpu, "date": "2026-12-04", "speedup_vs_peer": 6.1},   # the latest on that machine
            "c": {"device": gpu, "date": "2026-12-04", "speedup_vs_peer": 2.17},
            "d": {"device": gpu, "date": "2026-12-04"}}                           # not timed: skipped
    assert _speed_by_device(rows) == "6.10x on Intel Xeon, 2 threads; 2.17x on NVIDIA H200"
    assert _speed_by_device({"d": rows["d"]}) is None


def test_card_names_the_sampler_of_the_best_row():
    from minildm.cards import _sampler_label
    assert _sampler_label(None) is None
    assert _sampler_label({"sampler": "ddpm", "steps": 1000, "guidance_scale": 1.25}) == "ddpm-1000, s = 1.25"
    assert _sampler_label({"sampler": "ddim", "steps": 50, "guidance_scale": 2.0, "timestep_spacing": "leading",
                           "eta": 0.0}) == "ddim-50, s = 2"
    assert _sampler_label({"sampler": "ddim", "steps": 50, "guidance_scale": 2.0, "timestep_spacing": "trailing",
                           "eta": 1.0}) == "ddim-50 trailing eta 1, s = 2"


def test_vae_card_reads_its_targets_from_the_reconstruction_row(tmp_path, monkeypatch):
    from minildm.cards import write_card
    from minildm.checkpoints import save_model
    from minildm.models.vae import VAE, VAEConfig
    save_model(VAE(VAEConfig(base_channels=8)), tmp_path / "vae",
               meta={"latent_scale": 0.5, "steps": 10, "images_seen": 640, "train_config": {"recon": "l1", "beta": 1e-6}})
    row = {"model": "vae", "sampler": "reconstruction", "steps": 0, "n_samples": 10000, "fid": 0.3, "fid_floor": 0.1,
           "fid_ratio": 3.0, "psnr_db": 26.5, "ssim": 0.95, "class_accuracy": 0.91, "scaled_latent_std": 1.0,
           "device": "cpu", "date": "2026-01-01"}
    results = tmp_path / "metrics.json"
    results.write_text(json.dumps({bench.row_key(row): row}))
    monkeypatch.setenv("MINILDM_CHECKPOINTS", str(tmp_path))
    card = write_card("vae", results_path=results, out_dir=tmp_path).read_text()
    assert "| test PSNR (28x28 image area) | ≥ 26 dB | 26.50 |" in card
    assert "| reconstruction feature-FID / floor (all 10,000 test images) | ≤ 3 | 3.00 |" in card
    assert "latent scale is `model.meta['latent_scale']` = 0.50000" in card


def test_latent_bench_decodes_with_the_recorded_vae_and_refuses_another(tmp_path, monkeypatch):
    import torch
    from minildm.checkpoints import CheckpointError, save_model, sha256_file
    from minildm.models.unet import UNet, UNetConfig
    from minildm.models.vae import VAE, VAEConfig
    torch.manual_seed(0)
    vae_path = save_model(VAE(VAEConfig(base_channels=8)), tmp_path / "vae", meta={"latent_scale": 0.5})
    unet = UNet(UNetConfig(in_channels=4, out_channels=4, image_size=8, base_channels=8, channel_mults=(1, 2),
                           attention=("none", "full"), heads=1, head_dim=8, groups=4, time_dim=16,
                           cross_attention=(False, False), num_classes=10))
    save_model(unet, tmp_path / "ldm_cond", meta={"num_train_timesteps": 100, "beta_schedule": "cosine",
                                                  "prediction_type": "eps", "latent_vae": "vae",
                                                  "latent_vae_sha256": sha256_file(vae_path)})
    monkeypatch.setenv("MINILDM_CHECKPOINTS", str(tmp_path))
    with pytest.warns(UserWarning):
        rows = bench.run(["ldm_cond"], n=20, steps=2, out_dir=tmp_path / "out", quick=True, readme=False)
    assert bench.row_key(rows[0]) == "ldm_cond / ddim-2 / s=3 / n=20" and sum(map(sum, rows[0]["confusion"])) == 20
    assert rows[0]["fid_over_vae_recon_fid"] == pytest.approx(rows[0]["fid"] / rows[0]["vae_recon_fid_same_n"], rel=1e-2)
    save_model(VAE(VAEConfig(base_channels=8)), tmp_path / "vae", meta={"latent_scale": 0.9})  # another VAE
    with pytest.raises(CheckpointError, match="trained on the latents of vae"):
        bench.load_latent_pair("ldm_cond")


def test_clipped_eps_and_seed_reach_the_sampler_and_the_row_key(tmp_path):
    kw = dict(n=8, steps=5, out_dir=tmp_path, quick=True, readme=False)
    plain = bench.run(["ddpm"], **kw)[0]
    clipped = bench.run(["ddpm"], clipped_eps=True, **kw)[0]
    reseeded = bench.run(["ddpm"], seed=1, **kw)[0]
    assert clipped["ddim_eps_from_clipped_x0"] and not plain["ddim_eps_from_clipped_x0"] and reseeded["seed"] == 1
    assert "seed" not in plain  # the default seed is not recorded, so older rows keep their keys
    assert sorted(json.loads((tmp_path / "metrics.json").read_text())) == [
        "ddpm / ddim-5 / n=8", "ddpm / ddim-5 / n=8 / seed=1", "ddpm / ddim-5 clipped-eps / n=8"]
    assert len({plain["fid"], clipped["fid"], reseeded["fid"]}) == 3  # each option changes the samples
    again = bench.run(["ddpm"], seed=1, **kw)[0]
    assert again["fid"] == reseeded["fid"]  # a seed gives the same samples (and FID) every time


def test_schedulers_for_recomputes_eps_from_clipped_x0_when_asked():
    from types import SimpleNamespace
    model = SimpleNamespace(meta={"num_train_timesteps": 1000, "beta_schedule": "cosine", "prediction_type": "eps"})
    assert not bench.schedulers_for(model)[1].use_clipped_model_output
    assert bench.schedulers_for(model, clipped_eps=True)[1].use_clipped_model_output
    assert bench.schedulers_for(model, guided=True)[1].use_clipped_model_output


def test_row_keys_name_clipped_eps_only_for_unguided_rows_and_a_seed_other_than_0():
    row = {"model": "ddpm", "sampler": "ddim", "steps": 50, "n_samples": 1000, "eta": 0.5,
           "ddim_eps_from_clipped_x0": True}
    assert bench.row_key(row) == "ddpm / ddim-50 eta=0.5 clipped-eps / n=1000"
    assert bench.row_key({**row, "seed": 1}) == "ddpm / ddim-50 eta=0.5 clipped-eps / n=1000 / seed=1"
    assert bench.row_key({**row, "seed": 0, "ddim_eps_from_clipped_x0": False}) == "ddpm / ddim-50 eta=0.5 / n=1000"
    guided = {"model": "ddpm_cond", "sampler": "ddim", "steps": 50, "n_samples": 5000, "guidance_scale": 2.0,
              "ddim_eps_from_clipped_x0": True}  # guided rows always recompute eps: their keys do not say it
    assert bench.row_key(guided) == "ddpm_cond / ddim-50 / s=2"


def test_bench_rejects_clipped_eps_and_seed_where_they_do_not_apply():
    with pytest.raises(ValueError, match="--clipped-eps is a DDIM setting of the unguided model"):
        bench.run(["ldm_cond"], n=8, clipped_eps=True, quick=True)
    with pytest.raises(ValueError, match="--clipped-eps is a DDIM setting"):
        bench.run(["ddpm"], n=8, sampler="ddpm", clipped_eps=True, quick=True)
    with pytest.raises(ValueError, match=r"--seed applies to .* not to \['vae'\]"):
        bench.run(["vae"], n=8, seed=3, quick=True)
    with pytest.raises(ValueError, match="seed=-1: give a non-negative integer"):
        bench.run(["ddpm"], n=8, seed=-1, quick=True)


def test_card_compares_rows_of_one_seed_and_names_clipped_eps(tmp_path):
    from minildm.cards import write_card
    base = {"model": "ddpm", "sampler": "ddim", "steps": 50, "n_samples": 1000, "fid_floor": 1.0, "device": "cpu",
            "date": "2026-01-01", "sample_s_per_img": 0.1}
    ddpm = {**base, "sampler": "ddpm", "steps": 1000}
    rows = {"ddpm / ddpm-1000 / n=1000": {**ddpm, "fid": 2.0, "fid_ratio": 2.0},
            "ddpm / ddpm-1000 / n=1000 / seed=1": {**ddpm, "fid": 2.5, "fid_ratio": 2.5, "seed": 1},
            "ddpm / ddim-50 / n=1000": {**base, "fid": 4.0, "fid_ratio": 4.0},
            "ddpm / ddim-50 eta=0.5 clipped-eps / n=1000": {**base, "fid": 2.4, "fid_ratio": 2.4, "eta": 0.5,
                                                            "ddim_eps_from_clipped_x0": True},
            "ddpm / ddim-50 eta=0.5 clipped-eps / n=1000 / seed=1": {**base, "fid": 3.0, "fid_ratio": 3.0, "eta": 0.5,
                                                                     "ddim_eps_from_clipped_x0": True, "seed": 1},
            "ddpm / ddim-50 / n=1000 / seed=1": {**base, "fid": 1.0, "fid_ratio": 1.0, "seed": 1}}  # not at seed 0
    results = tmp_path / "metrics.json"
    results.write_text(json.dumps(rows))
    card = write_card("ddpm", results_path=results, out_dir=tmp_path).read_text()
    assert "(same n; leading spacing, eta 0) | ≤ 1.25 | 2.00 |" in card   # seed 0 against seed 0 only
    assert "(spacing, eta, eps from clipped x0) | ≤ 1.25 | 1.20 (leading, eta 0.5, eps from clipped x0) |" in card
    # seed 1: the setting that won on seed 0 (not seed 1's own best row, plain DDIM at 1.0), against seed 1's DDPM
    assert "both resampled) | ≤ 1.25 | 1.20 (leading, eta 0.5, eps from clipped x0) |" in card
    assert "| feature-FID ratio, DDPM 1000 steps | ≤ 1.5 | 2.00 |" in card
    assert "| the same, sampled again with seed 1 | ≤ 1.5 | 2.50 |" in card


def test_guidance_interval_reaches_the_latent_bench_and_its_row_key(tmp_path, monkeypatch):
    import torch
    from minildm.checkpoints import save_model
    from minildm.models.unet import UNet, UNetConfig
    from minildm.models.vae import VAE, VAEConfig
    torch.manual_seed(0)
    vae = VAE(VAEConfig(base_channels=8))
    vae_path = save_model(vae, tmp_path / "vae", meta={"latent_scale": 0.7})
    unet = UNet(UNetConfig(in_channels=4, out_channels=4, image_size=8, base_channels=8, channel_mults=(1, 2),
                           attention=("none", "full"), cross_attention=(False, False), heads=1, head_dim=8, groups=4,
                           time_dim=16, num_classes=10))
    from minildm.checkpoints import sha256_file
    save_model(unet, tmp_path / "ldm_cond", meta={"num_train_timesteps": 100, "beta_schedule": "cosine",
                                                   "prediction_type": "eps", "latent_vae": "vae",
                                                   "latent_vae_sha256": sha256_file(vae_path), "latent_scale": 0.7})
    monkeypatch.setenv("MINILDM_CHECKPOINTS", str(tmp_path))
    with pytest.warns(UserWarning):
        rows = bench.run(["ldm_cond"], n=20, steps=2, out_dir=tmp_path / "out", quick=True, readme=False,
                         guidance_scale=2.0, guidance_interval=(30, 90))
    assert rows[0]["guidance_interval"] == [30, 90] and len(rows[0]["vae_recon_fid_train_same_n"]) == 2
    assert bench.row_key(rows[0]) == "ldm_cond / ddim-2 / s=2 in (30, 90] / n=20"
    with pytest.raises(ValueError, match=r"--guidance-interval applies to ddpm_cond, ddpm_cond_peer, ddpm_cond_wide, ldm_cond only, not to \['ddpm'\]"):
        bench.run(["ddpm"], n=8, guidance_interval=(30, 90), quick=True)
    from minildm.cards import _sampler_label
    assert _sampler_label(rows[0]) == "ddim-2, s = 2 for t in (30, 90]"


def test_latent_card_reports_the_floor_on_training_images_beside_the_target():
    from minildm.cards import _train_floor_ratios
    row = {"fid": 0.7, "vae_recon_fid_train_same_n": [0.5, 0.4375]}
    assert _train_floor_ratios(row) == "1.40 / 1.60 (floors 0.500 / 0.438)"
    assert _train_floor_ratios({"fid": 0.7}) is None and _train_floor_ratios(None) is None


def test_card_reads_targets_from_seed_0_rows_and_checks_them_on_seed_1():
    from minildm.cards import _best_guided, _same_on_seed
    base = {"model": "ldm_cond", "sampler": "ddim", "steps": 50, "n_samples": 5000, "class_accuracy": 0.95,
            "guidance_scale": 3.0, "guidance_interval": [100, 600]}
    rows = {"a": {**base, "fid_ratio": 3.5}, "a / seed=1": {**base, "fid_ratio": 3.4, "seed": 1},
            "b": {**base, "guidance_scale": 2.0, "guidance_interval": None, "fid_ratio": 4.0}}
    assert _best_guided(rows) is rows["a"]                       # the better seed-1 draw is not picked
    assert _same_on_seed(rows, rows["a"]) is rows["a / seed=1"] and _same_on_seed(rows, rows["b"]) is None


def test_card_reports_each_other_seed_and_their_mean():
    from minildm.cards import _other_seeds
    base = {"model": "ddpm_cond", "sampler": "dpm++2m", "steps": 100, "n_samples": 5000, "guidance_scale": 1.25}
    rows = {"a": {**base, "fid_ratio": 1.69}, "a / seed=2": {**base, "fid_ratio": 1.8, "seed": 2},
            "a / seed=1": {**base, "fid_ratio": 1.9, "seed": 1},
            "a / n=1000 / seed=1": {**base, "n_samples": 1000, "fid_ratio": 1.1, "seed": 1}}
    assert _other_seeds(rows, rows["a"]) == "1.90 (seed 1), 1.80 (seed 2); mean 1.85"   # n = 1,000 is not alike
    del rows["a / seed=2"]
    assert _other_seeds(rows, rows["a"]) == "1.90 (seed 1)"
    assert _other_seeds(rows, {**base, "steps": 50}) is None and _other_seeds(rows, None) is None


def test_rows_record_the_weights_they_measured_and_cards_drop_rows_of_earlier_weights(quick_rows, tmp_path):
    from minildm.cards import write_card
    from minildm.checkpoints import find, sha256_file
    rows, _ = quick_rows
    current = sha256_file(find("ddpm"))
    assert rows[0]["checkpoint_sha256"] == current
    base = {"model": "ddpm", "sampler": "ddim", "steps": 50, "n_samples": 1000, "fid_floor": 1.0, "device": "cpu",
            "date": "2026-01-01", "sample_s_per_img": 0.1}
    results = tmp_path / "metrics.json"
    results.write_text(json.dumps({
        "ddpm / ddim-50 / n=1000": {**base, "fid": 4.0, "fid_ratio": 4.0, "checkpoint_sha256": current},
        "ddpm / ddpm-1000 / n=1000": {**base, "sampler": "ddpm", "steps": 1000, "fid": 1.2, "fid_ratio": 1.2,
                                      "checkpoint_sha256": "0" * 64},  # measured on other weights
        "ddpm / ddim-50 eta=1 / n=1000": {**base, "fid": 3.0, "fid_ratio": 3.0, "eta": 1.0}}))  # before the field
    card = write_card("ddpm", results_path=results, out_dir=tmp_path).read_text()
    table = card.split("## Measured")[1].split("## Targets")[0]
    assert "| ddim-50 / n=1000 | 1,000 | 4.000 |" in table and "| ddim-50 eta=1 / n=1000 | 1,000 | 3.000 |" in table
    assert "| ddpm-1000 / n=1000 |" not in table
    assert "Not shown: 1 row(s) of `results/metrics.json` measured on earlier weights" in table
    assert "`ddpm / ddpm-1000 / n=1000`" in table
    assert "| feature-FID ratio, DDPM 1000 steps | ≤ 1.5 | not measured yet |" in card  # no stale number as a target
