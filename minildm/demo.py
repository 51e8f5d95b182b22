"""`minildm demo`: a small Gradio app over a shipped checkpoint — pick a garment, a negative garment, the guidance
scale, the steps and a seed, and get a grid of samples.

Until chapter 05's text-to-image model ships, the "prompt" is a class of the class-conditional model
`ddpm_cond` and the negative prompt a class whose prediction replaces the unconditional one in the CFG line
(`guided_sample(..., negative_labels=...)`): eps = eps_neg + s * (eps_cond - eps_neg).

Needs the optional extra: `pip install -e ".[demo]"` (gradio). Runs on 127.0.0.1 by default.

References: Gradio Blocks (https://www.gradio.app/docs/gradio/blocks); Ho & Salimans (2022) for CFG.
Documented in README.md (Command line).
"""
from __future__ import annotations

import torch

from minildm import checkpoints, data, viz
from minildm.models.unet import UNet
from minildm.pipelines.guided import guided_sample
from minildm.bench import schedulers_for

NONE = "(none: unconditional)"


def make_generate(model_name: str = "ddpm_cond", device=None):
    """The function the app calls: (garment, negative, guidance_scale, steps, seed, n) -> PIL image grid."""
    from PIL import Image
    model = checkpoints.load_model(UNet, checkpoints.find(model_name), device=device or "cpu")
    scheduler = schedulers_for(model, guided=True)[1]  # DDIM as the bench samples it
    names = list(data.CLASS_NAMES)

    def generate(garment: str, negative: str, guidance_scale: float, steps: int, seed: int, n: int):
        if garment not in names:
            raise ValueError(f"unknown garment {garment!r}; choose one of {names}.")
        if negative != NONE and negative not in names:
            raise ValueError(f"unknown negative garment {negative!r}; choose one of {names} or {NONE!r}.")
        n, steps, seed = int(n), int(steps), int(seed)
        labels = torch.full((n,), names.index(garment))
        negative_labels = None if negative == NONE else torch.full((n,), names.index(negative))
        images = guided_sample(model, scheduler, labels, float(guidance_scale), torch.Generator().manual_seed(seed),
                               steps, progress=False, negative_labels=negative_labels).images
        grid = viz.grid_array(images.cpu(), nrow=min(n, 8))  # (H, W) in [0, 1]
        img = Image.fromarray((grid * 255).round().astype("uint8"))
        return img.resize((img.width * 4, img.height * 4), Image.NEAREST)

    return generate


def build_app(model_name: str = "ddpm_cond", device=None):
    """The Gradio Blocks app; its endpoint is `/generate` (for gradio_client)."""
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError("the demo needs gradio: pip install -e \".[demo]\"") from err
    generate = make_generate(model_name, device)
    names = list(data.CLASS_NAMES)
    with gr.Blocks(title="minildm demo") as app:
        gr.Markdown("# minildm · class-conditional Fashion-MNIST with classifier-free guidance\n"
                    "Chapter 02's reference model, sampled with DDIM on this machine's CPU. s = 1 is plain "
                    "conditional sampling, s = 0 unconditional; a negative garment replaces the unconditional "
                    "prediction in eps = eps_neg + s (eps_cond - eps_neg).")
        with gr.Row():
            with gr.Column():
                garment = gr.Dropdown(names, value="Sneaker", label="garment (the prompt)")
                negative = gr.Dropdown([NONE] + names, value=NONE, label="negative garment (the negative prompt)")
                scale = gr.Slider(0.0, 10.0, value=3.0, step=0.5, label="guidance scale s")
                steps = gr.Slider(5, 100, value=25, step=1, label="DDIM steps")
                seed = gr.Number(value=0, precision=0, label="seed")
                n = gr.Slider(1, 16, value=8, step=1, label="images")
                button = gr.Button("Generate", variant="primary")
            output = gr.Image(label="samples", type="pil")
        button.click(generate, [garment, negative, scale, steps, seed, n], output, api_name="generate")
    return app


def launch(host: str = "127.0.0.1", port: int = 7860, model_name: str = "ddpm_cond", device=None, **kwargs):
    """Start the app (blocking unless `prevent_thread_lock=True` is passed); returns the app."""
    app = build_app(model_name, device)
    app.launch(server_name=host, server_port=port, **kwargs)
    return app
