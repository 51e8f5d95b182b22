"""The `minildm` command line: train the reference checkpoints, and (as chapters land) sample and benchmark.

    minildm train --list              the recipes
    minildm train ddpm [--steps N]    train or resume a recipe; exports data/checkpoints/<recipe>.*
    minildm train classifier          the evaluation harness's reference classifier
    minildm bench [ddpm] [-n 5000]    metrics + timings of the shipped checkpoints -> results/metrics.json
    minildm card ddpm                 regenerate data/checkpoints/ddpm.md from what was measured
    minildm sample ddpm_cond --label sneaker -n 16 -o sneakers.png
    minildm generate "a dark ankle boot" -n 16 -o boots.png     text-to-image (chapter 05)
    minildm train all                 every reference checkpoint, in dependency order

References: argparse. Documented in README.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


# `minildm train all`: every reference checkpoint, each after the ones it depends on
TRAIN_ALL = ("classifier", "ddpm", "ddpm_cond", "vae", "ldm_cond", "ldm_text", "ldm_text_tiny")


def _train(args) -> int:
    from minildm.recipes import DIFFUSION_RECIPES, VAE_RECIPES, train_recipe
    from minildm.text_training import TEXT_RECIPES, train_text_recipe
    recipes = sorted(DIFFUSION_RECIPES) + sorted(VAE_RECIPES) + sorted(TEXT_RECIPES) + ["classifier"]
    if args.recipe == "all":
        if args.export_only or args.steps:
            print("minildm train all: --steps and --export-only apply to one recipe; name it.", file=sys.stderr)
            return 2
        for name in TRAIN_ALL:
            print(f"== minildm train {name}")
            code = _train(argparse.Namespace(**{**vars(args), "recipe": name}))
            if code:
                return code
        return 0
    if args.list or not args.recipe:
        R = DIFFUSION_RECIPES | VAE_RECIPES | TEXT_RECIPES
        for name in recipes:
            print(f"{name:<14} {R[name].description if name in R else 'reference Fashion-MNIST classifier (evaluation harness)'}")
        return 0
    if args.recipe not in recipes:
        print(f"minildm train: unknown recipe {args.recipe!r}; choose from {', '.join(recipes)} "
              f"(or `minildm train --list`).", file=sys.stderr)
        return 2
    if args.batch_size is not None and (args.recipe not in DIFFUSION_RECIPES or args.batch_size < 1):
        print(f"minildm train: --batch-size {args.batch_size} needs a diffusion recipe "
              f"({', '.join(DIFFUSION_RECIPES)}) and a positive size.", file=sys.stderr)
        return 2
    if args.minutes is not None and (args.recipe not in DIFFUSION_RECIPES or args.minutes <= 0 or args.export_only):
        print(f"minildm train: --minutes {args.minutes} needs a diffusion recipe ({', '.join(DIFFUSION_RECIPES)}), "
              f"a positive number and no --export-only.", file=sys.stderr)
        return 2
    if args.until is not None and (args.recipe not in DIFFUSION_RECIPES or args.until < 1 or args.export_only):
        print(f"minildm train: --until {args.until} needs a diffusion recipe, a step >= 1 and no --export-only.",
              file=sys.stderr)
        return 2
    if args.precision is not None and (args.recipe not in DIFFUSION_RECIPES or args.export_only):
        print(f"minildm train: --precision {args.precision} needs a diffusion recipe ({', '.join(DIFFUSION_RECIPES)}) "
              f"and no --export-only.", file=sys.stderr)
        return 2
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.recipe == "classifier":
        from minildm.models.classifier import main as train_classifier_main
        return train_classifier_main([] if args.steps is None else ["--epochs", str(args.steps)]) or 0
    if args.recipe in TEXT_RECIPES:
        if args.export_only:
            print("minildm train: a text recipe exports when it stops; run it with --steps of what it has done.",
                  file=sys.stderr)
            return 2
        path = train_text_recipe(args.recipe, steps=args.steps, run_dir=args.run_dir, device=args.device,
                                 export=not args.no_export)
    elif args.export_only:
        from minildm.checkpoints import SHIPPED_DIR
        from minildm.recipes import export_run
        path = export_run(args.recipe, args.run_dir, args.out_dir or SHIPPED_DIR, args.export_name)
    else:
        path = train_recipe(args.recipe, steps=args.steps, run_dir=args.run_dir, device=args.device,
                            export=not args.no_export, batch_size=args.batch_size,
                            max_seconds=None if args.minutes is None else 60 * args.minutes, stop_at=args.until,
                            precision=args.precision)
    print(f"saved {path}")
    return 0


def _sample(args) -> int:
    """`minildm sample MODEL`: a grid of samples from a shipped checkpoint, written as a PNG."""
    import torch

    from minildm import checkpoints, data
    from minildm.models.unet import UNet
    from minildm.pipelines.diffusion import sample
    from minildm.pipelines.guided import guided_sample
    from minildm.pipelines.latent import latent_guided_sample

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model not in ("ddpm", "ddpm_cond", "ldm_cond"):
        print(f"minildm sample: unknown model {args.model!r}; choose ddpm, ddpm_cond or ldm_cond.", file=sys.stderr)
        return 2
    label = None
    if args.label is not None:
        names = [n.lower() for n in data.CLASS_NAMES]
        if args.label.isdigit() and int(args.label) < len(names):
            label = int(args.label)
        elif args.label.lower() in names:
            label = names.index(args.label.lower())
        else:
            print(f"minildm sample: unknown label {args.label!r}; use 0-9 or one of: {', '.join(data.CLASS_NAMES)}.",
                  file=sys.stderr)
            return 2
    if args.n < 1 or args.steps < 1:
        print("minildm sample: -n and --steps must be >= 1.", file=sys.stderr)
        return 2
    if args.model == "ddpm" and label is not None:
        print("minildm sample: ddpm is unconditional; --label needs ddpm_cond or ldm_cond.", file=sys.stderr)
        return 2
    if args.guidance_interval is not None and args.model == "ddpm":
        print("minildm sample: --guidance-interval is a guidance setting: use it with ddpm_cond or ldm_cond.",
              file=sys.stderr)
        return 2
    try:
        generator = torch.Generator().manual_seed(args.seed)
        if args.model == "ldm_cond":
            from minildm.bench import load_latent_pair
            unet, vae = load_latent_pair("ldm_cond", args.device)
        else:
            unet = checkpoints.load_model(UNet, checkpoints.find(args.model), device=args.device or "cpu")
        from minildm.bench import schedulers_for
        scheduler = schedulers_for(unet, guided=True)[1]  # DDIM; no clipping for latent models
        labels = (torch.full((args.n,), label) if label is not None else torch.arange(args.n) % 10)
        if args.model == "ddpm":
            images = sample(unet, scheduler, args.n, generator, args.steps).images
        elif args.model == "ddpm_cond":
            images = guided_sample(unet, scheduler, labels, args.guidance_scale, generator, args.steps,
                                   guidance_interval=args.guidance_interval).images
        else:
            images = latent_guided_sample(unet, vae, scheduler, labels, args.guidance_scale, generator, args.steps,
                                          guidance_interval=args.guidance_interval).images
    except (checkpoints.CheckpointError, ValueError) as err:  # a missing checkpoint, a bad --guidance-interval
        print(f"minildm sample: {err}", file=sys.stderr)
        return 2
    out = _write_png(images, args.output, args.upscale)
    print(f"wrote {out} ({args.n} samples of {args.model}, {args.steps} DDIM steps, seed {args.seed})")
    return 0


def _write_png(images, path: str, upscale: int) -> Path:
    """A PNG grid written whole, then renamed: no half-written file on disk."""
    from PIL import Image

    from minildm import viz
    grid = viz.grid_array(images.cpu(), nrow=min(8, len(images)))  # (H, W) in [0, 1]
    out = Path(path)
    tmp = out.with_name(out.name + ".part")
    Image.fromarray((grid * 255).round().astype("uint8")).resize(
        (grid.shape[1] * upscale, grid.shape[0] * upscale), Image.NEAREST).save(tmp, format="PNG")
    tmp.replace(out)
    return out


def _generate(args) -> int:
    """`minildm generate "a dark ankle boot"`: text-to-image with the shipped model, offline, on the CPU."""
    import torch

    from minildm import checkpoints
    from minildm.bench import schedulers_for
    from minildm.pipelines.text import text_to_image
    from minildm.text_training import load_text_model
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.n < 1 or args.steps < 1:
        print("minildm generate: -n and --steps must be >= 1.", file=sys.stderr)
        return 2
    try:
        unet, vae, encoder = load_text_model(args.model, args.device)
    except (checkpoints.CheckpointError, ImportError, FileNotFoundError, ValueError) as err:
        print(f"minildm generate: {err}", file=sys.stderr)
        return 2
    scheduler = schedulers_for(unet)[1]  # DDIM, no clipping for latents
    generator = torch.Generator().manual_seed(args.seed)
    images = text_to_image(unet, vae, encoder, scheduler, [args.prompt] * args.n,
                           [args.negative] * args.n if args.negative else None, args.guidance_scale, generator,
                           args.steps).images
    out = _write_png(images, args.output, args.upscale)
    print(f"wrote {out} ({args.n} images of {args.prompt!r}, s = {args.guidance_scale:g}, {args.steps} DDIM steps, "
          f"seed {args.seed})")
    return 0


def _demo(args) -> int:
    from minildm.checkpoints import CheckpointError
    try:
        from minildm.demo import launch
        print(f"minildm demo on http://{args.host}:{args.port} (Ctrl-C to stop)")
        launch(args.host, args.port, args.model, args.device)
    except (ImportError, CheckpointError, FileNotFoundError) as err:  # missing gradio, checkpoint, text encoder
        print(f"minildm demo: {err}", file=sys.stderr)
        return 2
    return 0


def _bench(args) -> int:
    from minildm import bench, checkpoints, runtime
    quick = args.quick or runtime.is_quick()
    n = args.n if args.n is not None else (64 if quick else 5000)
    out = args.out or ("runs/bench-quick" if quick else str(bench.RESULTS))
    try:
        bench.run(args.models or None, n=n, sampler=args.sampler, steps=args.steps, out_dir=out,
                  device=args.device, quick=quick, guidance_scale=args.guidance_scale,
                  spacing=args.spacing, eta=args.eta, clipped_eps=args.clipped_eps, seed=args.seed,
                  guidance_interval=args.guidance_interval)
    except (ValueError, checkpoints.CheckpointError) as err:
        print(f"minildm bench: {err}", file=sys.stderr)
        return 2
    return 0


def _card(args) -> int:
    from minildm.cards import write_card
    print(f"wrote {write_card(args.name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minildm", description="minildm: diffusion from scratch on Fashion-MNIST.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser("train", help="train (or resume) a reference checkpoint recipe",
                           description="Train or resume a recipe; `--list` shows them.")
    train.add_argument("recipe", nargs="?", help="recipe name, e.g. ddpm or classifier; `all` trains every one in order")
    train.add_argument("--list", action="store_true", help="list the recipes and exit")
    train.add_argument("--steps", type=int, default=None,
                       help="total optimisation steps for diffusion recipes (epochs for the classifier)")
    train.add_argument("--batch-size", type=int, default=None,
                       help="override a diffusion recipe's batch size (the card states it), e.g. 512 on a GPU")
    train.add_argument("--run-dir", default="runs", help="where resumable training state is kept (default: runs/)")
    train.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    train.add_argument("--threads", type=int, default=None,
                       help="CPU threads for torch (1 is fastest when other jobs share a small machine)")
    train.add_argument("--minutes", type=float, default=None,
                       help="diffusion recipes: stop (and checkpoint) after this many minutes; the next run resumes")
    train.add_argument("--until", type=int, default=None, metavar="STEP",
                       help="diffusion recipes: stop (and checkpoint) at this step; unlike --steps, the lr schedule "
                            "stays that of the whole run (a snapshot mid-way)")
    train.add_argument("--precision", choices=["fp32", "bf16"], default=None,  # training.PRECISIONS (no torch import here)
                       help="diffusion recipes: bf16 runs the forward pass under bf16 autocast (1.8x for ddpm_cond_wide on a "
                            "CPU with AVX-512 BF16; the card states it); default: the recipe's (fp32)")
    train.add_argument("--no-export", action="store_true", help="keep the training state, do not export weights")
    train.add_argument("--export-only", action="store_true",
                       help="export the EMA weights of the run's last checkpoint to data/checkpoints/ and exit")
    train.add_argument("--export-name", default=None,
                       help="with --export-only: save under this name instead of the recipe's (e.g. vae_l1_3000)")
    train.add_argument("--out-dir", default=None, help="with --export-only: where to write (default data/checkpoints/)")
    train.set_defaults(func=_train)

    bench = sub.add_parser("bench", help="measure the shipped checkpoints; write results/metrics.json and .md",
                           description="Generate samples from each shipped checkpoint, compute the harness metrics "
                                       "(feature-FID with its floor, class accuracy) and time training and sampling "
                                       "against the peers; rows are merged into results/metrics.json.")
    bench.add_argument("models", nargs="*", help="which models (default: all shipped): ddpm, ddpm_cond, ddpm_cond_peer (chapter 02's diffusers recipe, once trained), ddpm_cond_wide (its capacity study, once trained), vae, ldm_cond, ldm_text, ldm_text_tiny, or a VAE snapshot vae_* (see --export-name)")
    bench.add_argument("--guidance-scale", type=float, nargs="+", default=[3.0],
                       help="CFG scale(s) s for class-conditional models (s=1 conditional, s=0 unconditional); "
                            "several values give a sweep, one row each")
    bench.add_argument("-n", type=int, default=None, help="samples per model (default 5000; 64 in quick mode)")
    bench.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm", "dpm++2m"],
                       help="ddim (default, --steps steps), ddpm (all 1000 steps; hours for 5,000 samples on CPU) or "
                            "dpm++2m (DPM-Solver++(2M), --steps steps; ddpm_cond and its peers)")
    bench.add_argument("--steps", type=int, default=50, help="DDIM or DPM-Solver steps (default 50)")
    bench.add_argument("--spacing", default="leading", choices=["leading", "trailing", "linspace"],
                       help="DDIM timestep spacing (default leading, as diffusers; Lin et al. 2023 Table 2)")
    bench.add_argument("--eta", type=float, default=0.0,
                       help="DDIM noise: 0 deterministic (default), 1 DDPM-like (ddpm, ddpm_cond, ldm_cond)")
    bench.add_argument("--clipped-eps", action="store_true",
                       help="ddpm only: DDIM recomputes eps from the clipped x0 (as guided sampling always does)")
    bench.add_argument("--guidance-interval", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                       help="ddpm_cond, ldm_cond: CFG at LO < t <= HI, conditional sampling elsewhere "
                            "(Kynkaanniemi et al. 2024)")
    bench.add_argument("--seed", type=int, default=0,
                       help="sampling seed for ddpm, ddpm_cond, ldm_cond (default 0; rows name any other)")
    bench.add_argument("--out", default=None, help="output folder (default results/; runs/bench-quick in quick mode)")
    bench.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    bench.add_argument("--quick", action="store_true", help="tiny n and short timings (MINILDM_QUICK=1 implies it)")
    bench.set_defaults(func=_bench)

    samp = sub.add_parser("sample", help="sample a grid from a shipped checkpoint into a PNG",
                          description="Sample with DDIM from ddpm, ddpm_cond (classifier-free guidance) or ldm_cond "
                                      "(latent diffusion, decoded by its VAE); writes a PNG grid.")
    samp.add_argument("model", help="ddpm, ddpm_cond or ldm_cond")
    samp.add_argument("--label", default=None, help="class name or index for conditional models (default: all ten)")
    samp.add_argument("-n", type=int, default=16, help="number of samples (default 16)")
    samp.add_argument("--guidance-scale", type=float, default=3.0, help="CFG scale s (1 conditional, 0 unconditional)")
    samp.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    samp.add_argument("--guidance-interval", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                      help="ddpm_cond, ldm_cond: guide at LO < t <= HI, s = 1 elsewhere (ldm_cond's card: 100 600)")
    samp.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same images")
    samp.add_argument("-o", "--output", default="samples.png", help="PNG to write (default samples.png)")
    samp.add_argument("--upscale", type=int, default=4, help="pixel upscaling of the PNG (default 4)")
    samp.add_argument("--device", default=None, help="cpu, cuda, mps (default cpu)")
    samp.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    samp.set_defaults(func=_sample)

    gen = sub.add_parser("generate", help="text-to-image: a PNG grid for a prompt (chapter 05's shipped model)",
                         description="Generate images for a prompt with the shipped text-to-image latent diffusion model "
                                     "(frozen MiniLM text encoder, classifier-free guidance, DDIM), offline on a CPU.")
    gen.add_argument("prompt", help='e.g. "a dark ankle boot"; at most 16 tokens are used (longer prompts are truncated)')
    gen.add_argument("--negative", default=None, help='a negative prompt, e.g. "sandal" (replaces the empty prompt of CFG)')
    gen.add_argument("-n", type=int, default=16, help="number of images (default 16)")
    gen.add_argument("--guidance-scale", type=float, default=4.0, help="CFG scale s (default 4; 1 = no guidance)")
    gen.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    gen.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same images")
    gen.add_argument("--model", default="ldm_text", help="text-to-image checkpoint: ldm_text (default) or ldm_text_tiny")
    gen.add_argument("-o", "--output", default="generated.png", help="PNG to write (default generated.png)")
    gen.add_argument("--upscale", type=int, default=4, help="pixel upscaling of the PNG (default 4)")
    gen.add_argument("--device", default=None, help="cpu, cuda, mps (default cpu)")
    gen.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    gen.set_defaults(func=_generate)

    demo = sub.add_parser("demo", help="a Gradio app over the shipped text-to-image model (needs the [demo] extra)",
                          description="Launch the Gradio demo: prompt, negative prompt, guidance scale, steps, "
                                      "seed -> image grid. Install with pip install -e \".[demo]\".")
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1, this machine only)")
    demo.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    demo.add_argument("--model", default="ldm_text", help="text-to-image checkpoint: ldm_text (default) or ldm_text_tiny")
    demo.add_argument("--device", default=None, help="cpu, cuda, mps (default cpu)")
    demo.set_defaults(func=_demo)

    card = sub.add_parser("card", help="rewrite a checkpoint's model card from its metadata and results/metrics.json")
    card.add_argument("name", help="checkpoint name, e.g. ddpm")
    card.set_defaults(func=_card)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)
