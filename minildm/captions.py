"""Captions for Fashion-MNIST: the label plus attributes measured on the image, in several templates and synonyms.

Fashion-MNIST has no text. Each image gets captions built from its class and three attributes that are visible
and measurable on a 28x28 garment, each computed on the garment's pixels (value above `GARMENT_LEVEL`):

    brightness  mean intensity of the garment's pixels               -> "dark" / "light"
    size        fraction of the 28x28 area the garment covers         -> "small" / "large"
    texture     mean absolute difference between neighbouring pixels  -> "plain" / "patterned"
                inside the garment (edges of the silhouette excluded)

Attributes are relative to the class (a large sandal is smaller than a small coat): `AttributeThresholds` holds,
per class and attribute, the training set's terciles. A caption names an attribute only when the image is clearly
on one side — in the lower or upper third — and stays silent in the middle third. The same functions score
generated images: an image asked to be "dark" counts as right when its brightness is below its class median.

Templates and synonyms come in two sets: `split="train"` (used for training) and `split="heldout"` (never seen in
training: new sentence frames, new words for the classes and attributes) to measure how far a text encoder
generalises. Captions are deterministic: `caption(label, attrs, variant)` picks template and words from `variant`.

References: Xiao, Rasul & Vollgraf (2017), Fashion-MNIST. Derived in notebooks/05_text_conditioning_cfg.ipynb.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

GARMENT_LEVEL = -0.8          # pixels above this (about 25/255) belong to the garment; the background is -1
ATTRIBUTES = ("brightness", "size", "texture")

# Training wording is deliberately varied (five nouns per class, three words per attribute side, seven sentence
# frames): with only a few fixed words a UNet can key on exact tokens and learn nothing about their meaning, and
# held-out words then fall through (measured: held-out class accuracy 0.56 with three nouns per class). The held-out
# column is the set every earlier measurement used, unchanged; none of its words or frames occurs in training.
NOUNS = {  # class -> (training synonyms, held-out synonyms)
    0: (["t-shirt", "top", "tee", "tank top", "crew-neck tee"], ["short-sleeved top"]),
    1: (["pair of trousers", "pair of pants", "pair of jeans", "pair of chinos", "pair of leggings"], ["pair of slacks"]),
    2: (["pullover", "sweater", "jumper", "knit sweater", "hoodie"], ["sweatshirt"]),
    3: (["dress", "gown", "frock", "maxi dress", "summer dress"], ["sundress"]),
    4: (["coat", "jacket", "overcoat", "raincoat", "winter jacket"], ["parka"]),
    5: (["sandal", "flip-flop", "open shoe", "slide", "heeled sandal"], ["strappy sandal"]),
    6: (["shirt", "blouse", "button-up shirt", "collared shirt", "flannel shirt"], ["long-sleeved shirt"]),
    7: (["sneaker", "trainer", "running shoe", "sports shoe", "tennis shoe"], ["athletic shoe"]),
    8: (["bag", "handbag", "purse", "shoulder bag", "shopping bag"], ["tote"]),
    9: (["ankle boot", "boot", "bootie", "chelsea boot", "leather boot"], ["short boot"]),
}
WORDS = {  # (attribute, side) -> (training words, held-out words); side -1 = lower third, +1 = upper third
    ("brightness", -1): (["dark", "black", "charcoal"], ["dim"]),
    ("brightness", +1): (["light", "white", "bright"], ["pale"]),
    ("size", -1): (["small", "slim", "narrow"], ["tiny"]),
    ("size", +1): (["large", "wide", "bulky"], ["big"]),
    ("texture", -1): (["plain", "smooth", "solid"], ["simple"]),
    ("texture", +1): (["patterned", "detailed", "printed"], ["textured"]),
}
TEMPLATES = (  # (training templates, held-out templates); {a} = adjectives with a trailing space, {n} = noun
    ["a {a}{n}", "a photo of a {a}{n}", "{a}{n}", "a picture of a {a}{n}", "an image of a {a}{n}",
     "a close-up of a {a}{n}", "a catalogue photo of a {a}{n}"],
    ["a product shot of a {a}{n}", "this is a {a}{n}", "a {a}{n}, studio photo"],
)


def wording_summary() -> str:
    """How varied the caption wording is, for the model card of a model trained on these captions."""
    side = WORDS[("brightness", -1)]
    return (f"{len(NOUNS[0][0])} nouns per class, {len(side[0])} words per attribute side and {len(TEMPLATES[0])} "
            f"sentence frames in training; {len(NOUNS[0][1])} noun, {len(side[1])} word and {len(TEMPLATES[1])} frames "
            "held out")


def _check_images(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"attributes are measured on grayscale images (B, 1, H, W) in [-1, 1], got {shape}.")
    if not x.is_floating_point():
        raise TypeError(f"images must be floats in [-1, 1] (minildm.data.preprocess), got {x.dtype}.")
    return x.float()


def measure(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three attributes of each image, `(B,)` each; `x` `(B, 1, H, W)` in [-1, 1] (padding is ignored)."""
    x = _check_images(x).clamp(-1, 1)
    garment = x > GARMENT_LEVEL                                               # (B, 1, H, W) bool
    area = garment.flatten(1).sum(1).clamp(min=1)                             # (B,) garment pixels
    bright = ((x + 1) / 2 * garment).flatten(1).sum(1) / area                 # (B,) mean intensity in [0, 1]
    inner = garment[..., 1:, 1:] & garment[..., :-1, 1:] & garment[..., 1:, :-1]  # (B, 1, H-1, W-1) inside only
    dx = (x[..., 1:, 1:] - x[..., 1:, :-1]).abs()                             # horizontal neighbours
    dy = (x[..., 1:, 1:] - x[..., :-1, 1:]).abs()                             # vertical neighbours
    texture = ((dx + dy) / 2 * inner).flatten(1).sum(1) / inner.flatten(1).sum(1).clamp(min=1)
    return {"brightness": bright, "size": area.float() / (28 * 28), "texture": texture}


@dataclass(frozen=True)
class AttributeThresholds:
    """Per class and attribute: the training set's lower tercile, median and upper tercile, `(10, 3)` each."""

    values: dict  # attribute -> list of 10 [q1/3, median, q2/3]

    @classmethod
    def fit(cls, x: torch.Tensor, labels: torch.Tensor) -> "AttributeThresholds":
        m = measure(x)
        qs = torch.tensor([1 / 3, 0.5, 2 / 3])
        return cls({a: [torch.quantile(m[a][labels == c], qs).tolist() for c in range(10)] for a in ATTRIBUTES})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"attributes": list(ATTRIBUTES), "values": self.values}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "AttributeThresholds":
        return cls(json.loads(Path(path).read_text())["values"])

    def sides(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """-1 (lower third), 0 (middle), +1 (upper third) per image and attribute: what a caption may say."""
        m, out = measure(x), {}
        for a in ATTRIBUTES:
            q = torch.tensor(self.values[a])[labels]                          # (B, 3)
            out[a] = (m[a] > q[:, 2]).long() - (m[a] < q[:, 0]).long()
        return out

    def agrees(self, x: torch.Tensor, labels: torch.Tensor, requested: dict[str, torch.Tensor]) -> dict:
        """For generated images: is each requested attribute (side -1/+1; 0 = not asked) on the asked side of the
        class median? Returns attribute -> (B,) bool, False/True where asked, and a mask of where it was asked."""
        m, out = measure(x), {}
        for a in ATTRIBUTES:
            median = torch.tensor(self.values[a])[labels][:, 1]
            side = requested[a]
            out[a] = ((m[a] - median) * side > 0, side != 0)
        return out


def caption(label: int, attrs: dict[str, int], variant: int = 0, split: str = "train") -> str:
    """A caption for class `label` with attribute sides `attrs` (-1, 0, +1); `variant` picks template and words."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}.")
    if not 0 <= int(label) < 10:
        raise ValueError(f"label must be a Fashion-MNIST class 0..9, got {label}.")
    s = 0 if split == "train" else 1
    nouns, templates = NOUNS[int(label)][s], TEMPLATES[s]
    words = []
    for i, a in enumerate(ATTRIBUTES):
        side = int(attrs.get(a, 0))
        if side:
            options = WORDS[(a, side)][s]
            words.append(options[(variant // (i + 2)) % len(options)])
    adjectives = "".join(w + " " for w in words)
    text = templates[variant % len(templates)].format(a=adjectives, n=nouns[(variant // 7) % len(nouns)])
    return re.sub(r"\ba (?=[aeiou])", "an ", text)                         # "a overcoat" -> "an overcoat"


def captions_for(labels: torch.Tensor, sides: dict[str, torch.Tensor], variants: torch.Tensor,
                 split: str = "train") -> list[str]:
    """Captions for a batch: `labels` `(B,)`, `sides` attribute -> `(B,)`, `variants` `(B,)`."""
    return [caption(int(y), {a: int(sides[a][i]) for a in ATTRIBUTES}, int(variants[i]), split)
            for i, y in enumerate(labels)]


__all__ = ["ATTRIBUTES", "GARMENT_LEVEL", "NOUNS", "WORDS", "TEMPLATES", "wording_summary", "measure", "AttributeThresholds", "caption",
           "captions_for"]
