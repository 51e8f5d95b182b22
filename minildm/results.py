"""The results file: `results/metrics.json` rows keyed by model / sampler / scale / n, `results/metrics.md`, the README table.

A row is replaced only when it is measured again; `write_results` writes atomically. Each row records the sha256
of the checkpoint it measured; the table's "weights" column shows its first 8 hex digits and marks a row measured
on weights that are no longer shipped as "earlier" (the model cards and notebooks leave such rows out).

References: none (bookkeeping). Used by `minildm.bench` and documented in README.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from minildm.checkpoints import SHIPPED_DIR

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def row_key(row: dict) -> str:
    """e.g. "ddpm / ddim-50", "ddpm / ddim-50 trailing eta=1", "ddpm / ddim-50 eta=0.5 clipped-eps / n=1000 / seed=1",
    "ldm_cond / ddim-50 / s=1.5 in (180, 870]".

    A DDIM row names its timestep spacing and eta when they are not "leading" and 0, and "clipped-eps" when an
    unguided row recomputes eps from the clipped x0; " / n=1000" is appended when n is not 5,000, and
    " / seed=1" when the sampling seed is not 0; a guided row names the interval of t that CFG was limited to.
    """
    key = f"{row['model']} / {row['sampler']}" + ("" if row["sampler"] == "reconstruction" else f"-{row['steps']}")
    key += f" {row['timestep_spacing']}" if row.get("timestep_spacing", "leading") != "leading" else ""  # DDIM
    key += f" eta={row['eta']:g}" if row.get("eta", 0) else ""
    # unguided DDIM that recomputes eps from the clipped x0 (guided rows always do, so their keys do not say it)
    key += " clipped-eps" if row.get("ddim_eps_from_clipped_x0") and "guidance_scale" not in row else ""
    key += f" / s={row['guidance_scale']:g}" if "guidance_scale" in row else ""
    key += " in ({}, {}]".format(*row["guidance_interval"]) if row.get("guidance_interval") else ""  # CFG's t range
    key += f" / prompts={row['prompts']}" if "prompts" in row else ""          # text models: held-in / held-out
    key += f" / n={row['n_samples']}" if row.get("n_samples", 5000) != 5000 else ""
    return key + (f" / seed={row['seed']}" if row.get("seed", 0) else "")  # the sampling seed, when not 0


def write_results(rows: list[dict], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "metrics.json"
    existing = json.loads(json_path.read_text()) if json_path.exists() else {}
    existing.update({row_key(r): r for r in rows})
    existing = dict(sorted(existing.items()))  # the JSON and the table list rows in the same (sorted) order
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(existing, indent=2) + "\n")
    tmp.replace(json_path)
    md_path = out_dir / "metrics.md"
    md_path.write_text(markdown_table(existing, shipped_sha256s({r["model"] for r in existing.values()})))
    return json_path, md_path


def _fmt(value, spec=".2f"):
    return "–" if value is None else format(value, spec)


def shipped_sha256s(models, shipped_dir: Path = SHIPPED_DIR) -> dict[str, str]:
    """{model: sha256 of its shipped checkpoint}, read from each `<model>.json`; models with none are left out."""
    found = {m: shipped_dir / f"{m}.json" for m in models}
    return {m: json.loads(p.read_text())["sha256"] for m, p in found.items() if p.exists()}


def _weights(row: dict, shipped: dict[str, str]) -> str:
    sha = row.get("checkpoint_sha256")
    if sha is None:
        return "–"
    current = shipped.get(row["model"])
    return f"`{sha[:8]}`" if current in (None, sha) else f"`{sha[:8]}` earlier"


def markdown_table(results: dict, shipped: dict[str, str] | None = None) -> str:
    """The results as a Markdown table; `shipped` ({model: sha256}) marks rows measured on earlier weights."""
    shipped = shipped or {}
    lines = ["| model / sampler | n | feature-FID | floor | ratio | class acc. | attribute acc. | PSNR dB | "
             "train img/s (peer) | sample s/img | device | date | weights |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        acc = r.get("class_accuracy")
        train = f"{_fmt(r.get('train_img_per_s'), '.0f')} ({_fmt(r.get('peer_train_img_per_s'), '.0f')})"
        lines.append(f"| {key} | {r['n_samples']:,} | {_fmt(r['fid'])} | {_fmt(r['fid_floor'])} | "
                     f"{_fmt(r['fid_ratio'])} | {_fmt(acc, '.3f')} | {_fmt(r.get('attribute_accuracy'), '.3f')} | "
                     f"{_fmt(r.get('psnr_db'))} | {train} | "
                     f"{_fmt(r.get('sample_s_per_img'), '.3f')} | "
                     f"{r['device']} | {r['date']} | {_weights(r, shipped)} |")
    return "\n".join(lines) + "\n"


def update_readme(table: str, readme: Path = ROOT / "README.md") -> bool:
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{table}{README_END}{tail}")
    return True
