"""`minildm demo`: the generate function, the Gradio app through gradio_client, and a headless Chromium render."""
import shutil
import socket
import subprocess

import pytest
import torch
from PIL import Image

from minildm.checkpoints import save_model
from minildm.models.unet import UNet, UNetConfig

SCHED = {"num_train_timesteps": 100, "beta_schedule": "cosine", "prediction_type": "eps"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--virtual-time-budget=15000", "--run-all-compositor-stages-before-draw"]


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    unet = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), attention=("none", "full"), heads=1, head_dim=8,
                           groups=4, time_dim=16, cross_attention=(False, False), num_classes=10))
    save_model(unet, folder / "ddpm_cond", meta=SCHED)
    mp = pytest.MonkeyPatch()
    mp.setenv("MINILDM_CHECKPOINTS", str(folder))
    yield folder
    mp.undo()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_generate_returns_a_grid_and_negative_garments_change_it(tiny_checkpoints):
    from minildm.demo import NONE, make_generate
    generate = make_generate()
    a = generate("Sneaker", NONE, 3.0, 3, 0, 4)
    b = generate("Sneaker", NONE, 3.0, 3, 0, 4)
    c = generate("Sneaker", "Sandal", 3.0, 3, 0, 4)
    assert a.size == (4 * (4 * 32 + 5 * 2), 4 * (32 + 2 * 2)) and a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    with pytest.raises(ValueError, match="unknown garment 'Scarf'"):
        generate("Scarf", NONE, 3.0, 3, 0, 1)


@pytest.fixture(scope="module")
def running_app(tiny_checkpoints):
    pytest.importorskip("gradio", reason="the demo needs the [demo] extra: pip install -e '.[demo]'")
    from minildm.demo import launch
    port = free_port()
    app = launch("127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_the_app_answers_through_gradio_client(running_app, tmp_path):
    from gradio_client import Client
    client = Client(running_app, verbose=False)
    path = client.predict("Ankle boot", "(none: unconditional)", 2.0, 5, 1, 2, api_name="/generate")
    image = Image.open(path)
    assert image.size == (4 * (2 * 32 + 3 * 2), 4 * (32 + 2 * 2))


def test_a_headless_browser_renders_the_page(running_app, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    shot = tmp_path / "demo.png"
    run = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--window-size=1200,900", f"--screenshot={shot}", running_app],
                         capture_output=True, text=True, timeout=120)
    assert shot.exists(), run.stderr[-2000:]
    pixels = torch.tensor(list(Image.open(shot).convert("L").getdata()), dtype=torch.float32)
    assert pixels.std() > 10, "the screenshot is blank: the page did not render"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom",
                          running_app], capture_output=True, text=True, timeout=120).stdout
    assert "class-conditional Fashion-MNIST" in dom and "Generate" in dom   # Gradio's JavaScript built the page
