"""Chapter 02's GPU runs in one command, sized to one short lease of a GPU machine.

    python tools/gpu_session.py --out DIR [--budget-s 540] [--dry-run]

What a 2-core CPU cannot afford, run side by side on one GPU, each step an ordinary committed command:
  1. probe: training steps/s of the three runs below, side by side on random data (a few seconds);
  2. train, with step counts fitted to the time left (every number below names its command):
     - `python -m minildm train ddpm_cond --steps K --batch-size 512` continues the shipped weights
       (on a GPU a step of 512 images costs about what one of 128 does: the small UNet is launch-bound there);
     - `python -m minildm.studies train ddpm_cond --steps S` and `... ddpm_cond_peer --steps S`: minildm's UNet
       and chapter 02's diffusers recipe from scratch on the same S x 128 images;
  3. measure at n = 5,000 (`minildm bench ddpm_cond`, `minildm.studies eval ... --steps S`) as each run ends;
  4. copy results, the continued weights and the logs into DIR as they appear (DIR/plan.json says what ran).
`--dry-run` runs the same path on tiny budgets (on a CPU too), in a scratch copy of the repository, never here.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = [sys.executable]
CONT_BATCH = 512


def probe(name: str, batch: int, seconds: float, device: str, start_at: float, warmup: int) -> None:
    """Print the training steps/s of recipe `name` at `batch`, on random data, timed from `start_at` (a shared
    wall-clock start, so that probes run side by side) after `warmup` steps."""
    import torch
    from minildm.recipes import DIFFUSION_RECIPES
    from minildm.training import train_diffusion
    recipe = DIFFUSION_RECIPES[name]
    c, s = recipe.model.in_channels, recipe.model.image_size
    data = torch.utils.data.TensorDataset(torch.randn(4 * batch, c, s, s).clamp(-1, 1), torch.randint(0, 10, (4 * batch,)))
    model = recipe.model_class(recipe.model)
    cfg = dataclasses.replace(recipe.train, steps=warmup, batch_size=batch, checkpoint_every=10**9)
    train_diffusion(model, recipe.scheduler(), data, cfg, device=device, progress=False)  # warm-up
    time.sleep(max(0.0, start_at - time.time()))
    result = train_diffusion(model, recipe.scheduler(), data, dataclasses.replace(cfg, steps=10**6), device=device,
                             progress=False, max_seconds=seconds)
    print(json.dumps({"recipe": name, "batch": batch, "steps_per_s": result.images_seen / batch / result.seconds}))


class Session:
    def __init__(self, out: Path, budget_s: float, dry: bool):
        self.t0, self.out, self.budget, self.dry = time.monotonic(), out, budget_s, dry
        self.logs = ROOT / "runs" / "gpu_logs"  # packed into out/logs.tar.gz (out takes few files)
        self.logs.mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        self.plan: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "dry_run": dry, "commands": []}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}",
                    "OMP_NUM_THREADS": "4"}  # three processes share the CPU that launches their kernels
        if dry:
            self.env |= {"MINILDM_QUICK": "1", "OMP_NUM_THREADS": "1"}  # bench's speed check at its quick size
        self.device = "cuda" if not dry else "cpu"

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def start(self, tag: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        cmd = PY + args
        shown = " ".join(f"{k}={v}" for k, v in (env or {}).items()) + " python " + " ".join(args)
        self.plan["commands"].append({"tag": tag, "cmd": shown.strip(), "at_s": self.elapsed()})
        self.save_plan()
        log = open(self.logs / f"{tag}.log", "w")
        return subprocess.Popen(cmd, cwd=ROOT, env=self.env | (env or {}), stdout=log, stderr=subprocess.STDOUT)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def save_plan(self) -> None:
        (self.out / "plan.json").write_text(json.dumps(self.plan, indent=2))

    def copy(self, src: Path, name: str) -> None:
        if src.exists():
            shutil.copyfile(src, self.out / name)

    def pack_logs(self) -> None:
        with tarfile.open(self.out / "logs.tar.gz", "w:gz") as tar:
            tar.add(self.logs, arcname="logs")
            for state in (ROOT / "runs").glob("**/state.json"):  # loss curves and recipes, not the weights
                tar.add(state, arcname=f"runs/{state.relative_to(ROOT / 'runs')}")
            for lineage in (ROOT / "runs").glob("**/lineage.json"):
                tar.add(lineage, arcname=f"runs/{lineage.relative_to(ROOT / 'runs')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("probe")
    p.add_argument("recipe")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--start-at", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--budget-s", type=float, default=540)
    parser.add_argument("--eval-reserve-s", type=float, default=110)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "probe":
        probe(args.recipe, args.batch, args.seconds, args.device, args.start_at, args.warmup)
        return 0
    if args.out is None:
        parser.error("--out DIR is required")
    s = Session(args.out, args.budget_s, args.dry_run)
    dev = ["--device", s.device]
    n = 64 if args.dry_run else 5000
    cap_k, cap_s = (6, 4) if args.dry_run else (60_000, 20_500)
    unit = 1 if args.dry_run else 500

    # 1. probe, side by side as they will run
    probe_s, warmup = (3, 1) if args.dry_run else (10, 10)
    start_at = time.time() + 25  # after every probe's imports, CUDA start and warm-up
    runs = {"cont": ("ddpm_cond", CONT_BATCH), "arm_cond": ("ddpm_cond", 128), "arm_peer": ("ddpm_cond_peer", 128)}
    procs = {k: s.start(f"probe_{k}", ["tools/gpu_session.py", "probe", r, "--batch", str(b), "--seconds", str(probe_s),
                                       "--start-at", f"{start_at:.1f}", "--warmup", str(warmup), *dev])
             for k, (r, b) in runs.items()}
    rates = {}
    for k, proc in procs.items():
        proc.wait()
        lines = (s.logs / f"probe_{k}.log").read_text().strip().splitlines()
        if proc.returncode == 0 and lines:
            rates[k] = json.loads(lines[-1])["steps_per_s"]
        else:
            print(f"probe {k} failed:\n" + "\n".join(lines[-20:]), flush=True)
    if "cont" not in rates:
        s.pack_logs()
        return 1
    window = s.left() - args.eval_reserve_s
    k_steps = max(unit, min(cap_k, int(0.8 * rates["cont"] * window) // unit * unit))
    s_steps = min(cap_s, int(0.8 * rates.get("arm_peer", 0) * window) // unit * unit)
    study = s_steps >= (2 if args.dry_run else 2000) and "arm_cond" in rates
    s.plan |= {"probe_steps_per_s": rates, "train_window_s": round(window), "cont_steps": k_steps,
               "study_steps": s_steps if study else None}
    s.save_plan()
    print(json.dumps(s.plan, indent=2), flush=True)

    # 2. train side by side. The shipped weights are kept aside and measured here too (first in the queue), so that
    #    GPU rows can be compared with CPU rows of the same weights. Measurements run without TF32.
    ckpt = ROOT / "data" / "checkpoints"
    keep = ROOT / "runs" / "shipped_before"
    keep.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(ckpt / f"ddpm_cond{suffix}", keep / f"ddpm_cond{suffix}")
    exact = {"NVIDIA_TF32_OVERRIDE": "0"}
    training = {"cont": s.start("train_cont", ["-m", "minildm", "train", "ddpm_cond", "--steps", str(k_steps),
                                               "--batch-size", str(CONT_BATCH), *dev])}
    if study:
        for arm in ("arm_cond", "arm_peer"):
            training[arm] = s.start(f"train_{arm}", ["-m", "minildm.studies", "train", runs[arm][0], "--steps",
                                                     str(s_steps), *dev])
    queue = [("bench_shipped", ["-m", "minildm", "bench", "ddpm_cond", "-n", str(n), "--guidance-scale", "1.5",
                                "--out", "runs/bench_shipped", *dev],
              exact | {"MINILDM_CHECKPOINTS": str(keep)})]
    done, running = set(), None
    hard_stop = 25  # seconds kept for packing the logs
    while True:
        for k, proc in training.items():
            if k not in done and proc.poll() is not None:
                done.add(k)
                s.plan.setdefault("finished", {})[k] = {"rc": proc.returncode, "at_s": s.elapsed()}
                if proc.returncode != 0:
                    continue
                if k == "cont":
                    s.copy(ckpt / "ddpm_cond.safetensors", "ddpm_cond.safetensors")
                    s.copy(ckpt / "ddpm_cond.json", "ddpm_cond.json")
                    bench = ["-m", "minildm", "bench", "ddpm_cond", "-n", str(n), "--out", "runs/bench", *dev]
                    queue.insert(0, ("bench_cont", bench + ["--guidance-scale", "1.5", "1.25", "2"], exact))  # first
                    queue.append(("bench_cont_ddim100", bench + ["--guidance-scale", "1.5", "--steps", "100"], exact))
                else:
                    queue.append((f"eval_{k}", ["-m", "minildm.studies", "eval", runs[k][0], "--steps", str(s_steps),
                                                "--n", str(n), *dev], exact))
        if running is not None and running[1].poll() is not None:
            s.plan.setdefault("finished", {})[running[0]] = {"rc": running[1].returncode, "at_s": s.elapsed()}
            s.copy(ROOT / "runs" / "bench" / "metrics.json", "bench_metrics.json")
            s.copy(ROOT / "runs" / "bench_shipped" / "metrics.json", "bench_shipped.json")
            s.copy(ROOT / "results" / "equal_images.json", "equal_images.json")
            running = None
        if running is None and queue:
            tag, cmd, env = queue.pop(0)
            running = (tag, s.start(tag, cmd, env))
        if running is None and not queue and len(done) == len(training):
            break
        if s.left() < hard_stop:
            for tag, proc in list(training.items()) + ([running] if running else []):
                if proc.poll() is None:
                    proc.kill()
                    s.plan.setdefault("killed", []).append(tag)
            s.plan["not_started"] = [tag for tag, _, _ in queue]
            break
        time.sleep(1)
    s.plan["ended_s"] = s.elapsed()
    s.save_plan()
    s.pack_logs()
    print(json.dumps(s.plan, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
