"""`minildm demo` (text-to-image): the generate function, the Gradio app through gradio_client, and a headless Chromium render."""
import shutil
import socket
import subprocess

import pytest
import torch
from PIL import Image

from minildm.checkpoints import save_model, sha256_file
from minildm.models.text import TinyTextEncoder
from minildm.models.unet import UNet, UNetConfig
from minildm.models.vae import VAE, VAEConfig

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--virtual-time-budget=15000", "--run-all-compositor-stages-before-draw"]


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """A tiny text-to-image model (tiny word encoder, 4x4 latents, a 16x16 VAE) saved as `ldm_text`."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    enc = TinyTextEncoder.from_captions(["a dark boot", "a light small sandal", "a bag"], dim=16, heads=2, max_length=8)
    unet = UNet(UNetConfig(in_channels=4, out_channels=4, image_size=4, base_channels=8, channel_mults=(1, 2),
                           attention=("none", "none"), cross_attention=(True, True), heads=2, head_dim=8, groups=4,
                           time_dim=16, cond_dim=16))
    vae = VAE(VAEConfig(image_size=16, base_channels=8, groups=4))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a zero-initialised output layer would make every prompt alike: perturb all weights
        for p in list(unet.parameters()) + list(enc.parameters()):
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    vae_path = save_model(vae, folder / "tinyvae", meta={"latent_scale": 0.5})
    save_model(enc, folder / "ldm_text_encoder", meta={})
    save_model(unet, folder / "ldm_text", meta={"latent_vae": "tinyvae", "latent_vae_sha256": sha256_file(vae_path),
                                                "latent_scale": 0.5, "text_encoder": "tiny",
                                                "text_encoder_checkpoint": "ldm_text_encoder",
                                                "num_train_timesteps": 1000, "beta_schedule": "cosine",
                                                "prediction_type": "eps"})
    mp = pytest.MonkeyPatch()
    mp.setenv("MINILDM_CHECKPOINTS", str(folder))
    yield folder
    mp.undo()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_generate_returns_a_grid_and_negative_prompts_change_it(tiny_checkpoints):
    from minildm.demo import make_generate
    generate = make_generate()
    a = generate("a dark boot", "", 3.0, 3, 0, 4)
    b = generate("a dark boot", "  ", 3.0, 3, 0, 4)                      # a blank negative prompt = none
    c = generate("a dark boot", "a bag", 3.0, 3, 0, 4)
    assert a.size == (4 * (4 * 16 + 5 * 2), 4 * (16 + 2 * 2)) and a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    with pytest.raises(ValueError, match="images must be 1..16"):
        generate("a dark boot", "", 3.0, 3, 0, 17)


def test_a_missing_text_model_is_explained(tmp_path, monkeypatch, capsys):
    from minildm.cli import main
    monkeypatch.setenv("MINILDM_CHECKPOINTS", str(tmp_path))
    pytest.importorskip("gradio")
    assert main(["demo", "--model", "nothing_here"]) == 2
    assert "no checkpoint named 'nothing_here'" in capsys.readouterr().err


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
    path = client.predict("a light sandal", "a bag", 2.0, 5, 1, 2, api_name="/generate")
    image = Image.open(path)
    assert image.size == (4 * (2 * 16 + 3 * 2), 4 * (16 + 2 * 2))


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
    assert "text-to-image on Fashion-MNIST" in dom and "Generate" in dom   # Gradio's JavaScript built the page
