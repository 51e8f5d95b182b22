"""The data layer: schema, counts, checksums, every error path, preprocessing and its inverse."""
import gzip
import shutil

import numpy as np
import pytest
import torch

from minildm import data
from minildm.data import (CLASS_NAMES, DataError, FILES, load_arrays, load_fashion_mnist, postprocess,
                          preprocess, random_hflip, read_idx, to_uint8)


@pytest.fixture(scope="module")
def dsd():
    return load_fashion_mnist(allow_download=False)


def test_hub_schema_counts_and_names(dsd):
    assert set(dsd) == {"train", "test"}
    assert dsd["train"].num_rows == 60000 and dsd["test"].num_rows == 10000
    assert dsd["train"].features["label"].names == list(CLASS_NAMES)
    item = dsd["test"][0]
    assert item["image"].mode == "L" and item["image"].size == (28, 28)
    assert item["label"] == 9  # the first test image is an ankle boot
    counts = np.bincount(np.asarray(dsd["train"]["label"]), minlength=10)
    assert (counts == 6000).all()


def test_tensor_fast_path_matches_datasets(dsd, test_split):
    x0, labels = test_split.tensors
    assert x0.shape == (10000, 1, 32, 32) and x0.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist()[:3] == dsd["test"]["label"][:3]
    first = torch.from_numpy(np.array(dsd["test"][0]["image"]))
    assert torch.equal(to_uint8(x0[:1], unpad=True)[0, 0], first)


def _copy_dataset(tmp_path):
    src = data.find_data_dir()
    assert src is not None, "these tests need the offline dataset (apt-get install dataset-fashion-mnist)"
    dst = tmp_path / "fm"
    dst.mkdir()
    for stem, *_ in FILES.values():
        shutil.copy(src / f"{stem}.gz", dst / f"{stem}.gz")
    return dst


def _nowhere(monkeypatch, tmp_path):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setattr(data, "REPO_DIR", tmp_path / "no-repo-copy")
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "no-system-copy")


def test_missing_dataset_lists_every_place_and_the_remedies(monkeypatch, tmp_path):
    _nowhere(monkeypatch, tmp_path)
    with pytest.raises(DataError) as err:
        load_arrays("test")
    msg = str(err.value)
    for needle in ("no-repo-copy", "no-system-copy", "apt-get install dataset-fashion-mnist", "MINILDM_DATA",
                   "zalando-datasets/fashion_mnist"):
        assert needle in msg
    with pytest.raises(DataError, match="Searched"):
        load_fashion_mnist(allow_download=False)


def test_download_env_var_opts_in_to_the_hub_and_rejects_nonsense(monkeypatch, tmp_path):
    _nowhere(monkeypatch, tmp_path)
    calls = []

    def fake_hub(hub_id):  # no network here: record that the Hub would have been asked
        calls.append(hub_id)
        raise ConnectionError("offline")

    import datasets
    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    monkeypatch.delenv(data.DOWNLOAD_ENV, raising=False)
    with pytest.raises(DataError, match="not tried"):
        load_arrays("test")
    assert calls == []                                   # default: never touches the network
    monkeypatch.setenv(data.DOWNLOAD_ENV, "1")
    with pytest.raises(DataError, match="Hub download failed: ConnectionError"):
        load_arrays("test")
    assert calls == [data.HUB_ID]
    monkeypatch.setenv(data.DOWNLOAD_ENV, "yes")
    with pytest.raises(ValueError, match="MINILDM_ALLOW_DOWNLOAD='yes' is not understood"):
        load_arrays("test")


def test_env_var_pointing_at_empty_folder(monkeypatch, tmp_path):
    _nowhere(monkeypatch, tmp_path)
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    with pytest.raises(DataError, match="holds none of the four"):
        load_arrays("train")


def test_env_var_route_is_used(monkeypatch, tmp_path):
    folder = _copy_dataset(tmp_path)
    _nowhere(monkeypatch, tmp_path)
    monkeypatch.setenv(data.DATA_ENV, str(folder))
    assert data.find_data_dir() == folder
    images, labels = load_arrays("test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)


def test_incomplete_folder_names_the_missing_file(monkeypatch, tmp_path):
    folder = _copy_dataset(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    _nowhere(monkeypatch, tmp_path)
    monkeypatch.setenv(data.DATA_ENV, str(folder))
    with pytest.raises(DataError, match="incomplete: missing t10k-labels-idx1-ubyte.gz"):
        load_arrays("test")


def test_truncated_gzip_names_the_file(tmp_path):
    folder = _copy_dataset(tmp_path)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    stem, magic, shape, md5 = FILES[("test", "labels")]
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is corrupt or truncated"):
        read_idx(path, magic, shape, md5)


def test_truncated_payload_is_detected(tmp_path):
    raw = gzip.decompress((_copy_dataset(tmp_path) / "t10k-labels-idx1-ubyte.gz").read_bytes())
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(raw[:-10]))
    stem, magic, shape, md5 = FILES[("test", "labels")]
    with pytest.raises(DataError, match="truncated or padded"):
        read_idx(path, magic, shape, md5)


def test_wrong_magic_is_detected(tmp_path):
    folder = _copy_dataset(tmp_path)
    stem, magic, shape, md5 = FILES[("test", "labels")]
    # an image file where a label file is expected
    with pytest.raises(DataError, match="magic number 0x00000803, expected 0x00000801"):
        read_idx(folder / "t10k-images-idx3-ubyte.gz", magic, shape, md5)


def test_flipped_byte_fails_the_checksum(tmp_path):
    raw = bytearray(gzip.decompress((_copy_dataset(tmp_path) / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] ^= 0xFF
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    stem, magic, shape, md5 = FILES[("test", "labels")]
    with pytest.raises(DataError, match="fails its checksum"):
        read_idx(path, magic, shape, md5)


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_arrays("validation")


def test_preprocess_range_shape_padding_and_inverse():
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    x0 = preprocess(images)
    assert x0.shape == (5, 1, 32, 32) and x0.dtype == torch.float32
    assert x0.min() >= -1 and x0.max() <= 1
    assert (x0[..., :2, :] == -1).all() and (x0[..., :, -2:] == -1).all()  # background padding
    assert torch.equal(to_uint8(x0, unpad=True)[:, 0], images)  # exact inverse
    assert preprocess(images, pad=False).shape == (5, 1, 28, 28)
    assert postprocess(x0).min() >= 0 and postprocess(x0).max() <= 1


def test_preprocess_rejects_floats_and_wrong_shapes():
    with pytest.raises(TypeError, match="expects uint8"):
        preprocess(torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match="grayscale"):
        preprocess(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))


def test_random_hflip_is_seeded_and_flips_whole_images():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    a = random_hflip(x, torch.Generator().manual_seed(3), p=0.5)
    b = random_hflip(x, torch.Generator().manual_seed(3), p=0.5)
    assert torch.equal(a, b)
    assert torch.equal(random_hflip(x, p=1.0), x.flip(-1))
    assert torch.equal(random_hflip(x, p=0.0), x)
