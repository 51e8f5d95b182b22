"""Checkpoints: safetensors weights + a JSON sidecar (config, metadata, sha256). Never pickle.

A checkpoint `NAME` is two files written atomically side by side:
    NAME.safetensors   the tensors (weights; for training state also EMA weights and optimiser moments)
    NAME.json          {"class": ..., "config": {...}, "sha256": <of NAME.safetensors>, "meta": {...}}
Loading verifies the sha256 first, then builds the model from its config and loads the weights strictly,
explaining any mismatch.

Shipped reference checkpoints live in `data/checkpoints/` (each with a model card `NAME.md`); `find()`
resolves a name there, or in `$MINILDM_CHECKPOINTS`.

Used from notebooks/01_ddpm_from_scratch.ipynb onwards.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_ENV = "MINILDM_CHECKPOINTS"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model. The message says which and what to do."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write `tensors` and `meta` (JSON-serialisable) atomically; returns the .safetensors path."""
    st_path, js_path = _paths(path)
    st_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    tmp_st, tmp_js = st_path.with_suffix(".safetensors.tmp"), js_path.with_suffix(".json.tmp")
    try:
        save_file(tensors, str(tmp_st))
        meta = dict(meta, sha256=sha256_file(tmp_st))
        tmp_js.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.replace(tmp_st, st_path)
        os.replace(tmp_js, js_path)
    finally:  # nothing half-written is left on disk
        for tmp in (tmp_st, tmp_js):
            tmp.unlink(missing_ok=True)
    return st_path


def load_tensors(path: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by `save_tensors`, checking that both files exist and the sha256 matches."""
    st_path, js_path = _paths(path)
    for p in (st_path, js_path):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {p} not found. Train it (`python -m minildm train --help` "
                                  f"lists the recipes) or restore it with `git checkout -- data/checkpoints`.")
    try:
        meta = json.loads(js_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{js_path} is not valid JSON ({err}): the checkpoint is corrupt.") from err
    if verify:
        digest = sha256_file(st_path)
        if meta.get("sha256") != digest:
            raise CheckpointError(f"{st_path} is corrupt: sha256 {digest} does not match {meta.get('sha256')} "
                                  f"recorded in {js_path.name}. Re-download or retrain it.")
    try:
        tensors = load_file(str(st_path))
    except Exception as err:
        raise CheckpointError(f"{st_path} cannot be read as safetensors ({err}).") from err
    return tensors, meta


def config_to_dict(config) -> dict:
    return {f.name: (list(v) if isinstance(v := getattr(config, f.name), tuple) else v)
            for f in dataclasses.fields(config)}


def config_from_dict(config_cls, data: dict):
    """Build a frozen dataclass config from JSON, with a clear error for unknown or missing fields."""
    names = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise CheckpointError(f"config has fields {unknown} that {config_cls.__name__} does not know: "
                              f"the checkpoint was written by another version of minildm.")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
    try:
        return config_cls(**kwargs)
    except TypeError as err:
        raise CheckpointError(f"cannot build {config_cls.__name__} from the checkpoint's config: {err}") from err


def save_model(model: torch.nn.Module, path: str | Path, meta: dict | None = None,
               dtype: torch.dtype | None = None) -> Path:
    """Save `model.state_dict()` (optionally cast, e.g. fp16 for shipping) with `model.config`."""
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
             for k, v in model.state_dict().items()}
    header = {"class": type(model).__name__, "config": config_to_dict(model.config), "meta": meta or {}}
    return save_tensors(path, state, header)


def load_model(model_cls, path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build `model_cls(config)` from the checkpoint's config and load its weights (float32)."""
    tensors, header = load_tensors(path)
    if header.get("class") != model_cls.__name__:
        raise CheckpointError(f"{path} holds a {header.get('class')}, not a {model_cls.__name__}.")
    config_cls = getattr(model_cls, "config_class")
    model = model_cls(config_from_dict(config_cls, header["config"]))
    load_state(model, tensors, str(path))
    model.meta = header.get("meta", {})
    return model.to(device).eval()


def load_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
    """`load_state_dict(strict=True)` with a readable explanation of missing, unexpected or mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own.keys() & tensors.keys() if tensors[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{where} does not fit {type(model).__name__}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, "
            f"{len(shapes)} shape mismatches {shapes[:5]}. Was it saved from a model with another config?")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})


def checkpoint_dirs() -> list[Path]:
    dirs = [Path(os.environ[CHECKPOINT_ENV]).expanduser()] if os.environ.get(CHECKPOINT_ENV) else []
    return dirs + [SHIPPED_DIR]


def find(name: str) -> Path:
    """Resolve a shipped checkpoint name (e.g. "classifier") to its .safetensors path."""
    for folder in checkpoint_dirs():
        candidate = folder / f"{name}.safetensors"
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(d) for d in checkpoint_dirs())
    raise CheckpointError(f"no checkpoint named {name!r} in {searched}. Shipped checkpoints come with the "
                          f"repository (git pull); or train it with `python -m minildm train {name}`.")


def matching_vae(unet: torch.nn.Module, device: str | torch.device = "cpu", name: str | None = None):
    """The VAE a latent model was trained on (`meta["latent_vae"]`), refusing one whose sha256 differs from the
    recorded `meta["latent_vae_sha256"]`: another VAE's latents mean something else. None for a pixel model."""
    from minildm.models.vae import VAE
    meta = getattr(unet, "meta", {})
    if meta.get("latent_vae") is None:
        return None
    vae_path = find(meta["latent_vae"])
    if sha256_file(vae_path) != meta.get("latent_vae_sha256"):
        name = name or meta.get("recipe", "this model")
        raise CheckpointError(
            f"{name} was trained on the latents of {meta['latent_vae']} with sha256 "
            f"{str(meta.get('latent_vae_sha256'))[:12]}..., but {vae_path} differs: its latents mean something else. "
            f"Restore the matching VAE, or retrain with `minildm train {name}`.")
    return load_model(VAE, vae_path, device=device)
