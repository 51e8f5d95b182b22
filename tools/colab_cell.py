"""The first cell of every notebook: tools/nb.py inserts it where a source says `# %% [colab]`.

On Colab, where minildm is missing, it clones the course, installs it and lets data come from the Hub; wherever
minildm is installed it does nothing (tests/test_project.py runs it to check).
"""

CELL = '''
# Colab setup: where minildm is missing (Colab), clone the course, install it, fetch data from the Hub.
# A no-op wherever minildm is installed, e.g. after the README's quick start.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minildm") is None:
    REPO = os.environ.get("MINILDM_REPO", "https://github.com/minildm/minildm")   # the course repository
    root = os.path.abspath("minildm")
    subprocess.run(["git", "clone", "--depth", "1", REPO, root], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", root], check=True)
    sys.path.insert(0, root)                       # importable in this kernel without a restart
    os.chdir(os.path.join(root, "notebooks"))      # relative paths (../results) as in the repository
    os.environ["MINILDM_ALLOW_DOWNLOAD"] = "1"     # no local Fashion-MNIST there: use the Hugging Face Hub
'''.strip("\n")
