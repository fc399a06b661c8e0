"""Recipe: one lent GPU, one command: check the CUDA-graph step, time it, then train the paper's
5-way 1-shot schedule (60,000 iterations) for as long as the lease allows (issues 32 and 36).

    python analyses/gpu_lease.py --out-dir "$OUT" --budget 540

From the repository's root on the GPU machine, with Omniglot at ../shared/data/omniglot (the
path the CPU runs record, so that a run started here resumes there). Stages, each timed:

1. check: 8 iterations of two 5-way 1-shot MAML runs with the step captured as a CUDA graph
   and run eagerly (twice: the noise floor); each iteration's training loss must agree to
   float rounding (the graph replays from iteration 4 on). If it does not, training runs eagerly.
2. bench: repsim.bench.batched on 5-way 1-shot MAML (4 runs) and ANIL (3), 20-way 1-shot MAML (3).
3. train: the 5-way 1-shot groups of issue 32 into checkpoints/in_progress/omniglot_5w1s/ (MAML
   seeds 0-2 and seed 0 with PyTorch's head initialisation as one batched run; ANIL seeds 0-2
   as another when the measured rate says both fit), stopping with a checkpoint at the budget.
   A group whose runs are all published finished (checkpoints/omniglot_5w1s/) is skipped: all
   of them are, since 2026-12-07, so a lease now checks and times only.

Every minute, and at the end, the run folders are packed into at most 7 tar files under
--out-dir (the lease returns 8 files of 16 MiB at most): checkpoints but the latest without
their optimiser state. Unpack them at the repository's root.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from pathlib import Path

import torch

DATA_ROOT = "../shared/data/omniglot"
RUNS = Path("checkpoints/in_progress/omniglot_5w1s")
PUBLISHED = Path("checkpoints/omniglot_5w1s")
GROUPS = {  # run folder: (recipe, overrides)
    "maml": {"maml-s0": ("omniglot_5w1s_maml", ["seed=0"]),
             "maml-s1": ("omniglot_5w1s_maml", ["seed=1"]),
             "maml-s2": ("omniglot_5w1s_maml", ["seed=2"]),
             "maml-pytorchhead-s0": ("omniglot_5w1s_maml", ["seed=0", "head_init=pytorch"])},
    "anil": {"anil-s0": ("omniglot_5w1s_anil", ["seed=0"]),
             "anil-s1": ("omniglot_5w1s_anil", ["seed=1"]),
             "anil-s2": ("omniglot_5w1s_anil", ["seed=2"])},
}
TAR_LIMIT = 15 * 2**20


def configs(group: str, *extra: str):
    from repsim.config import load_config
    return [load_config(recipe, overrides + ["checkpoint_every=5000", f"data_root={DATA_ROOT}", *extra])
            for recipe, overrides in GROUPS[group].values()]


def stage(name: str):
    print(f"\n=== {name} ({time.strftime('%H:%M:%S')}) ===", flush=True)


def check(tmp: Path) -> bool:
    """Graph replay against eager on the same device: the per-iteration training losses of two
    5-way 1-shot MAML runs over 8 iterations (the graph replays from iteration 4 on), with two
    eager runs side by side for the noise floor (a non-deterministic kernel makes eager differ
    from eager; chaos then grows it)."""
    from repsim.batched import train_runs

    cs = configs("maml", "iterations=8", "checkpoint_every=8", "eval_every=1", "eval_tasks=2")[:2]
    losses = {}
    for name, graphs in (("graph", True), ("eager", False), ("eager again", False)):
        outs = [tmp / f"{name}{r}" for r in range(2)]
        train_runs(cs, outs, device="cuda", graphs=graphs, progress=False)
        losses[name] = [[json.loads(x)["train_loss"] for x in (o / "metrics.jsonl").read_text().splitlines()]
                        for o in outs]
    for name, runs in losses.items():
        print(f"  {name:<12}" + "  ".join(f"{v:.6f}" for v in runs[0]))
    noise = max(abs(a - b) for r in range(2) for a, b in zip(losses["eager"][r], losses["eager again"][r]))
    gap = max(abs(a - b) for r in range(2) for a, b in zip(losses["graph"][r], losses["eager"][r]))
    print(f"  largest loss difference: graph vs eager {gap:.2e}, eager vs eager {noise:.2e}")
    return gap <= max(10 * noise, 1e-5)


def child(argv: list[str], result: Path, timeout: float):
    """This script's stage in a child process; its JSON result, or None if it failed."""
    try:
        subprocess.run([sys.executable, __file__, "--out-dir", "unused", *argv, "--result", str(result)],
                       timeout=timeout, check=True)
        return json.loads(result.read_text())
    except Exception as e:
        print(f"  stage {argv[1]} failed: {e}", flush=True)
        return None


def pack(out_dir: Path, staging: Path) -> None:
    """The run folders, checkpoints but each run's latest without optimiser state, into tars."""
    from repsim.checkpoint import load_checkpoint, save_checkpoint

    folders = sorted(p for p in RUNS.parent.glob("*/*") if (p / "config.yaml").is_file())
    entries = []  # per run: (file to pack, its name in the tar)
    for run in folders:
        ckpts = sorted(run.glob("checkpoints/iter-*.safetensors"))
        files = [(f, f) for f in (run / "config.yaml", run / "metrics.jsonl") if f.is_file()]
        finals = [run / "model.safetensors"] if (run / "model.safetensors").is_file() else []
        for path in ckpts[:-1] + finals:
            light = staging / path
            if not light.is_file() or light.stat().st_mtime < path.stat().st_mtime:
                save_checkpoint(light, load_checkpoint(path))  # loaded without Adam's state
            files.append((light, path))
        files += [(c, c) for c in ckpts[-1:]]  # the latest keeps Adam's state: runs resume from it
        entries.append(files)
    bins: list[list] = []
    for run_files in entries:
        size = sum(src.stat().st_size for src, _ in run_files)
        for b in bins:
            if b[0] + size <= TAR_LIMIT:
                b[0] += size
                b[1].extend(run_files)
                break
        else:
            bins.append([size, list(run_files)])
    for i, (_, files) in enumerate(bins[:7]):
        tmp = out_dir / f".runs{i}.tar.tmp"
        with tarfile.open(tmp, "w") as tar:
            for src, name in files:
                tar.add(src, arcname=str(name))
        os.replace(tmp, out_dir / f"runs{i}.tar")


def packer(out_dir: Path, staging: Path, stop: threading.Event) -> None:
    while not stop.wait(60):
        try:
            pack(out_dir, staging)
        except Exception as e:  # a checkpoint mid-write, say: the next round packs it
            print(f"  (packing skipped: {e})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--budget", type=float, default=540, help="seconds for the whole script")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, 12 iterations: the flow and the packing")
    p.add_argument("--stage", choices=["check", "bench"], help="(internal) run one stage, its result to --result")
    p.add_argument("--result", type=Path)
    p.add_argument("--eager", action="store_true")
    args = p.parse_args()
    if args.dry_run:
        return dry_run(args.out_dir)
    if args.stage == "check":
        args.result.write_text(json.dumps(check(Path(tempfile.mkdtemp()))))
        return
    if args.stage == "bench":
        from repsim.bench.batched import main as bench
        settings = [(5, 1, "maml", 4), (5, 1, "anil", 3)] + ([] if args.eager else [(20, 1, "maml", 3)])
        args.result.write_text(json.dumps(bench("cuda", DATA_ROOT, settings=settings, iterations=15,
                                                graphs=not args.eager)))
        return
    end = time.monotonic() + args.budget
    tmp = Path(tempfile.mkdtemp())
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {os.cpu_count()} CPUs")

    # check and bench in child processes: a failed capture can leave a process's CUDA unusable
    stage("check")
    graphs = child(["--stage", "check"], tmp / "check.json", timeout=120) is True
    print(f"  training with CUDA graphs: {graphs}")

    stage("bench")
    rows = child(["--stage", "bench"] + ([] if graphs else ["--eager"]), tmp / "bench.json", timeout=150) or []
    rates = {(r["setting"], r["runs"], r["mode"]): r["s_per_iter"] for r in rows}

    stage("train")
    from repsim.batched import train_runs
    stop = threading.Event()
    staging = tmp / "staging"
    threading.Thread(target=packer, args=(args.out_dir, staging, stop), daemon=True).start()
    mode = "graph" if graphs else "eager"
    t_maml = rates.get(("5-way 1-shot maml", 4, mode), rates.get(("5-way 1-shot maml", 1, "eager"), 0.05) * 4)
    t_anil = rates.get(("5-way 1-shot anil", 3, mode), rates.get(("5-way 1-shot anil", 1, "eager"), 0.02) * 3)
    left = end - time.monotonic() - 45  # the last packing
    both = 1.15 * 60000 * (t_maml + t_anil) < left
    print(f"  measured {t_maml:.4f} s/iteration (MAML x4), {t_anil:.4f} (ANIL x3); {left:.0f} s left: "
          f"{'both groups' if both else 'MAML only'}", flush=True)
    workers = max(1, min(12, (os.cpu_count() or 2) - 2))
    for group in (["maml", "anil"] if both else ["maml"]):
        left = end - time.monotonic() - 45
        if left < 30:
            break
        if all((PUBLISHED / name / "model.safetensors").is_file() for name in GROUPS[group]):
            print(f"  {group}: trained to the end and published in {PUBLISHED}: nothing to train", flush=True)
            continue
        tic = time.perf_counter()
        try:
            finals = train_runs(configs(group), [RUNS / name for name in GROUPS[group]], device="cuda",
                                graphs=graphs, workers=workers, time_limit=left, progress=False)
            print(f"  {group}: {[f.name for f in finals]} in {time.perf_counter() - tic:.0f} s", flush=True)
        except Exception:
            traceback.print_exc()
    stop.set()
    stage("pack")
    pack(args.out_dir, staging)
    for f in sorted(args.out_dir.glob("runs*.tar")):
        with tarfile.open(f) as tar:
            print(f"  {f.name}: {f.stat().st_size / 2**20:.1f} MiB, {len(tar.getnames())} files")
    shutil.rmtree(tmp, ignore_errors=True)


def dry_run(out_dir: Path) -> None:
    """The training and packing stages on the CPU, on a few iterations."""
    from repsim.batched import train_runs
    for group in ("maml", "anil"):
        train_runs(configs(group, "iterations=12", "checkpoint_every=5", "eval_every=6", "eval_tasks=4"),
                   [RUNS / name for name in GROUPS[group]], device="cpu", workers=2, time_limit=60, progress=False)
    pack(out_dir, Path(tempfile.mkdtemp()))
    for f in sorted(out_dir.glob("runs*.tar")):
        with tarfile.open(f) as tar:
            print(f"  {f.name}: {f.stat().st_size / 2**20:.1f} MiB: {tar.getnames()}")


if __name__ == "__main__":
    main()
