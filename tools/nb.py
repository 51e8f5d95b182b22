"""Build the course notebooks from their percent-format sources and run them.

    python tools/nb.py build            # notebooks/_src/*.py -> notebooks/*.ipynb (no outputs)
    python tools/nb.py run 00 01        # build, then execute in place (a normal, full run) to commit outputs
    python tools/nb.py check            # fail if any .ipynb's code/markdown differs from its source

Sources use the jupytext "percent" format: `# %%` starts a code cell, `# %% [markdown]` a Markdown cell
whose lines start with `# `; `# %% [colab]` is the Colab setup cell, written once in tools/colab_cell.py. Editing the .py source and rebuilding keeps diffs readable.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colab_cell import CELL as COLAB_CELL  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SRC, OUT = ROOT / "notebooks" / "_src", ROOT / "notebooks"


def parse(text: str) -> list[tuple[str, str]]:
    cells, kind, lines = [], None, []

    def flush():
        if kind is not None:
            body = "\n".join(lines).strip("\n")
            cells.append((kind, body))

    for line in text.splitlines():
        if line.startswith("# %% [colab]"):  # the one Colab setup cell, kept in tools/colab_cell.py
            flush()
            kind, lines = "code", COLAB_CELL.splitlines()
            continue
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
            continue
        if kind == "markdown":
            line = line[2:] if line.startswith("# ") else line.lstrip("#")
        if kind is not None:
            lines.append(line)
    flush()
    return cells


def to_notebook(src: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    for i, (kind, body) in enumerate(parse(src.read_text())):
        cell = nbformat.v4.new_markdown_cell(body) if kind == "markdown" else nbformat.v4.new_code_cell(body)
        cell["id"] = f"c{i:03d}"  # stable ids keep rebuilt notebooks' diffs small
        nb.cells.append(cell)
    return nb


def target_of(src: Path) -> Path:
    """notebooks/_src/NN_x.py -> notebooks/NN_x.ipynb; notebooks/_src/solutions/NN_x.py -> notebooks/solutions/NN_x.ipynb"""
    return OUT / src.relative_to(SRC).with_suffix(".ipynb")


def sources(names: list[str]) -> list[Path]:
    found = sorted(SRC.glob("*.py")) + sorted((SRC / "solutions").glob("*.py"))
    if names:
        found = [p for p in found if any(p.stem.startswith(n) for n in names)]
    if not found:
        sys.exit(f"no notebook sources match {names} in {SRC}")
    return found


def build(names: list[str], force: bool = False) -> list[Path]:
    """Write each source's notebook, without outputs. A notebook whose cells already equal its source is left
    alone (its committed outputs are kept) unless `force` (what `run` does before executing it)."""
    built = []
    for src in sources(names):
        target = target_of(src)
        if not force and target.exists() and not _differs(src):
            print(f"up to date {target.relative_to(ROOT)} (outputs kept)")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(to_notebook(src), target)
        built.append(target)
        print(f"built {target.relative_to(ROOT)}")
    return built


WIDGET = "application/vnd.jupyter.widget-view+json"


def drop_progress_widgets(path: Path) -> int:
    """Remove tqdm widget outputs: run headless they are saved in their first state ("0%"), which on GitHub
    reads as a loop that never ran. Each loop in the notebooks prints its own summary line instead."""
    nb = nbformat.read(path, as_version=4)
    dropped = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            kept = [o for o in cell.outputs if WIDGET not in o.get("data", {})]
            dropped += len(cell.outputs) - len(kept)
            cell.outputs = kept
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    return dropped


def run(names: list[str]) -> None:
    for target in build(names, force=True):
        start = time.time()
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
                        "--ExecutePreprocessor.timeout=7200", str(target)], check=True, cwd=target.parent)
        dropped = drop_progress_widgets(target)
        seconds = time.time() - start
        record_time(target, seconds)
        print(f"ran {target.name} in {seconds:.0f} s ({dropped} progress-bar widgets dropped)")


def record_time(target: Path, seconds: float) -> None:
    """Merge this run's wall-clock into results/notebooks.json: the README's "default CPU time" column."""
    import datetime
    import json
    import os
    import platform
    path = ROOT / "results" / "notebooks.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    threads = os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count())
    times[str(target.relative_to(OUT))] = {
        "seconds": round(seconds), "quick": os.environ.get("MINILDM_QUICK", "0") == "1",
        "machine": f"{platform.machine()}, {threads} threads", "date": datetime.date.today().isoformat()}
    path.write_text(json.dumps(dict(sorted(times.items())), indent=2) + "\n")
    sys.path.insert(0, str(ROOT / "tools"))
    import readme_times  # the README's "default CPU time" column
    readme_times.main()


def _differs(src: Path) -> bool:
    target = target_of(src)
    want = [(k, b) for k, b in parse(src.read_text())]
    have = [(c.cell_type, c.source) for c in nbformat.read(target, as_version=4).cells] if target.exists() else []
    return want != have


def check(names: list[str]) -> int:
    bad = 0
    for src in sources(names):
        if _differs(src):
            print(f"{target_of(src).relative_to(ROOT)} differs from {src.name}: run `python tools/nb.py run {src.stem[:2]}`")
            bad += 1
    return bad


if __name__ == "__main__":
    cmd, *args = sys.argv[1:] or ["build"]
    if cmd == "build":
        build(args)
    elif cmd == "run":
        run(args)
    elif cmd == "check":
        sys.exit(1 if check(args) else 0)
    else:
        sys.exit(__doc__)
