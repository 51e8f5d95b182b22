"""`minildm demo`: a small Gradio app over the shipped text-to-image model — a prompt, a negative prompt, the
guidance scale, the steps and a seed, and get a grid of samples.

It runs chapter 05's `text_to_image` (the loop of diffusers' `StableDiffusionPipeline.__call__`, frozen MiniLM
text encoder, DDIM, classifier-free guidance) on this machine's CPU; a negative prompt's embedding replaces the
empty prompt's in the CFG line: eps = eps_neg + s * (eps_cond - eps_neg).

Needs the optional extra: `pip install -e ".[demo]"` (gradio). Runs on 127.0.0.1 by default.

References: Gradio Blocks (https://www.gradio.app/docs/gradio/blocks); Ho & Salimans (2022) for CFG.
Documented in README.md (Command line); the model in notebooks/05_text_conditioning_cfg.ipynb.
"""
from __future__ import annotations

import torch

from minildm import viz
from minildm.bench import schedulers_for
from minildm.pipelines.text import text_to_image

MAX_IMAGES = 16


def make_generate(model_name: str = "ldm_text", device=None):
    """The function the app calls: (prompt, negative_prompt, guidance_scale, steps, seed, n) -> PIL image grid."""
    from PIL import Image

    from minildm.text_training import load_text_model
    unet, vae, encoder = load_text_model(model_name, device)
    scheduler = schedulers_for(unet)[1]  # DDIM as the bench samples it (no clipping: latents)

    def generate(prompt: str, negative_prompt: str, guidance_scale: float, steps: int, seed: int, n: int):
        if not isinstance(prompt, str):
            raise TypeError(f"the prompt must be text, got {type(prompt).__name__}.")
        n, steps, seed = int(n), int(steps), int(seed)
        if not 1 <= n <= MAX_IMAGES or steps < 1:
            raise ValueError(f"images must be 1..{MAX_IMAGES} and steps >= 1, got {n} images and {steps} steps.")
        negative = [negative_prompt] * n if negative_prompt and negative_prompt.strip() else None
        images = text_to_image(unet, vae, encoder, scheduler, [prompt] * n, negative, float(guidance_scale),
                               torch.Generator().manual_seed(seed), steps, device=device, progress=False).images
        grid = viz.grid_array(images.cpu(), nrow=min(n, 8))  # (H, W) in [0, 1]
        img = Image.fromarray((grid * 255).round().astype("uint8"))
        return img.resize((img.width * 4, img.height * 4), Image.NEAREST)

    return generate


def build_app(model_name: str = "ldm_text", device=None):
    """The Gradio Blocks app; its endpoint is `/generate` (for gradio_client)."""
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError("the demo needs gradio: pip install -e \".[demo]\"") from err
    generate = make_generate(model_name, device)
    with gr.Blocks(title="minildm demo") as app:
        gr.Markdown("# minildm · text-to-image on Fashion-MNIST\n"
                    f"Chapter 05's reference model (`{model_name}`): a prompt through a text encoder, a latent UNet "
                    "with cross-attention, DDIM and classifier-free guidance, on this machine's CPU. Try garments with "
                    "dark / light, small / large, plain / patterned. s = 1 is plain conditional sampling; a negative "
                    "prompt replaces the empty prompt in eps = eps_neg + s (eps_cond - eps_neg).")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(value="a dark ankle boot", label="prompt")
                negative = gr.Textbox(value="", label="negative prompt (optional)")
                scale = gr.Slider(0.0, 12.0, value=4.0, step=0.5, label="guidance scale s")
                steps = gr.Slider(5, 100, value=25, step=1, label="DDIM steps")
                seed = gr.Number(value=0, precision=0, label="seed")
                n = gr.Slider(1, MAX_IMAGES, value=8, step=1, label="images")
                button = gr.Button("Generate", variant="primary")
            output = gr.Image(label="samples", type="pil")
        button.click(generate, [prompt, negative, scale, steps, seed, n], output, api_name="generate")
    return app


def launch(host: str = "127.0.0.1", port: int = 7860, model_name: str = "ldm_text", device=None, **kwargs):
    """Start the app (blocking unless `prevent_thread_lock=True` is passed); returns the app."""
    app = build_app(model_name, device)
    app.launch(server_name=host, server_port=port, **kwargs)
    return app
