"""The repository's promises: environment.yml agrees with pyproject, README quick start matches CI."""
import re
import sys
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_agrees_with_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    major, minor = map(int, python.split("=")[1].split(".")[:2])
    required = _pyproject()["project"]["requires-python"]
    low = tuple(map(int, re.match(r">=\s*(\d+)\.(\d+)", required).groups()))
    assert (major, minor) >= low, f"environment.yml python {major}.{minor} below requires-python {required}"
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-e .[dev]" in pip_section, "environment.yml must install the package with its dev extra"
    conda_names = {re.split(r"[=<>]", d)[0] for d in deps if isinstance(d, str)} - {"python", "pip"}
    declared = {re.split(r"[=<>\[ ;]", d)[0].lower() for d in _pyproject()["project"]["dependencies"]}
    assert conda_names <= declared, f"conda packages {conda_names - declared} missing from pyproject"


def test_dev_extra_has_the_test_tools():
    dev = {re.split(r"[=<>\[ ;]", d)[0].lower() for d in _pyproject()["project"]["optional-dependencies"]["dev"]}
    assert {"pytest", "nbval", "jupyterlab", "ipykernel", "ipywidgets"} <= dev


def test_readme_quick_start_is_three_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```(?:bash)?\n(.*?)```", readme, re.S)
    assert block, "README needs a '## Quick start' section with one code block"
    commands = [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(commands) == 3, commands
    assert commands[0].strip() == 'pip install -e ".[dev]"'
    assert commands[2].strip() == "pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    # CI installs what the README installs, plus the optional [demo] extra so that the demo tests run there too
    assert 'pip install -e ".[dev,demo]"' in ci and re.search(r"^\s*pytest\b", ci, re.M)


def test_python_version_supported():
    assert sys.version_info >= (3, 10)


def test_notebooks_match_their_sources_and_carry_outputs():
    import importlib.util
    import json
    spec = importlib.util.spec_from_file_location("nb", ROOT / "tools" / "nb.py")
    nb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nb)
    assert nb.check([]) == 0, "a notebook differs from notebooks/_src: rebuild it with tools/nb.py run NN"
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        outputs = [o for c in cells for o in c.get("outputs", [])]
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} has no figure in its outputs"
        assert not any(o.get("output_type") == "error" for o in outputs), f"{path.name} was saved with an error"


def test_notebook_sources_are_clean_percent_format():
    # a LaTeX command written in a Python string without a raw prefix loses its backslash ("\text" -> tab + "ext",
    # "\frac" -> form feed + "rac"); the Markdown then renders broken maths, so catch the control characters
    bad, uncommented = {}, {}
    for path in sorted((ROOT / "notebooks" / "_src").rglob("*.py")):
        kind = None
        for i, line in enumerate(path.read_text().split("\n"), 1):  # not splitlines: it splits at \f too
            if any(ord(ch) < 32 for ch in line):
                bad.setdefault(path.name, []).append(i)
            if line.startswith("# %%"):
                kind = "markdown" if "[markdown]" in line else "code"
            elif kind == "markdown" and line.strip() and not line.startswith("#"):
                uncommented.setdefault(path.name, []).append(i)  # jupytext would read it as code
    assert not bad, f"control characters (a lost backslash?) at lines {bad}"
    assert not uncommented, f"Markdown lines without '# ' (percent format) at lines {uncommented}"


def test_every_notebook_starts_with_the_colab_cell_which_is_a_no_op_here(tmp_path, monkeypatch):
    import json
    import os
    cells = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        first = json.loads(path.read_text())["cells"][0]
        source = "".join(first["source"])
        assert first["cell_type"] == "code" and "Colab setup" in source and 'find_spec("minildm")' in source, path.name
        cells.append(source)
    assert len(set(cells)) == 1                  # one cell, the same everywhere: tools/colab_cell.py
    assert cells[0] == (ROOT / "tools" / "colab_cell.py").read_text().split("\'\'\'")[1].strip("\n")
    monkeypatch.chdir(tmp_path)
    before = (os.getcwd(), dict(os.environ))
    exec(cells[0], {})                           # minildm is installed here: nothing may happen
    assert (os.getcwd(), dict(os.environ)) == before and not (tmp_path / "minildm").exists()
