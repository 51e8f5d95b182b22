"""The `minildm` command line: train the reference checkpoints, and (as chapters land) sample and benchmark.

    minildm train --list              the recipes
    minildm train ddpm [--steps N]    train or resume a recipe; exports data/checkpoints/<recipe>.*
    minildm train classifier          the evaluation harness's reference classifier

References: argparse. Documented in README.md.
"""
from __future__ import annotations

import argparse
import sys


def _train(args) -> int:
    from minildm.recipes import DIFFUSION_RECIPES, train_recipe
    recipes = sorted(DIFFUSION_RECIPES) + ["classifier"]
    if args.list or not args.recipe:
        from minildm.recipes import DIFFUSION_RECIPES as R
        for name in recipes:
            print(f"{name:<12} {R[name].description if name in R else 'reference Fashion-MNIST classifier (evaluation harness)'}")
        return 0
    if args.recipe not in recipes:
        print(f"minildm train: unknown recipe {args.recipe!r}; choose from {', '.join(recipes)} "
              f"(or `minildm train --list`).", file=sys.stderr)
        return 2
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.recipe == "classifier":
        from minildm.models.classifier import main as train_classifier_main
        return train_classifier_main([] if args.steps is None else ["--epochs", str(args.steps)]) or 0
    if args.export_only:
        from minildm.recipes import export_run
        path = export_run(args.recipe, args.run_dir)
    else:
        path = train_recipe(args.recipe, steps=args.steps, run_dir=args.run_dir, device=args.device,
                            export=not args.no_export)
    print(f"saved {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minildm", description="minildm: diffusion from scratch on Fashion-MNIST.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser("train", help="train (or resume) a reference checkpoint recipe",
                           description="Train or resume a recipe; `--list` shows them.")
    train.add_argument("recipe", nargs="?", help="recipe name, e.g. ddpm or classifier")
    train.add_argument("--list", action="store_true", help="list the recipes and exit")
    train.add_argument("--steps", type=int, default=None,
                       help="total optimisation steps for diffusion recipes (epochs for the classifier)")
    train.add_argument("--run-dir", default="runs", help="where resumable training state is kept (default: runs/)")
    train.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    train.add_argument("--threads", type=int, default=None,
                       help="CPU threads for torch (1 is fastest when other jobs share a small machine)")
    train.add_argument("--no-export", action="store_true", help="keep the training state, do not export weights")
    train.add_argument("--export-only", action="store_true",
                       help="export the EMA weights of the run's last checkpoint to data/checkpoints/ and exit")
    train.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)
