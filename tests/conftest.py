"""Shared fixtures. Tests use the real Fashion-MNIST (offline route) or tiny generated tensors."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seed every test; use one thread (tiny tensors run faster so, and a busy 2-core machine does not thrash)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def test_split():
    """The real test split as the fast TensorDataset (x0 (10000, 1, 32, 32) in [-1, 1], labels)."""
    from minildm.data import load_tensors
    return load_tensors("test")
