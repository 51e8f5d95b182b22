"""Chapter 05's training pieces: captions for every training image, a caption table, a UNet that reads caption ids.

Training reuses `minildm.training.train_diffusion` unchanged: the dataset holds `(z0, caption_id)` pairs (each image
`variants` times, with different templates and words), condition dropout replaces an id by the id of the empty
prompt "" (index 0 of the table), and `TextConditionedUNet` turns ids into token states for the UNet's
cross-attention. With the frozen encoder the table is encoded once (`CaptionTable(..., frozen=True)`); with the tiny
encoder it is encoded on every step, so the encoder trains with the UNet.

References: Rombach et al. (2022), sec. 3.3; Ho & Salimans (2022) (condition dropout).
Derived in notebooks/05_text_conditioning_cfg.ipynb.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from minildm.captions import AttributeThresholds, captions_for, wording_summary
from minildm.models.unet import UNet, UNetConfig
from minildm.training import TrainConfig


def caption_dataset(z0: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, thresholds: AttributeThresholds,
                    variants: int = 4, seed: int = 0, split: str = "train"):
    """`(TensorDataset(z0 repeated `variants` times, caption ids), captions)`; `captions[0]` is the empty prompt.

    `images` `(N, 1, 32, 32)` are the pixels the attributes are measured on, `z0` `(N, C, h, w)` their latents."""
    if not len(z0) == len(labels) == len(images):
        raise ValueError(f"z0, labels and images must have one entry per image: {len(z0)}, {len(labels)}, {len(images)}.")
    sides = thresholds.sides(images, labels)
    g = torch.Generator().manual_seed(seed)
    texts = []
    for _ in range(variants):
        texts += captions_for(labels, sides, torch.randint(0, 10_000, (len(labels),), generator=g), split)
    table = [""] + sorted(set(texts))
    index = {t: i for i, t in enumerate(table)}
    ids = torch.tensor([index[t] for t in texts])                                  # (variants * N,)
    return torch.utils.data.TensorDataset(z0.repeat(variants, 1, 1, 1), ids), table


class CaptionTable(nn.Module):
    """Caption ids -> `(states (B, L, D), mask (B, L))`. Frozen: every caption encoded once, kept in fp16 (not saved
    with the weights: it is rebuilt from the captions). Trainable: the encoder runs on each batch's captions."""

    def __init__(self, captions: list[str], encoder: nn.Module, frozen: bool, batch_size: int = 256,
                 progress: bool = True):
        super().__init__()
        self.captions, self.frozen = list(captions), frozen
        self.dim = encoder.dim
        if frozen:
            states, masks = [], []
            for i in tqdm(range(0, len(captions), batch_size), desc="encoding captions", disable=not progress):
                with torch.no_grad():
                    out = encoder(self.captions[i:i + batch_size])
                states.append(out.states.half().cpu()), masks.append(out.mask.cpu())
            self.register_buffer("states", torch.cat(states), persistent=False)   # (N, L, D) fp16
            self.register_buffer("mask", torch.cat(masks), persistent=False)      # (N, L) bool
            self.encoder = None
        else:
            self.encoder = encoder

    def forward(self, ids: torch.Tensor):
        if self.frozen:
            return self.states[ids].float(), self.mask[ids]
        out = self.encoder([self.captions[i] for i in ids.tolist()])
        return out.states, out.mask


class TextConditionedUNet(nn.Module):
    """A text UNet that takes caption ids as its condition, so `train_diffusion` can train it like a class model."""

    def __init__(self, unet: nn.Module, table: CaptionTable):
        super().__init__()
        if unet.config.cond_dim != table.dim:
            raise ValueError(f"the UNet's cross-attention expects {unet.config.cond_dim}-d token states, the captions "
                             f"are encoded to {table.dim}-d.")
        self.unet, self.table = unet, table

    @property
    def config(self):
        return self.unet.config

    def forward(self, x_t: torch.Tensor, t, ids: torch.Tensor) -> torch.Tensor:
        states, mask = self.table(ids)                                             # (B, L, D), (B, L)
        return self.unet(x_t, t, states, mask)


@dataclass(frozen=True)
class TextRecipe:
    name: str
    model: UNetConfig
    train: TrainConfig
    encoder: str = "minilm"        # "minilm": frozen, pretrained; "tiny": trained from scratch with the UNet
    latent_vae: str = "vae"
    variants: int = 4              # captions per training image (templates and words drawn per variant)
    sentence_token: bool = False   # frozen encoder: append MiniLM's mean-pooled sentence embedding as a token
    description: str = ""


# ldm_cond's UNet (8x8 -> 4x4 -> 2x2, 16/32/64 channels) with cross-attention at 4x4 and 2x2, 2 heads of 32:
# ~0.88M parameters (0.95M with pooled_text), ~7.5 steps/s at batch 128 on one CPU thread (cross-attention at 8x8
# as well: 5.7 steps/s).
_TEXT_UNET = dict(in_channels=4, out_channels=4, image_size=8, base_channels=16, channel_mults=(1, 2, 4),
                  attention=("none", "none", "full"), cross_attention=(False, True, True), heads=2, head_dim=32)
_TEXT_TRAIN = TrainConfig(steps=20_000, batch_size=128, lr=1e-3, warmup_steps=500, ema_decay=0.999,
                          checkpoint_every=500, p_uncond=0.1, hflip=False)
TEXT_RECIPES = {r.name: r for r in (
    TextRecipe("ldm_text", UNetConfig(**_TEXT_UNET, cond_dim=384, pooled_text=True), _TEXT_TRAIN, "minilm",
               sentence_token=True,
               description="text-to-image latent diffusion, frozen all-MiniLM-L6-v2 (16 tokens + the sentence "
                           "embedding, 384-d, cross-attended; their mean also added to the time embedding), CFG "
                           "(chapter 05)"),
    TextRecipe("ldm_text_tiny", UNetConfig(**_TEXT_UNET, cond_dim=128), _TEXT_TRAIN, "tiny",
               description="text-to-image latent diffusion, a word-level text transformer trained from scratch (chapter 05)"),
)}


def _encoder(recipe: TextRecipe, captions: list[str]) -> nn.Module:
    if recipe.encoder == "minilm":
        from minildm.models.text import FrozenTextEncoder
        return FrozenTextEncoder(max_length=16, sentence_token=recipe.sentence_token)
    from minildm.models.text import TinyTextEncoder
    torch.manual_seed(recipe.train.seed)
    return TinyTextEncoder.from_captions(captions, dim=recipe.model.cond_dim)


def train_text_recipe(name: str, steps: int | None = None, run_dir: str | Path = "runs", device=None,
                      export: bool = True, progress: bool = True, out_dir: str | Path | None = None,
                      max_seconds: float | None = None) -> Path:
    """Train (or resume exactly from `runs/<name>/state`) a text recipe; export the EMA UNet (and a tiny encoder)."""
    from minildm.checkpoints import SHIPPED_DIR, find, load_model, sha256_file
    from minildm.data import load_tensors
    from minildm.models.vae import VAE
    from minildm.recipes import device_description, latent_dataset
    from minildm.training import train_diffusion
    recipe = TEXT_RECIPES[name]
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = dataclasses.replace(recipe.train, steps=steps) if steps else recipe.train
    x0, labels = load_tensors("train").tensors
    thresholds = AttributeThresholds.fit(x0, labels)
    z0 = latent_dataset(recipe.latent_vae).tensors[0]
    dataset, captions = caption_dataset(z0, labels, x0, thresholds, recipe.variants, seed=cfg.seed)
    model = TextConditionedUNet(UNet(recipe.model), CaptionTable(captions, _encoder(recipe, captions),
                                                                 frozen=recipe.encoder == "minilm", progress=progress))
    state = Path(run_dir) / name / "state"
    state.parent.mkdir(parents=True, exist_ok=True)
    result = train_diffusion(model, _scheduler(), dataset, cfg, device=device, checkpoint=state, null_cond=0,
                             progress=progress, max_seconds=max_seconds)
    if not export:
        return state
    run_meta = json.loads(state.with_name("state.json").read_text())
    vae_path = find(recipe.latent_vae)
    meta = {"recipe": name, "description": recipe.description, "beta_schedule": "cosine", "prediction_type": "eps",
            "num_train_timesteps": 1000, "train_config": run_meta["train_config"], "steps": run_meta["step"],
            "images_seen": run_meta["step"] * cfg.batch_size, "wall_clock_s": round(run_meta.get("seconds", 0.0), 1),
            "device": device_description(device), "torch": torch.__version__,
            "date": datetime.date.today().isoformat(), "text_encoder": recipe.encoder, "sentence_token": recipe.sentence_token, "captions": len(captions),
            "caption_wording": wording_summary(),
            "attribute_thresholds": thresholds.values, "latent_vae": recipe.latent_vae,
            "latent_vae_sha256": sha256_file(vae_path),
            "latent_scale": load_model(VAE, vae_path).meta["latent_scale"], "clip_sample": False,
            "final_loss_avg100": round(sum(run_meta["losses"][-100:]) / max(1, len(run_meta["losses"][-100:])), 5)}
    from minildm.checkpoints import save_model
    out_dir = Path(out_dir or SHIPPED_DIR)
    ema = result.ema
    if recipe.encoder == "tiny":
        meta["text_encoder_checkpoint"] = f"{name}_encoder"
        save_model(ema.table.encoder, out_dir / f"{name}_encoder", meta={"recipe": name}, dtype=torch.float16)
    return save_model(ema.unet, out_dir / name, meta=meta, dtype=torch.float16)


def load_text_model(name: str = "ldm_text", device=None):
    """A shipped text-to-image model: `(unet, vae, text_encoder)`; refuses a VAE whose sha256 differs from the recorded one."""
    from minildm import checkpoints
    from minildm.models.text import FrozenTextEncoder, TinyTextEncoder
    unet = checkpoints.load_model(UNet, checkpoints.find(name), device=device or "cpu")
    meta = unet.meta
    if meta.get("latent_vae") is None or unet.config.cond_dim is None:
        raise checkpoints.CheckpointError(f"{name} is not a text-to-image model (no cond_dim / latent_vae).")
    vae = checkpoints.matching_vae(unet, device or "cpu", name)
    if meta.get("text_encoder") == "tiny":
        encoder = checkpoints.load_model(TinyTextEncoder, checkpoints.find(meta["text_encoder_checkpoint"]),
                                         device=device or "cpu")
    else:
        encoder = FrozenTextEncoder(max_length=16, sentence_token=meta.get("sentence_token", False)).to(device or "cpu")
    return unet, vae, encoder


def _scheduler():
    from minildm.schedulers import DDPMScheduler
    return DDPMScheduler(1000, beta_schedule="cosine", clip_sample=False)


__all__ = ["caption_dataset", "CaptionTable", "TextConditionedUNet", "TextRecipe", "TEXT_RECIPES", "train_text_recipe",
           "load_text_model"]
