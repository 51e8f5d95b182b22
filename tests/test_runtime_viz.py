"""Quick-mode switch, seeding, and the picture helpers every notebook uses."""
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

matplotlib.use("Agg")

from minildm import runtime, viz  # noqa: E402


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_quick_mode_switch(monkeypatch, value, expected):
    monkeypatch.setenv("MINILDM_QUICK", value)
    assert runtime.is_quick() is expected
    assert runtime.budget(full=1000, quick=10) == (10 if expected else 1000)


def test_quick_mode_rejects_unclear_values(monkeypatch):
    monkeypatch.setenv("MINILDM_QUICK", "maybe")
    with pytest.raises(ValueError, match="MINILDM_QUICK='maybe' is not understood"):
        runtime.is_quick()


def test_seed_everything_reproduces():
    g1 = runtime.seed_everything(7)
    a = torch.randn(3, generator=g1), torch.randn(3)
    g2 = runtime.seed_everything(7)
    b = torch.randn(3, generator=g2), torch.randn(3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_default_device_is_a_device():
    assert isinstance(runtime.default_device(), torch.device)


def test_grids_and_plots_return_figures():
    x = torch.rand(20, 1, 32, 32) * 2 - 1
    labels = torch.arange(20) % 10
    assert isinstance(viz.show_grid(x, nrow=5, title="t"), matplotlib.figure.Figure)
    assert viz.grid_array(x, nrow=5).shape == (4 * 34 + 2, 5 * 34 + 2)
    assert isinstance(viz.class_grid(x, labels, per_class=2), matplotlib.figure.Figure)
    assert isinstance(viz.plot_loss(np.linspace(1, 0.1, 300)), matplotlib.figure.Figure)
    matplotlib.pyplot.close("all")


def test_viz_errors_are_clear():
    with pytest.raises(TypeError, match="uint8"):
        viz.show_grid(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="must match"):
        viz.class_grid(torch.zeros(4, 1, 8, 8), torch.zeros(3))
    with pytest.raises(ValueError, match="non-empty"):
        viz.plot_loss([])
    with pytest.raises(ValueError, match="at least one frame"):
        viz.save_gif([], "x.gif")


def test_save_gif_writes_all_frames(tmp_path):
    frames = [torch.full((4, 1, 8, 8), v) for v in (-1.0, 0.0, 1.0)]
    path = viz.save_gif(frames, tmp_path / "rev.gif", nrow=2)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
    assert not list(tmp_path.glob("*.tmp.gif"))
    fig = viz.show_gif_frames(frames, n_show=3)
    assert len(fig.axes) == 3
    matplotlib.pyplot.close("all")
