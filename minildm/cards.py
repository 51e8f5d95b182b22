"""Model cards written from what was measured: the checkpoint's JSON metadata and `results/metrics.json`.

    python -m minildm card ddpm      # rewrites data/checkpoints/ddpm.md

A card never carries a number typed by hand: training facts come from the checkpoint (recipe, steps,
images seen, wall-clock, device), quality and speed from the rows `minildm bench` wrote.

References: Mitchell et al. (2019), "Model Cards for Model Reporting".
Used by the README's results section and each chapter's reference checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from minildm.checkpoints import SHIPPED_DIR, find, load_tensors

RESULTS_JSON = Path(__file__).resolve().parent.parent / "results" / "metrics.json"

# target name -> (label, goal, fn(rows of the card's weights, every row of results/metrics.json))
TARGETS = {
    "ddpm": [
        ("feature-FID ratio, DDPM 1000 steps", "≤ 1.5", lambda rows, every: _ratio(rows, "ddpm / ddpm-1000")),
        ("the same, sampled again with seed 1", "≤ 1.5", lambda rows, every: _ratio(rows, "ddpm / ddpm-1000", seed=1)),
        ("DDIM-50 FID within 1.25x of DDPM-1000 FID (same n; leading spacing, eta 0)", "≤ 1.25",
         lambda rows, every: _ch01("ddim_vs_ddpm")(rows)),
        ("the same, best DDIM-50 setting measured (spacing, eta, eps from clipped x0)", "≤ 1.25",
         lambda rows, every: _ch01("ddim_vs_ddpm")(rows, best=True)),
        ("that setting checked on a fresh sampling seed (seed 1: DDIM-50 and DDPM-1000 both resampled)", "≤ 1.25",
         lambda rows, every: _ch01("ddim_vs_ddpm")(rows, best=True, seed=1)),
        ("that setting, mean FID over the seeds not used to pick it / DDPM-1000's mean FID over its seeds (same n)",
         "≤ 1.25", lambda rows, every: _ch01("ddim_vs_ddpm_mean")(rows)),
        ("training speed vs diffusers UNet2DModel (same layout)", "≥ 1.3x",
         lambda rows, every: _latest(rows, "speedup_vs_peer")),
    ],
    "ddpm_cond": [
        ("class accuracy at the best guidance scale (n ≥ 5,000)", "≥ 0.90",
         lambda rows, every: (_best_guided(rows) or {}).get("class_accuracy")),
        ("feature-FID ratio at that scale (n ≥ 5,000)", "≤ 1.5", lambda rows, every: (_best_guided(rows) or {}).get("fid_ratio")),
        ("the best row (sampler, guidance scale)", "", lambda rows, every: _best_scale_of(rows)),
        ("the same ratio on other sampling seeds (`--seed N`; the row was chosen on seed 0, so their mean is the "
         "fair estimate)", "≤ 1.5", lambda rows, every: _other_seeds(rows, _best_guided(rows))),
        ("meanwhile at n = 1,000 (not the target's n: the floor is larger there, so ratios read much lower than "
         "at 5,000): the best scale's class accuracy, FID ratio", "",
         lambda rows, every: _guided_summary(_best_guided(rows, min_n=1000, max_n=1000))),
        ("training speed vs chapter 02's standard diffusers recipe (UNet2DModel 32-64-128-256, class embeddings), "
         "per machine", "> 1x", lambda rows, every: _speed_by_device(rows)),
        ("that recipe trained on the same budget (`minildm train ddpm_cond_peer --steps` to the images seen here), "
         "measured like the best scale's row: FID ratio and class accuracy, minildm vs diffusers",
         "better on both", lambda rows, every: _vs_peer(rows, every)),
        ("meanwhile, both trained from scratch on a smaller equal budget (`python -m minildm.studies train "
         "ddpm_cond_peer --steps N`, then `eval`, and the same for ddpm_cond; `results/equal_images.json`): "
         "FID ratio and class accuracy, minildm vs diffusers", "",
         lambda rows, every: _study("equal_images_summary")()),
        ("capacity: ddpm_cond_wide (widths 32-64-128-256, 7.95M parameters) vs this model at equal steps of the same "
         "recipe and seeds (`tools/width_study.py`; `results/width_study.json`): FID ratio and class accuracy", "",
         lambda rows, every: _study("equal_images_summary")(_study("WIDTH_RESULTS"), "ddpm_cond_wide",
                                                           "ddpm_cond")),
        ("capacity near the shipped budget: ddpm_cond_wide after its 40,000-step recipe (commands: README.md, "
         "Reproducing the checkpoints) vs this model's row measured alike (`results/metrics.json`), ddpm_cond_wide first", "",
         lambda rows, every: _vs_alike(rows, every, "ddpm_cond_wide")),
    ],
    "ldm_cond": [
        ("training images/s vs the pixel model (ddpm_cond), same machine", "≥ 10x",
         lambda rows, every: (_best_guided(rows) or {}).get("train_speedup_vs_pixel")),
        ("sampling s/image vs the pixel model (batch of 64, DDIM-50, CFG)", "≥ 10x",
         lambda rows, every: (_best_guided(rows) or {}).get("sample_speedup_vs_pixel")),
        ("FID / the VAE's reconstruction FID at the same n (n ≥ 5,000)", "≤ 1.5",
         lambda rows, every: (_best_guided(rows) or {}).get("fid_over_vae_recon_fid")),
        ("class accuracy at the best guidance scale (n ≥ 5,000)", "",
         lambda rows, every: (_best_guided(rows) or {}).get("class_accuracy")),
        ("the best row (sampler, guidance scale)", "", lambda rows, every: _sampler_label(_best_guided(rows))),
        ("the same ratio, that row sampled again with seed 1 (a check on a setting chosen on seed 0)", "≤ 1.5",
         lambda rows, every: (_same_on_seed(rows, _best_guided(rows)) or {}).get("fid_over_vae_recon_fid")),
        ("the same FID over the VAE floor measured on n training images instead (seeds 0 and 1: how much the floor "
         "moves with the images reconstructed)", "", lambda rows, every: _train_floor_ratios(_best_guided(rows))),
        ("FID at 15 training minutes, latent / pixel (from scratch, n = 5,000)", "< 1", lambda rows, every: _study("equal_time_ratio")(15)),
        ("FID at 60 training minutes, latent / pixel (from scratch, n = 5,000)", "< 1", lambda rows, every: _study("equal_time_ratio")(60)),
    ],
}


def _study(name):
    """A summary function of `minildm.studies` (imported when a card needs it: the studies read their own results)."""
    from minildm import studies
    return getattr(studies, name)


def _ch01(name):
    """A comparison of `minildm.cards_ddpm` (imported when a card needs it: that module builds on this one)."""
    from minildm import cards_ddpm
    return getattr(cards_ddpm, name)


def _row(rows, prefix, seed: int = 0):
    """The row whose key is `prefix` or `prefix / n=...` (the largest n when several) sampled with `seed`."""
    found = [r for k, r in rows.items() if (k == prefix or k.startswith(prefix + " / n=")) and r.get("seed", 0) == seed]
    return max(found, key=lambda r: r["n_samples"], default={})


def _ratio(rows, key, seed: int = 0):
    return _row(rows, key, seed).get("fid_ratio")


def _latest(rows, field):
    """`field` of the most recently measured row that has it (rows of one model; ties: the last key)."""
    found = [r for r in rows.values() if r.get(field) is not None]
    return max(found, key=lambda r: r.get("date", ""), default={}).get(field)


def _speed_by_device(rows, field: str = "speedup_vs_peer"):
    """`field` of the latest row measured on each machine, e.g. "2.17x on NVIDIA H200; 6.12x on Intel Xeon, 2 threads":
    the ratio depends on the machine (a small UNet gains less on a GPU, where kernel launches dominate)."""
    latest = {}
    for key, r in sorted(rows.items()):
        if r.get(field) is not None and r.get("date", "") >= latest.get(r.get("device"), {}).get("date", ""):
            latest[r.get("device")] = r
    return "; ".join(f"{r[field]:.2f}x on {device}" for device, r in sorted(latest.items(), key=lambda kv: str(kv[0]))) or None


def _best_guided(rows, min_n: int = 5000, max_n: int | None = None):
    """Among guided rows with `min_n` <= n <= `max_n` sampled with seed 0: the lowest FID ratio with accuracy >= 0.9,
    else the highest accuracy. (Rows on another seed check a choice; they are not candidates for it: see
    `_same_on_seed`. A ratio depends on n, since the floor does: give `max_n` to compare rows of one n only.)"""
    rows = [r for r in rows.values() if min_n <= r.get("n_samples", 0) <= (max_n or float("inf"))
            and r.get("class_accuracy") is not None and not r.get("seed")]
    good = [r for r in rows if r["class_accuracy"] >= 0.9]
    if good:
        return min(good, key=lambda r: r["fid_ratio"])
    return max(rows, key=lambda r: r["class_accuracy"], default=None)


def _best_scale_of(rows, min_n: int = 5000):
    """E.g. "ddim-50, s = 2 (of the scales measured at n ≥ 5,000: 2, 3)": the best row's sampler and scale, and the
    scales it was chosen from."""
    best = _best_guided(rows, min_n)
    if not best:
        return None
    scales = sorted({r["guidance_scale"] for r in rows.values() if r.get("n_samples", 0) >= min_n
                     and r.get("class_accuracy") is not None and not r.get("seed")})
    return f"{_sampler_label(best)} (of the scales measured at n ≥ {min_n:,}: {', '.join(f'{s:g}' for s in scales)})"


def _guided_summary(row):
    """E.g. "ddim-50, s = 2: accuracy 0.967, FID ratio 2.90 (n = 1,000)"."""
    if not row:
        return None
    return (f"{_sampler_label(row)}: accuracy {row['class_accuracy']:.3f}, FID ratio {row['fid_ratio']:.2f} "
            f"(n = {row['n_samples']:,})")


def _same_on_seed(rows, row, seed: int = 1):
    """The row measured like `row` (same model, sampler, steps, scale, interval, n) but with sampling seed `seed`."""
    if not row:
        return None
    same = [r for r in rows.values() if r.get("seed") == seed and _same_setting(r, row)]
    return same[0] if same else None


def fresh_seeds(rows, row) -> list[dict]:
    """The rows measured like `row` (`_same_setting`) on sampling seeds other than 0, by seed: checks of a setting
    chosen on seed 0."""
    if not row:
        return []
    return sorted((r for r in rows.values() if r.get("seed") and _same_setting(r, row)), key=lambda r: r["seed"])


def _other_seeds(rows, row, key: str = "fid_ratio"):
    """E.g. "1.90 (seed 1), 1.80 (seed 2); mean 1.85": `key` of the rows measured like `row` on seeds other than 0."""
    others = fresh_seeds(rows, row)
    if not others:
        return None
    each = ", ".join(f"{r[key]:.2f} (seed {r['seed']})" for r in others)
    return each if len(others) == 1 else f"{each}; mean {sum(r[key] for r in others) / len(others):.2f}"


def _same_setting(a: dict, b: dict) -> bool:
    """Measured alike (model, sampler, steps, scale, interval, spacing, eta, clipped eps, n), seed aside."""
    fields = ("model", "sampler", "steps", "guidance_scale", "guidance_interval", "timestep_spacing", "eta",
              "ddim_eps_from_clipped_x0", "n_samples")
    return all(a.get(f) == b.get(f) for f in fields)


def _vs_peer(rows, every, peer: str = "ddpm_cond_peer"):
    """The best guided row (n >= 5,000) against the peer's row measured alike on the same training budget, e.g.
    "FID ratio 1.40 vs 2.10, accuracy 0.950 vs 0.900: better on both (1,344,000 images each)"."""
    best = _best_guided(rows)
    if not best:
        return None
    same = [r for r in every.values() if r.get("model") == peer and _same_setting({**r, "model": best["model"]}, best)
            and r.get("seed", 0) == best.get("seed", 0)]
    budget = best.get("train_images_seen")
    matched = [r for r in same if budget is not None and r.get("train_images_seen") == budget]
    if not matched:
        have = sorted({r.get("train_images_seen") or 0 for r in same})
        return (f"not measured yet: no {peer} row like the best one at {budget or 0:,} images seen"
                + (f" (there are rows at {', '.join(f'{b:,}' for b in have)})" if have else ""))
    p = matched[0]
    better = best["fid_ratio"] < p["fid_ratio"] and best["class_accuracy"] > p["class_accuracy"]
    return (f"FID ratio {best['fid_ratio']:.2f} vs {p['fid_ratio']:.2f}, accuracy {best['class_accuracy']:.3f} vs "
            f"{p['class_accuracy']:.3f}: {'better on both' if better else 'not better on both'} ({budget:,} images each)")


def _vs_alike(rows: dict, every: dict, other: str, min_n: int = 5000) -> str | None:
    """Each seed-0 row of checkpoint `other` (n >= `min_n`, in `every`) beside the card's own row measured alike
    (`_same_setting`): "ddim-50, s = 1.25: FID ratio 1.89 vs 1.96, accuracy 0.948 vs 0.942 (5,120,000 vs
    4,928,000 images; n = 5,000)", or None when no pair was measured. E.g. ddpm_cond_wide on ddpm_cond's card."""
    out = []
    for o in (r for r in every.values() if r.get("model") == other and r["n_samples"] >= min_n and not r.get("seed")):
        for m in (r for r in rows.values() if not r.get("seed") and _same_setting({**r, "model": other}, o)):
            out.append(f"{_sampler_label(o)}: FID ratio {o['fid_ratio']:.2f} vs {m['fid_ratio']:.2f}, accuracy "
                       f"{o['class_accuracy']:.3f} vs {m['class_accuracy']:.3f} ({o.get('train_images_seen') or 0:,} "
                       f"vs {m.get('train_images_seen') or 0:,} images; n = {o['n_samples']:,})")
    return "; ".join(out) or None


def _train_floor_ratios(row):
    """E.g. "1.30 / 1.47 (floors 0.538 / 0.475)": the best row's FID over the VAE's reconstruction FID of the
    real-vs-real floor's training subsets (seeds 0 and 1), which `bench_ldm_cond` records beside the test-image floor."""
    floors = (row or {}).get("vae_recon_fid_train_same_n")
    if not floors:
        return None
    return (" / ".join(f"{row['fid'] / f:.2f}" for f in floors) + " (floors "
            + " / ".join(f"{f:.3f}" for f in floors) + ")")


def _sampler_label(row):
    """E.g. "ddpm-1000, s = 1.25" or "ddim-50 trailing eta 1, s = 2": which row the targets above are read from."""
    if not row:
        return None
    sampler = f"{row['sampler']}-{row['steps']}"
    if row["sampler"] == "ddim" and (row.get("timestep_spacing", "leading") != "leading" or row.get("eta")):
        sampler += f" {row.get('timestep_spacing', 'leading')} eta {row.get('eta', 0):g}"
    interval = " for t in ({}, {}]".format(*row["guidance_interval"]) if row.get("guidance_interval") else ""
    return f"{sampler}, s = {row['guidance_scale']:g}{interval}"


def _div(a, b):
    return None if a is None or b is None else a / b


def _fmt(value, spec=".2f"):
    return "not measured yet" if value is None else format(value, spec if isinstance(value, float) else "")


def current_rows(rows: dict, sha256: str) -> tuple[dict, dict]:
    """Split bench rows into those measured on these weights and those measured on earlier ones.

    A row records the sha256 of the checkpoint it measured (`checkpoint_sha256`); rows older than that field
    carry none and count as current. A card states only numbers of the weights it describes."""
    stale = {k: r for k, r in rows.items() if r.get("checkpoint_sha256") not in (None, sha256)}
    return {k: r for k, r in rows.items() if k not in stale}, stale


def _stale_note(stale: dict) -> str:
    return (f"Not shown: {len(stale)} row(s) of `results/metrics.json` measured on earlier weights "
            f"(another checkpoint sha256): {', '.join(f'`{k}`' for k in sorted(stale))}. Measure them again to list them.")


def write_card(name: str, results_path: Path = RESULTS_JSON, out_dir: Path = SHIPPED_DIR) -> Path:
    _, header = load_tensors(find(name), verify=True)
    meta, config = header.get("meta", {}), header["config"]
    rows = json.loads(results_path.read_text()) if results_path.exists() else {}
    all_rows, rows = rows, {k: v for k, v in rows.items() if k.startswith(f"{name} /")}
    rows, stale = current_rows(rows, header["sha256"])  # load_tensors verified it against the file
    note = [_stale_note(stale), ""] if stale else []
    from minildm.cards_latent import text_card, vae_card  # chapters 03 and 05 (they use this module's helpers)
    if meta.get("text_encoder"):
        path = out_dir / f"{name}.md"
        path.write_text("\n".join(text_card(name, header, rows, all_rows) + note))
        return path
    if header["class"] == "VAE":
        path = out_dir / f"{name}.md"
        path.write_text("\n".join(vae_card(name, header, rows) + note))
        return path
    tc = meta.get("train_config", {})
    from minildm.recipes import DIFFUSION_RECIPES   # the recipe as the code defines it (a resumed run may differ)
    rc = dataclasses.asdict(DIFFUSION_RECIPES[name].train) if name in DIFFUSION_RECIPES else tc
    hours = meta.get("wall_clock_s", 0) / 3600
    lines = [
        f"# Model card: `{name}` ({header['class']})", "",
        f"{meta.get('description', '')}. Files: `{name}.safetensors` (EMA weights, fp16), `{name}.json` (config, "
        f"sha256, the metadata below). Load with `minildm.checkpoints.load_model({header['class']}, minildm.checkpoints.find('{name}'))`.",
        "", "This card is generated by `python -m minildm card " + name + "` from the checkpoint's metadata and the "
        "rows `minildm bench` wrote to `results/metrics.json`; no number in it is typed by hand.", "",
        "## Recipe", "", "```bash", f"python -m minildm train {name} --threads 1   # resumes runs/{name}/state if present",
        "```", "",
        f"- Scheduler: DDPM, T = {meta.get('num_train_timesteps')}, {meta.get('beta_schedule')} schedule, "
        f"predicts {meta.get('prediction_type')}.",
        f"- Optimiser: AdamW, lr {rc.get('lr')}, warm-up {rc.get('warmup_steps')} steps, batch {rc.get('batch_size')}, "
        f"loss {rc.get('loss')}, grad clip {rc.get('grad_clip')}, EMA {rc.get('ema_decay')}, random flips: {rc.get('hflip')}.",
        (f"- Recipe length: {rc.get('steps'):,} steps" + (f"; the lr decays to 0 (cosine) over the last "
                                                          f"{rc['decay_steps']:,}" if rc.get("decay_steps") else "")
         + "." if rc.get("steps") else "- Recipe length: unknown."),
        f"- Model: {header['class']}, config `{json.dumps(config)}`.", "",
        "## Training so far", "",
        f"- Steps: **{meta.get('steps', 0):,}** ({meta.get('images_seen', 0):,} images seen, "
        f"{meta.get('images_seen', 0) / 60000:.1f} epochs).",
        f"- Wall-clock: {meta.get('wall_clock_s', 0):,.0f} s ({hours:.2f} h) "
        + (f"in all, the last part on {meta.get('device')} (each part's machine below)"
           if any("those from it on" in c for c in meta.get("changes", [])) else f"on {meta.get('device')}") + "; torch "
        f"{meta.get('torch')}; exported {meta.get('date')}.",
        f"- Mean loss over the last 100 steps: {meta.get('final_loss_avg100')}.",
        *(["- Precision: the forward pass under bf16 autocast (`--precision bf16`); weights, optimiser and loss in fp32."]
          if tc.get("precision") == "bf16" else []),
        *[f"- Recipe change during training: {c}." for c in meta.get("changes", [])], "",
        "## Measured (`minildm bench`)", "",
        "| sampler | n | feature-FID | floor (same n) | ratio | class acc. | sample s/img | train img/s (peer; pixel model for latent models) | device | date |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in sorted(rows.items()):
        acc = r.get("class_accuracy")
        other = r.get("peer_train_img_per_s") or r.get("pixel_train_img_per_s")  # diffusers peer, or the pixel model
        train = (f"{r['train_img_per_s']:.0f} ({'–' if other is None else format(other, '.0f')})"
                 if r.get("train_img_per_s") else "–")
        lines.append(f"| {key.split(' / ', 1)[1]} | {r['n_samples']:,} | {r['fid']:.3f} | {r['fid_floor']:.3f} | "
                     f"{r['fid_ratio']:.2f} | {'–' if acc is None else format(acc, '.3f')} | "
                     f"{r.get('sample_s_per_img', float('nan')):.3f} | {train} | {r['device']} | {r['date']} |")
    if not rows:
        lines.append("| not measured yet | | | | | | | | | |")
    if stale:
        lines.append(f"\n{_stale_note(stale)}")
    timed = [(r["date"], key, r) for key, r in rows.items() if r.get("sample_s_per_img_ddpm1000") is not None]
    if timed:  # both samplers timed side by side in one run: the latest such run
        _, key, r = max(timed)
        lines.append(f"\nSampling time per image on {r['device']} ({key.split(' / ', 1)[1]} row): DDIM-50 "
                     f"{r['sample_s_per_img_ddim50']:.3f} s, DDPM-1000 {r['sample_s_per_img_ddpm1000']:.3f} s.")
    scales = sorted({r["guidance_scale"] for r in rows.values() if "guidance_scale" in r})
    sweep = (" --guidance-scale " + " ".join(f"{s:g}" for s in scales)) if scales else ""
    ddpm_n = max((r["n_samples"] for r in rows.values() if r.get("sampler") == "ddpm"), default=1000)
    dpm = ("one named `dpm++2m-100` adds `--sampler dpm++2m --steps 100` (DPM-Solver++(2M)), "
           if any(r.get("sampler") == "dpm++2m" for r in rows.values()) else "")
    lines += ["", "Commands: `python -m minildm bench " + name + sweep + " -n 5000` (DDIM-50) and "
              "`python -m minildm bench " + name + sweep + f" --sampler ddpm -n {ddpm_n}` (DDPM-1000); a row named "
              "`ddim-100` adds `--steps 100`, " + dpm + "a DDIM row "
              "named `trailing` or `eta=...` adds `--spacing trailing` or `--eta ...`, one named `clipped-eps` adds "
              "`--clipped-eps`, one with `s=3 in (100, 600]` adds `--guidance-scale 3 --guidance-interval 100 600`, and one "
              "ending in `/ seed=1` adds `--seed 1`.", "",
              "## Targets", "", "| target | goal | measured |", "|---|---|---|"]
    for label, goal, fn in TARGETS.get(name, []):
        lines.append(f"| {label} | {goal} | {_fmt(fn(rows, all_rows))} |")
    lines += ["", "Feature-FID uses the course classifier's features (`classifier.md`), not Inception: compare it only "
              "within this course, always beside the real-vs-real floor at the same n.", ""]
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(lines))
    return path
