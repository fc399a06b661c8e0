"""Recipe: long training runs kept in the repository between sessions (checkpoints/in_progress/).

    python analyses/runs_in_progress.py [--lighten] [FOLDER]

A run at the paper's 60,000 iterations takes longer than a working session on the CPU, so it
is trained in pieces (``repsim train --out RUN --resume``) and its folder committed as it goes.
This prints where each run stands (iteration, last validation accuracy, devices, and its pace
between its last two checkpoints). With
``--lighten`` it keeps the repository lean before a commit: every checkpoint but each run's
latest loses its optimiser state (a run resumes from its latest only; the others are for
through-training), and a checkpoint off the run's ``checkpoint_every`` grid that is not the
latest (left by a time limit) is deleted.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from repsim.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from repsim.train import saved_config

ROOT = Path("checkpoints/in_progress")


def runs(folder: Path) -> list[Path]:
    return sorted(p.parent for p in folder.glob("**/config.yaml"))


def lighten(run: Path) -> list[str]:
    """Drop the optimiser state of all but the latest checkpoint; delete off-grid ones."""
    every = saved_config(run)["checkpoint_every"]
    ckpts = sorted(run.glob("checkpoints/iter-*.safetensors"))
    done = []
    for path in ckpts[:-1] + ([run / "model.safetensors"] if (run / "model.safetensors").is_file() else []):
        c = load_checkpoint(path, with_optimizer=True)
        if path.parent.name == "checkpoints" and c.iteration % every:
            path.unlink()
            done.append(f"deleted {path.name}")
        elif c.optimizer:
            save_checkpoint(path, replace(c, optimizer={}))
            done.append(f"lightened {path.name}")
    return done


def status(run: Path) -> str:
    ckpts = sorted(run.glob("checkpoints/iter-*.safetensors"))
    if not ckpts:
        return f"{run}: no checkpoint yet"
    last = load_checkpoint(ckpts[-1], weights=False)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    val = next((x["val_accuracy"] for x in reversed(lines) if x.get("val_accuracy") is not None), None)
    finished = (run / "model.safetensors").is_file()
    return (f"{run}: iteration {last.iteration} of {last.config.iterations}"
            f"{' (finished)' if finished else ''}, last validation "
            f"{'-' if val is None else f'{val:.1f}%'}, devices {' '.join(last.extra.get('devices', []))}"
            f"{'' if finished else pace(ckpts, last)}")


def pace(ckpts: list[Path], last: Checkpoint) -> str:
    """Seconds per iteration between the last two checkpoints, and the hours left at that pace:
    machines differ (5w1s MAML on one thread: 0.4 s on a Zen 4 core, 1.0 s on a Zen 2 one), so a
    session plans its time limits from the run's own recent pace, not from the benchmarks."""
    if len(ckpts) < 2:
        return ""
    before = load_checkpoint(ckpts[-2], weights=False)
    seconds = last.extra.get("wall_time_s", 0.0) - before.extra.get("wall_time_s", 0.0)
    if last.iteration <= before.iteration or seconds <= 0:
        return ""
    rate = seconds / (last.iteration - before.iteration)
    hours = rate * (last.config.iterations - last.iteration) / 3600
    device = (last.extra.get("devices") or ["?"])[-1]  # the device the run moved to last
    return f", lately {rate:.2f} s per iteration on {device} ({hours:.1f} h to go at that pace)"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", type=Path, default=ROOT)
    p.add_argument("--lighten", action="store_true")
    args = p.parse_args(argv)
    found = runs(args.folder)
    if not found:  # the last runs were published (checkpoints/omniglot_5w1s, 2026-12-07)
        print(f"no run in progress under {args.folder}")
    for run in found:
        if args.lighten:
            for line in lighten(run):
                print(f"  {run.name}: {line}")
        print(status(run))


if __name__ == "__main__":
    main()
