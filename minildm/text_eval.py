"""Chapter 05's harness: prompt sets (held-in and held-out wording) and what a text-to-image model gets right.

A prompt set draws, for each sample, a class and a side (-1, 0, +1) for each attribute, and writes the caption
with the training templates and words (`split="train"`, held-in) or with templates and words never used in
training (`split="heldout"`). Scores: class accuracy (the course classifier on the generated image against the
requested class), attribute accuracy (each requested attribute on the asked side of its class median, measured
by `minildm.captions.measure` — the functions that wrote the training captions), and feature-FID.

    python -m minildm bench ldm_text -n 5000        # rows "ldm_text / ddim-50 / s=4 / prompts=train" and "=heldout"

References: Ho & Salimans (2022); the harness of `minildm.metrics`. Derived in notebooks/05_text_conditioning_cfg.ipynb.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from minildm.captions import ATTRIBUTES, AttributeThresholds, captions_for
from minildm.models.layers import masked_mean


def prompt_set(n: int, split: str = "train", seed: int = 0) -> tuple[list[str], torch.Tensor, dict]:
    """`(prompts, labels (n,), sides attribute -> (n,))`: balanced classes, each attribute asked 2/3 of the time."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    sides = {a: torch.randint(-1, 2, (n,), generator=g) for a in ATTRIBUTES}
    variants = torch.randint(0, 10_000, (n,), generator=g)
    return captions_for(labels, sides, variants, split), labels, sides


@torch.no_grad()
def generate_batched(unet, vae, encoder, scheduler, prompts: list[str], guidance_scale: float, steps: int,
                     seed: int = 0, batch_size: int = 250, device=None) -> torch.Tensor:
    """Images for many prompts, in batches, with one seeded generator (for metrics). CPU images in [-1, 1]."""
    from minildm.pipelines.text import text_to_image
    g = torch.Generator().manual_seed(seed)
    return torch.cat([text_to_image(unet, vae, encoder, scheduler, prompts[i:i + batch_size], None, guidance_scale, g,
                                    steps, device=device, progress=False).images.cpu()
                      for i in range(0, len(prompts), batch_size)])


@torch.no_grad()
def cross_attention_maps(unet, x_t: torch.Tensor, t, states: torch.Tensor, mask: torch.Tensor) -> dict:
    """Which prompt tokens each latent position attends to, in every cross-attention layer of one UNet call.

    Returns layer name -> weights `(B, heads, HW, L)` (rows sum to 1 over the real tokens; padding gets 0), by
    re-running each `CrossAttention` on the inputs it received with `return_weights=True` (forward hooks)."""
    from minildm.models.layers import CrossAttention
    maps, hooks = {}, []

    def hook(name):
        def fn(module, args, kwargs, out):
            x, cond = args[0], args[1]
            m = args[2] if len(args) > 2 else kwargs.get("mask")
            maps[name] = module.forward(x, cond, m, return_weights=True)[1]   # .forward: no hook recursion
        return fn

    for name, module in unet.named_modules():
        if isinstance(module, CrossAttention):
            hooks.append(module.register_forward_hook(hook(name), with_kwargs=True))
    if not hooks:
        raise ValueError("this UNet has no cross-attention layers (config.cond_dim is None).")
    try:
        unet(x_t, t, states, mask)
    finally:
        for h in hooks:
            h.remove()
    return maps


def score(images: torch.Tensor, labels: torch.Tensor, sides: dict, thresholds: AttributeThresholds) -> dict:
    """Class accuracy and attribute accuracy (overall and per attribute) of generated images."""
    from minildm import metrics
    acc = metrics.class_accuracy(images, labels)
    agree = thresholds.agrees(images, labels, sides)
    per = {a: float(ok[asked].float().mean()) for a, (ok, asked) in agree.items()}
    hits = sum(int(ok[asked].sum()) for ok, asked in agree.values())
    asked = sum(int(asked.sum()) for _, asked in agree.values())
    return {"class_accuracy": round(acc["overall"], 4),
            "class_accuracy_per_class": [round(a, 4) for a in acc["per_class"]],   # held-out: one noun per class
            "attribute_accuracy": round(hits / max(1, asked), 4),
            "attribute_accuracy_per_attribute": {a: round(v, 4) for a, v in per.items()}}


def bench_text(name: str, n: int, steps: int, guidance_scale: float, device=None, split: str = "train") -> dict:
    """One harness row for a shipped text-to-image model on one prompt set."""
    from minildm import metrics
    from minildm.bench import schedulers_for
    from minildm.speed import num_parameters
    from minildm.text_training import load_text_model
    unet, vae, encoder = load_text_model(name, device)
    thresholds = AttributeThresholds(unet.meta["attribute_thresholds"])
    prompts, labels, sides = prompt_set(n, split)
    start = time.perf_counter()
    images = generate_batched(unet, vae, encoder, schedulers_for(unet)[1], prompts, guidance_scale, steps, device=device)
    seconds = time.perf_counter() - start
    return {**metrics.fid_report(images), "model": name, "sampler": "ddim", "steps": steps,
            "guidance_scale": guidance_scale, "prompts": split, "params": num_parameters(unet),
            "text_encoder": unet.meta.get("text_encoder"), **score(images, labels, sides, thresholds),
            "sample_s_per_img": round(seconds / n, 4), "example_prompts": prompts[:5]}


def sentence_probe(encoder, n_train: int = 5000, n_heldout: int = 2000, steps: int = 400, seed: int = 0,
                   weight_decay: float = 1e-2) -> dict:
    """How much class information the wording carries for a reader that learns from training captions only.

    A linear probe (softmax regression on the unit-length mean-pooled token states, the sentence embedding of
    all-MiniLM-L6-v2) is fitted to the class of `n_train` held-in prompts and scored on `n_heldout` held-out
    prompts. A text-to-image model learns its reading of the prompt from the same training captions, so the
    probe's held-out accuracy is a yardstick for what its class accuracy on held-out wording can reach.
    Returns `{"train_accuracy", "heldout_accuracy", "heldout_accuracy_per_class", "heldout_confusion"}`.
    """
    @torch.no_grad()
    def embed(prompts):
        encodings = (encoder(prompts[i:i + 500]) for i in range(0, len(prompts), 500))
        return F.normalize(torch.cat([masked_mean(e.states, e.mask).cpu() for e in encodings]), dim=-1)  # (N, D)

    prompts, y_train, _ = prompt_set(n_train, "train", seed=seed + 1)
    x_train = embed(prompts)
    prompts, y_held, _ = prompt_set(n_heldout, "heldout", seed=seed + 2)
    x_held = embed(prompts)
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x_train.shape[1], 10)
    opt = torch.optim.Adam(probe.parameters(), lr=0.05)
    for _ in range(steps):  # full-batch softmax regression; the features are unit length, hence the scale 10
        loss = F.cross_entropy(probe(10 * x_train), y_train) + weight_decay * probe.weight.square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        train_pred, held_pred = probe(10 * x_train).argmax(1), probe(10 * x_held).argmax(1)
    confusion = torch.zeros(10, 10, dtype=torch.long)
    confusion.index_put_((y_held, held_pred), torch.ones_like(y_held), accumulate=True)  # (requested, read)
    return {"train_accuracy": round(float((train_pred == y_train).float().mean()), 4),
            "heldout_accuracy": round(float((held_pred == y_held).float().mean()), 4),
            "heldout_accuracy_per_class": [round(float(confusion[c, c] / confusion[c].sum()), 4) for c in range(10)],
            "heldout_confusion": confusion.tolist()}


__all__ = ["prompt_set", "generate_batched", "cross_attention_maps", "score", "bench_text", "sentence_probe"]
