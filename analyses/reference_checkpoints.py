"""Recipe: publish finished training runs as reference checkpoints, with a MANIFEST and a report.

    python analyses/reference_checkpoints.py RUNS_DIR --data-root ../shared/data/omniglot \
        [--out checkpoints/omniglot_20w1s] [--tasks 600] [--analysis-tasks 200] [--manifest-only]
        [--analyses NAME ...]

RUNS_DIR holds run folders written by `repsim train` (named e.g. maml-s0, anil-s0,
multiclass-s0); runs published into OUT earlier, from RUNS_DIR or another folder, stay
published (delete OUT/<run> and its MANIFEST rows to withdraw one). For each run, the
intermediate checkpoints and the final model are copied
into OUT/<run>/checkpoints/ and OUT/<run>/model.safetensors (a run folder's layout) as
weights-only safetensors (the optimiser state is dropped: these are for
analysis, not for resuming), every checkpoint is scored on a fixed list of `--tasks` test tasks
(task seed 0), and one MANIFEST row is written per checkpoint, as soon as it is scored (run
again, it scores only what is new or changed, so an interrupted run resumes). Then every analysis runs on
them and the report is written to OUT/results/ (figures in OUT/results/figures/).
Each analysis keeps every checkpoint's part in OUT/results/.partial/, so adding a seed, or
resuming an interrupted analysis, analyses only the new checkpoints (cross-model similarity and
training regimes, which are cheap, are always run whole).
`--analyses` runs only the named analyses; the report still covers every result in OUT/results,
so two processes can share the analyses of one setting (on 2 cores, two 1-thread processes get
more done than one 2-thread process).
`--manifest-only` stops after the MANIFEST: for a setting whose runs are not all trained yet
(the analyses compare MAML with ANIL and seeds with seeds).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import torch

from repsim.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from repsim.errors import RepsimError
from repsim.io import atomic_write_text
from repsim.names import ANALYSES
from repsim.report import write_report
from repsim.reproduce import analysis_plan
from repsim.runner import run_analysis
from repsim.study import TestProtocol, evaluate_checkpoint

FIELDS = ["path", "run", "algorithm", "dataset", "ways", "shots", "seed", "iteration",
          "iterations_planned", "reduced_schedule", "conventions", "devices", "wall_time_s",
          "test_accuracy", "test_ci95", "nil_accuracy", "nil_ci95", "test_tasks", "task_seed",
          "config"]


def already_published(target: Path, ckpt: Checkpoint, previous: dict[str, dict], tasks: int) -> dict | None:
    """The MANIFEST row of ``target`` if it holds exactly ``ckpt``'s weights, scored on as many tasks."""
    row = previous.get(str(target))
    if row is None or not target.is_file() or int(row["test_tasks"]) != tasks:
        return None
    published = load_checkpoint(target)
    same = (published.config == ckpt.config and published.iteration == ckpt.iteration
            and all(torch.equal(published.params[n], p) for n, p in ckpt.params.items()))
    return row if same else None


def publish(runs: Path, out: Path, tasks: int, data_root: str | None) -> list[dict]:
    """Publish RUNS's runs into OUT; returns the MANIFEST's rows, runs published earlier from
    another folder included (a seed trained elsewhere joins the ones already published)."""
    manifest = out / "MANIFEST.csv"
    previous = {r["path"]: r for r in csv.DictReader(manifest.open())} if manifest.is_file() else {}
    found = sorted(p for p in runs.iterdir() if (p / "model.safetensors").is_file())
    rows = [{k: _typed(k, v) for k, v in row.items()} for row in previous.values()
            if row["run"] not in {run.name for run in found}]
    for row in rows:  # a row kept must still point at its checkpoint, or the analyses would miss it
        if not Path(row["path"]).is_file():
            raise RepsimError(f"{manifest} lists {row['path']}, which is not there: run from the "
                              f"folder it was published from, or delete {row['run']}'s rows")
    for run in found:
        # a run trained on past its first plan has checkpoints whose config planned fewer iterations
        final_iteration = load_checkpoint(run / "model.safetensors", weights=False).iteration
        for source in sorted(run.glob("checkpoints/iter-*.safetensors")):
            ckpt = load_checkpoint(source)
            is_final = ckpt.iteration == final_iteration
            # the layout of a training run, so that every analysis (through-training too) reads it
            target = out / run.name / "checkpoints" / source.name
            listed = out / run.name / "model.safetensors" if is_final else target
            row = already_published(listed, ckpt, previous, tasks) if target.is_file() else None
            if row is not None:  # scoring 600 tasks again would give the same numbers
                rows.append({k: _typed(k, v) for k, v in row.items()})
                continue
            save_checkpoint(target, ckpt)  # loaded without Adam's state: weights only
            if is_final:
                target = save_checkpoint(out / run.name / "model.safetensors", load_checkpoint(target))
            row = {"path": str(target), "run": run.name, "algorithm": ckpt.config.algorithm,
                   "dataset": ckpt.config.dataset, "ways": ckpt.config.ways,
                   "shots": ckpt.config.shots, "seed": ckpt.config.seed,
                   "iteration": ckpt.iteration, "iterations_planned": ckpt.config.iterations,
                   "reduced_schedule": ckpt.config.reduced,
                   "conventions": ckpt.config.describe_conventions(),
                   "devices": " ".join(ckpt.extra.get("devices", [ckpt.extra.get("device", "")])),
                   "wall_time_s": round(ckpt.extra.get("wall_time_s", 0.0), 1),
                   "config": json.dumps(ckpt.config.to_dict(), sort_keys=True)}
            scored = evaluate_checkpoint(target, tasks=tasks, data_root=data_root, progress=True)
            nil = evaluate_checkpoint(target, tasks=tasks, data_root=data_root, nil=True, progress=True)
            row.update(test_accuracy=round(scored["accuracy"], 2), test_ci95=round(scored["ci95"], 2),
                       nil_accuracy=round(nil["accuracy"], 2), nil_ci95=round(nil["ci95"], 2),
                       test_tasks=tasks, task_seed=0)
            print(f"{run.name} iteration {ckpt.iteration}: {scored['accuracy']:.2f} +- "
                  f"{scored['ci95']:.2f}% (NIL {nil['accuracy']:.2f} +- {nil['ci95']:.2f}%) "
                  f"over {tasks} test tasks")
            rows.append(row)
            # scoring a 20-way 5-shot MAML checkpoint takes minutes: keep each score, so that an
            # interrupted run resumes where it stopped (rows not yet reached stay as they were)
            done = {r["path"] for r in rows}
            write_manifest(manifest, rows + [r for p, r in previous.items() if p not in done])
    write_manifest(manifest, rows)
    return sorted(rows, key=lambda r: (r["run"], r["iteration"]))


def write_manifest(path: Path, rows: list[dict]) -> None:
    rows = sorted(rows, key=lambda r: (r["run"], int(r["iteration"])))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _typed(key: str, value: str):
    """A MANIFEST cell read back as the type ``publish`` wrote (analyse compares iterations)."""
    if key in ("ways", "shots", "seed", "iteration", "iterations_planned", "test_tasks", "task_seed"):
        return int(value)
    if key in ("wall_time_s", "test_accuracy", "test_ci95", "nil_accuracy", "nil_ci95"):
        return float(value)
    if key == "reduced_schedule":
        return value == "True"
    return value


def analyse(out: Path, rows: list[dict], tasks: int, analysis_tasks: int, data_root: str | None,
            only: list[str] | None = None, jobs: int = 1) -> Path:
    """Run the analyses (all of them, or those named in ``only``) on the final checkpoints, each
    measuring ``jobs`` checkpoints at a time (``repsim analyze --jobs``), and write the report
    from every result in OUT/results, this run's and earlier ones'."""
    finals = {r["run"]: Path(r["path"]) for r in rows if r["iteration"] == r["iterations_planned"]}
    results = out / "results"
    for name, checkpoints, n in analysis_plan(finals, {n: out / n for n in finals}, tasks, analysis_tasks):
        if only is None or name in only:
            run_analysis(name, checkpoints, results, TestProtocol(tasks=n, data_root=data_root), progress=True,
                         jobs=jobs)
    return write_report(results, title="repsim reference checkpoints: Omniglot "
                        f"{rows[0]['ways']}-way {rows[0]['shots']}-shot")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path)
    p.add_argument("--out", type=Path, default=Path("checkpoints/omniglot_20w1s"))
    p.add_argument("--data-root")
    p.add_argument("--tasks", type=int, default=600)
    p.add_argument("--analysis-tasks", type=int, default=200)
    p.add_argument("--manifest-only", action="store_true",
                   help="publish and score the checkpoints, but run no analysis and write no report")
    p.add_argument("--analyses", nargs="+", choices=ANALYSES, metavar="NAME",
                   help="run only these analyses (default: all); processes running different "
                        "ones can share OUT, since each analysis writes its own files")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="measure N checkpoints at a time, each in a worker process (repsim analyze --jobs)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    try:
        rows = publish(args.runs, args.out, args.tasks, args.data_root)
    except RepsimError as e:
        sys.exit(f"error: {e}")
    if args.manifest_only:
        print(f"manifest: {args.out / 'MANIFEST.csv'} ({len(rows)} checkpoints)")
        return 0
    try:
        report = analyse(args.out, rows, args.tasks, args.analysis_tasks, args.data_root, args.analyses, args.jobs)
    except RepsimError as e:
        sys.exit(f"error: {e}")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
