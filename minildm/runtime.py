"""Run-time switches shared by the library, the notebooks and the tests.

Quick mode (`MINILDM_QUICK=1`, set by `.ci/run`) shrinks every training and sampling budget so that the
whole test suite, notebooks included, runs on a 2-core CPU in minutes. This module is the only place that
reads the variable: notebooks call `is_quick()` / `budget()`, they never parse the environment themselves.

Introduced in notebooks/00_setup_and_data.ipynb.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

QUICK_ENV = "MINILDM_QUICK"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def is_quick() -> bool:
    """True when `MINILDM_QUICK` is set to 1/true/yes/on; raises on a value that is neither on nor off."""
    value = os.environ.get(QUICK_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{QUICK_ENV}={os.environ[QUICK_ENV]!r} is not understood: use 1 (quick mode) or 0 (full run).")


def budget(full, quick):
    """Pick `quick` in quick mode and `full` otherwise, e.g. `steps = budget(full=2000, quick=20)`."""
    return quick if is_quick() else full


def default_device() -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU. Nothing in minildm hard-codes one."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU `torch.Generator` seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
