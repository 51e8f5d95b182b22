"""Fill the README course table's "default CPU time" cells from results/notebooks.json (written by tools/nb.py run).

    python tools/readme_times.py
"""
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    times = json.loads((ROOT / "results" / "notebooks.json").read_text())
    readme = ROOT / "README.md"

    def cell(m: re.Match) -> str:
        t = times.get(m.group(1))
        text = "" if t is None else f"{t['seconds'] / 60:.0f} min ({t['machine']})"
        return f"<!--t:{m.group(1)}-->{text}"

    readme.write_text(re.sub(r"<!--t:([\w.]+)-->[^|]*", lambda m: cell(m) + " ", readme.read_text()))


if __name__ == "__main__":
    main()
