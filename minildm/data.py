"""Fashion-MNIST, verified, offline first; the one place where images are preprocessed.

`load_fashion_mnist()` returns the Hub's `fashion_mnist` schema (a `datasets.DatasetDict` with `image` and
`label`) so that code written for `load_dataset("fashion_mnist")` works unchanged. `load_tensors()` is the
fast path for training: the split materialised once as tensors (a per-item `datasets` transform is 15-40x
slower than a TensorDataset on 2 CPU cores).

Where the data comes from, in order:
1. `$MINILDM_DATA` (a folder holding the four IDX `.gz` files);
2. `data/fashion-mnist/` in the repository (git-ignored);
3. `/usr/share/datasets/fashion-mnist/` (Debian/Ubuntu: `apt-get install dataset-fashion-mnist`);
4. online only: the Hub, `datasets.load_dataset("zalando-datasets/fashion_mnist")` (Colab).

Every file read is checked: IDX magic number, shape, and the md5 of the decompressed bytes.

References:
    Xiao, Rasul, Vollgraf (2017), "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
    Algorithms", arXiv:1708.07747. Licence: MIT, Copyright (c) 2017 Zalando SE.
    IDX format: http://yann.lecun.com/exdb/mnist/ (bottom of the page).

Derived in notebooks/00_setup_and_data.ipynb.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
HUB_ID = "zalando-datasets/fashion_mnist"
DATA_ENV = "MINILDM_DATA"
DOWNLOAD_ENV = "MINILDM_ALLOW_DOWNLOAD"  # "1": the Hub may be used when no local copy exists (the Colab cell sets it)
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO_DIR = Path(__file__).resolve().parent.parent / "data" / "fashion-mnist"

# name -> (IDX magic, expected shape, md5 of the decompressed bytes); from the dataset's README.
FILES = {
    ("train", "images"): ("train-images-idx3-ubyte", 0x00000803, (60000, 28, 28), "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    ("train", "labels"): ("train-labels-idx1-ubyte", 0x00000801, (60000,), "9018921c3c673c538a1fc5bad174d6f9"),
    ("test", "images"): ("t10k-images-idx3-ubyte", 0x00000803, (10000, 28, 28), "8181f5470baa50b63fa0f6fddb340f0a"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", 0x00000801, (10000,), "15d484375f8d13e6eb1aabb0c3f46965"),
}
SPLITS = ("train", "test")

HOW_TO_GET = (
    "Get it one of these ways:\n"
    "  * Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist   (installs to /usr/share/datasets/fashion-mnist)\n"
    f"  * any folder holding the four IDX .gz files: export {DATA_ENV}=/path/to/folder\n"
    f"  * copy the four files into {REPO_DIR}\n"
    f"  * online (e.g. Colab): load_fashion_mnist(allow_download=True), or {DOWNLOAD_ENV}=1 for every loader, "
    f"uses the Hub dataset {HUB_ID}"
)


class DataError(RuntimeError):
    """The dataset is missing, truncated or corrupt. The message says which file and what to do."""


def search_paths() -> list[Path]:
    """The local folders searched for the IDX files, in order."""
    paths = []
    if os.environ.get(DATA_ENV):
        paths.append(Path(os.environ[DATA_ENV]).expanduser())
    paths += [REPO_DIR, SYSTEM_DIR]
    return paths


def _file_in(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def find_data_dir() -> Path | None:
    """The first searched folder that holds all four files, or None. A partial folder raises DataError."""
    for folder in search_paths():
        found = {key: _file_in(folder, spec[0]) for key, spec in FILES.items()}
        if all(found.values()):
            return folder
        if any(found.values()):
            missing = ", ".join(FILES[k][0] + ".gz" for k, v in found.items() if v is None)
            raise DataError(f"Fashion-MNIST in {folder} is incomplete: missing {missing}.\n{HOW_TO_GET}")
        if folder == search_paths()[0] and os.environ.get(DATA_ENV):
            raise DataError(f"{DATA_ENV}={os.environ[DATA_ENV]} holds none of the four Fashion-MNIST files.\n{HOW_TO_GET}")
    return None


def read_idx(path: Path, magic: int, shape: tuple, md5: str | None = None) -> np.ndarray:
    """Read one IDX file (gzip or raw), checking its magic number, shape and decompressed md5."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"{path} is corrupt or truncated ({err}). Delete it and get a fresh copy.\n{HOW_TO_GET}") from err
    ndim = len(shape)
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, not even an IDX header. Get a fresh copy.\n{HOW_TO_GET}")
    found_magic = int.from_bytes(raw[:4], "big")
    if found_magic != magic:
        raise DataError(f"{path} has IDX magic number 0x{found_magic:08x}, expected 0x{magic:08x}: "
                        f"not the right file (images vs labels?) or corrupt.")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims != tuple(shape):
        raise DataError(f"{path} declares shape {dims}, expected {tuple(shape)}.")
    expected_len = header + int(np.prod(shape))
    if len(raw) != expected_len:
        raise DataError(f"{path} is truncated or padded: {len(raw)} bytes decompressed, expected {expected_len}. "
                        f"Get a fresh copy.\n{HOW_TO_GET}")
    if md5 is not None and hashlib.md5(raw).hexdigest() != md5:
        raise DataError(f"{path} fails its checksum: md5 {hashlib.md5(raw).hexdigest()} != {md5} "
                        f"(decompressed bytes). The file is corrupt: get a fresh copy.\n{HOW_TO_GET}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()  # writable


def _not_found_message() -> str:
    places = "\n".join(f"  - {p}" for p in search_paths())
    return f"Fashion-MNIST not found. Searched:\n{places}\n  - the Hub ({HUB_ID}): not tried or not reachable\n{HOW_TO_GET}"


def _load_arrays_local(split: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for kind in ("images", "labels"):
        stem, magic, shape, md5 = FILES[(split, kind)]
        out.append(read_idx(_file_in(folder, stem), magic, shape, md5))
    return out[0], out[1]


def load_arrays(split: str = "train", allow_download: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images `(N, 28, 28)` and int64 labels `(N,)` of one split, verified.

    Local copies first; the Hub only if `allow_download` (None: only if MINILDM_ALLOW_DOWNLOAD=1)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}.")
    folder = find_data_dir()
    if folder is not None:
        images, labels = _load_arrays_local(split, folder)
        return images, labels.astype(np.int64)
    ds = _load_from_hub(allow_download)[split]
    images = np.stack([np.asarray(im, dtype=np.uint8) for im in ds["image"]])  # (N, 28, 28)
    return images, np.asarray(ds["label"], dtype=np.int64)


def _download_allowed(allow_download: bool | None) -> bool:
    """`allow_download`, or when None the environment variable MINILDM_ALLOW_DOWNLOAD ("1" yes, "0"/unset no)."""
    if allow_download is not None:
        return bool(allow_download)
    value = os.environ.get(DOWNLOAD_ENV, "0").strip()
    if value not in ("0", "1", ""):
        raise ValueError(f"{DOWNLOAD_ENV}={value!r} is not understood: use 1 (the Hub may be used) or 0.")
    return value == "1"


def _load_from_hub(allow_download: bool | None):
    if not _download_allowed(allow_download):
        raise DataError(_not_found_message())
    import datasets
    try:
        return datasets.load_dataset(HUB_ID)
    except Exception as err:  # offline, hub down, ...
        raise DataError(f"{_not_found_message()}\n(Hub download failed: {type(err).__name__}: {err})") from err


def features():
    """The Hub's fashion_mnist schema: `image` (PIL, mode L) and `label` (ClassLabel, 10 names)."""
    import datasets
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASS_NAMES))})


def load_fashion_mnist(allow_download: bool = True):
    """Fashion-MNIST as a `datasets.DatasetDict` (`train` 60,000, `test` 10,000), Hub schema.

    Local copies are used first (see the module docstring); the Hub is tried only when none exists and
    `allow_download` is true. Missing data raises `DataError` listing every place searched.
    """
    import datasets
    folder = find_data_dir()
    if folder is None:
        return _load_from_hub(allow_download)
    splits = {}
    for split in SPLITS:
        images, labels = _load_arrays_local(split, folder)
        splits[split] = datasets.Dataset.from_dict(
            {"image": list(images), "label": labels.astype(np.int64)}, features=features())
    return datasets.DatasetDict(splits)


# ----------------------------------------------------------------------------------------------------
# Preprocessing: pad 28 -> 32, scale to [-1, 1], optional horizontal flip, and the inverse for display.

def preprocess(images: torch.Tensor | np.ndarray, pad: bool = True) -> torch.Tensor:
    """uint8 `(N, 28, 28)` or `(N, 1, 28, 28)` in [0, 255] -> float `(N, 1, 32, 32)` in [-1, 1].

    Padding uses the background value (-1, black) so the garment stays centred on a 32x32 canvas, a size
    that halves cleanly three times in a UNet.
    """
    x = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    if x.dtype != torch.uint8:
        raise TypeError(f"preprocess expects uint8 pixels in [0, 255], got {x.dtype}; "
                        "if your images are already floats in [-1, 1], skip preprocess.")
    if x.dim() == 3:
        x = x.unsqueeze(1)  # (N, 1, 28, 28)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"preprocess expects (N, 28, 28) or (N, 1, H, W) grayscale, got shape {tuple(x.shape)}.")
    x = x.float() / 127.5 - 1.0  # [0, 255] -> [-1, 1]
    if pad:
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)  # (N, 1, 32, 32)
    return x


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Flip each image of a `(B, C, H, W)` batch left-right with probability p."""
    flip = torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def postprocess(x: torch.Tensor, unpad: bool = False) -> torch.Tensor:
    """The inverse of `preprocess` for display: [-1, 1] floats -> [0, 1] floats, optionally cropped to 28x28."""
    x = (x.detach().float().clamp(-1, 1) + 1) / 2
    if unpad:
        x = x[..., 2:-2, 2:-2]  # (N, C, 28, 28)
    return x


def to_uint8(x: torch.Tensor, unpad: bool = False) -> torch.Tensor:
    """[-1, 1] floats -> uint8 [0, 255], the exact inverse of `preprocess` up to rounding."""
    return (postprocess(x, unpad) * 255).round().to(torch.uint8)


def load_tensors(split: str = "train", pad: bool = True, limit: int | None = None,
                 allow_download: bool | None = None) -> torch.utils.data.TensorDataset:
    """The fast path: a whole split preprocessed once, as a `TensorDataset(x0 (N, 1, 32, 32), labels (N,))`."""
    images, labels = load_arrays(split, allow_download=allow_download)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return torch.utils.data.TensorDataset(preprocess(images, pad=pad), torch.from_numpy(labels))
