"""A small Fashion-MNIST classifier: the course's judge for FID, KID, precision/recall and class accuracy.

Standard FID uses Inception-v3 features trained on ImageNet at 299x299; on 28x28 grayscale garments those
features are a poor judge, and the weights cannot be downloaded offline. The practice for MNIST-like data is
a domain classifier's penultimate features (Binkowski et al. 2018). This module defines that classifier, its
reproducible training recipe and `load_classifier()`, which loads the shipped checkpoint
`data/checkpoints/classifier` (model card: `data/checkpoints/classifier.md`).

Recipe: `python -m minildm.models.classifier` (trains on the CPU in a few minutes and writes the checkpoint).

References:
    Binkowski, Sutherland, Arbel, Gretton (2018), "Demystifying MMD GANs", ICLR, arXiv:1801.01401
    (a domain classifier's features for FID/KID on small-image datasets).
    Ioffe, Szegedy (2015), "Batch Normalization", arXiv:1502.03167.
    Smith, Topin (2017), "Super-Convergence: Very Fast Training of Neural Networks Using Large Learning
    Rates" (the one-cycle schedule), arXiv:1708.07120.
    Loshchilov, Hutter (2019), "Decoupled Weight Decay Regularization" (AdamW), arXiv:1711.05101.

Used by `minildm.metrics` (FID, KID, precision/recall, class accuracy) from notebooks/01_ddpm_from_scratch.ipynb on.
"""
from __future__ import annotations

import argparse
import datetime
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE_SIZE = 32  # the course's canvas: 28x28 Fashion-MNIST padded by minildm.data.preprocess


@dataclass(frozen=True)
class ClassifierConfig:
    patch: int = 2  # the stem: a patch x patch, stride-patch conv (32x32 -> 16x16), lossless and cheap
    channels: tuple[int, ...] = (32, 64, 128)  # one stage per entry; a 2x2 max-pool between stages
    convs_per_stage: int = 1
    feature_dim: int = 256  # size of the penultimate layer = the feature space of minildm.metrics
    num_classes: int = 10
    dropout: float = 0.2


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class FashionClassifier(nn.Module):
    """A VGG-style CNN on `(B, 1, 32, 32)` images in [-1, 1]; `features()` is the penultimate layer.

    Used through minildm.metrics from notebooks/01_ddpm_from_scratch.ipynb on.
    """

    config_class = ClassifierConfig

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        c_in = config.channels[0]
        layers = [nn.Conv2d(1, c_in, config.patch, stride=config.patch, bias=False),  # (B, C0, 32/p, 32/p)
                  nn.BatchNorm2d(c_in), nn.ReLU(inplace=True)]
        for i, c_out in enumerate(config.channels):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(config.convs_per_stage):
                layers.append(_conv_bn_relu(c_in, c_out))
                c_in = c_out
        self.body = nn.Sequential(*layers)
        side = IMAGE_SIZE // config.patch // 2 ** (len(config.channels) - 1)
        self.neck = nn.Sequential(
            nn.Flatten(),  # (B, C * side * side)
            nn.Linear(c_in * side * side, config.feature_dim, bias=False),
            nn.BatchNorm1d(config.feature_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    @staticmethod
    def check_input(x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"FashionClassifier expects (B, 1, {IMAGE_SIZE}, {IMAGE_SIZE}) images in [-1, 1], got "
                             f"shape {tuple(x.shape)}. Convert uint8 (N, 28, 28) images with "
                             f"minildm.data.preprocess (pads to 32x32 and scales to [-1, 1]).")
        if not x.is_floating_point():
            raise TypeError(f"FashionClassifier expects float images in [-1, 1], got {x.dtype}; "
                            f"convert uint8 pixels with minildm.data.preprocess.")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, 1, 32, 32)` in [-1, 1] -> `(B, feature_dim)`, the penultimate layer (post-ReLU)."""
        self.check_input(x)
        return self.neck(self.body(x))  # (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, 1, 32, 32)` in [-1, 1] -> logits `(B, num_classes)`."""
        return self.head(self.dropout(self.features(x)))


# ----------------------------------------------------------------------------------------------------
# Training recipe

def random_translate(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image of a `(B, C, H, W)` batch by up to `max_shift` pixels, filling with background -1."""
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)  # (B, C, H + 2s, W + 2s)
    oy, ox = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]  # (B, C, H, W)


@torch.no_grad()
def evaluate(model: nn.Module, x0: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of `model` on `(N, 1, 32, 32)` images; the model is left in eval mode."""
    model.eval()
    correct = 0
    for i in range(0, len(x0), batch_size):
        logits = model(x0[i:i + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == labels[i:i + batch_size]).sum().item()
    return correct / len(x0)


def train_classifier(epochs: int = 10, batch_size: int = 128, lr: float = 3e-3, seed: int = 0,
                     device: str | torch.device | None = None, out_path: str | Path | None = None,
                     config: ClassifierConfig | None = None, weight_decay: float = 5e-4,
                     label_smoothing: float = 0.1, max_shift: int = 0, progress: bool = True):
    """Train `FashionClassifier` on the 60,000 training images; returns `(model, history)`.

    AdamW + one-cycle learning rate, label smoothing, random horizontal flip (and, if `max_shift > 0`, a random
    +-`max_shift` pixel translation; the shipped recipe does not use it). Deterministic for a given seed,
    device and thread count. The test accuracy is measured after every epoch (included in the wall-clock).
    If `out_path` is given the model is saved there (float32 safetensors + JSON sidecar with the recipe,
    images seen, wall-clock, device and the final test accuracy).

    Used through minildm.metrics from notebooks/01_ddpm_from_scratch.ipynb on.
    """
    from tqdm.auto import tqdm

    from minildm.checkpoints import save_model
    from minildm.data import load_tensors, random_hflip
    from minildm.runtime import default_device, seed_everything

    device = torch.device(device) if device is not None else default_device()
    generator = seed_everything(seed)
    train, test = load_tensors("train"), load_tensors("test")
    x_train, y_train = train.tensors
    x_test, y_test = test.tensors
    model = FashionClassifier(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = len(x_train) // batch_size  # drop the last partial batch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs,
                                                    steps_per_epoch=steps_per_epoch, pct_start=0.25)
    history = {"loss": [], "train_accuracy": [], "test_accuracy": [], "lr": []}
    images_seen, start = 0, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        running_loss, running_correct = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
        for step in bar:
            idx = order[step * batch_size:(step + 1) * batch_size]
            x, y = random_hflip(x_train[idx], generator), y_train[idx]
            if max_shift > 0:
                x = random_translate(x, max_shift, generator)
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            images_seen += len(idx)
            running_loss += loss.item() * len(idx)
            running_correct += (logits.argmax(1) == y).sum().item()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
        seen = steps_per_epoch * batch_size
        history["loss"].append(running_loss / seen)
        history["train_accuracy"].append(running_correct / seen)
        history["test_accuracy"].append(evaluate(model, x_test, y_test, device=device))
        history["lr"].append(scheduler.get_last_lr()[0])
        if progress:
            print(f"epoch {epoch + 1}: loss {history['loss'][-1]:.4f}  train acc {history['train_accuracy'][-1]:.4f}"
                  f"  test acc {history['test_accuracy'][-1]:.4f}  ({time.perf_counter() - start:.0f} s)")
    history["wall_clock_s"] = time.perf_counter() - start
    history["images_seen"] = images_seen
    model.eval()
    if out_path is not None:
        meta = {
            "recipe": {"command": _command(epochs, batch_size, lr, seed, max_shift, out_path),
                       "function": "minildm.models.classifier.train_classifier", "epochs": epochs,
                       "batch_size": batch_size, "lr": lr, "seed": seed, "optimizer": "AdamW",
                       "weight_decay": weight_decay, "schedule": "OneCycleLR(pct_start=0.25)",
                       "label_smoothing": label_smoothing,
                       "augmentation": "random horizontal flip p=0.5"
                                       + (f", random translation +-{max_shift} px" if max_shift else "")},
            "epochs": epochs,
            "images_seen": images_seen,
            "wall_clock_s": round(history["wall_clock_s"], 1),
            "device": _device_name(device),
            "threads": torch.get_num_threads(),
            "test_accuracy": history["test_accuracy"][-1],
            "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
            "dataset": "Fashion-MNIST train (60,000); test accuracy on the 10,000 test images",
        }
        save_model(model, out_path, meta=meta)
    return model, history


def _command(epochs: int, batch_size: int, lr: float, seed: int, max_shift: int, out_path: str | Path) -> str:
    from minildm.checkpoints import SHIPPED_DIR

    out = "" if Path(out_path).resolve() == (SHIPPED_DIR / "classifier").resolve() else f" --out {out_path}"
    return (f"python -m minildm.models.classifier --epochs {epochs} --batch-size {batch_size} --lr {lr} "
            f"--seed {seed} --max-shift {max_shift} --threads {torch.get_num_threads()}{out}")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return str(device)


def load_classifier(device: str | torch.device = "cpu") -> FashionClassifier:
    """The shipped classifier (`data/checkpoints/classifier`, or `$MINILDM_CHECKPOINTS`), in eval mode.

    Used through minildm.metrics from notebooks/01_ddpm_from_scratch.ipynb on.
    """
    from minildm.checkpoints import find, load_model

    return load_model(FashionClassifier, find("classifier"), device=device)


def main(argv: list[str] | None = None) -> None:
    from minildm.checkpoints import SHIPPED_DIR

    parser = argparse.ArgumentParser(description="Train the Fashion-MNIST classifier used by minildm.metrics.")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-shift", type=int, default=0, help="random translation in pixels (0: off)")
    parser.add_argument("--device", default=None, help="default: minildm.runtime.default_device()")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (torch.set_num_threads); 1 is fastest on a busy 2-core machine")
    parser.add_argument("--out", default=str(SHIPPED_DIR / "classifier"),
                        help="checkpoint path without suffix (default: the shipped data/checkpoints/classifier)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    _, history = train_classifier(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                  device=args.device, out_path=args.out, max_shift=args.max_shift)
    print(f"test accuracy {history['test_accuracy'][-1]:.4f}, {history['wall_clock_s']:.0f} s, saved to {args.out}")


if __name__ == "__main__":
    main()
