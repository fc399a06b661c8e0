"""``repsim reproduce``: train what the analyses need, run every analysis, write the report.

Profiles:

* ``quick`` (default): small conv4 (32 filters), 5-way 1-shot, short schedules; on the
  built-in data set the whole pipeline takes 6.5 minutes on a 2-core CPU.
* ``paper``: the paper's Omniglot 20-way 1-shot schedule (60,000 iterations, meta-batch 16,
  5 inner steps of 0.1, 10 at test, three seeds, 600 test tasks). Meant for a GPU.

Layout of ``--out``::

    OUT/runs/<name>/      one training run each (reused if finished, resumed if interrupted)
    OUT/results/          analysis tables (CSV + JSON provenance), report.md, report.html
    OUT/results/figures/  figures (PNG and PDF), unless --figures names another folder
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repsim.config import from_dict
from repsim.errors import RepsimError
from repsim.results import check_writable
from repsim.runner import run_analysis
from repsim.study import TestProtocol
from repsim.train import saved_config, train
from repsim.workers import run_in_workers


@dataclass(frozen=True)
class Run:
    name: str
    algorithm: str
    seed: int


RUNS = (Run("maml-s0", "maml", 0), Run("maml-s1", "maml", 1),
        Run("anil-s0", "anil", 0), Run("anil-s1", "anil", 1),
        Run("boil-s0", "boil", 0), Run("multiclass-s0", "multiclass", 0),
        Run("multitask-s0", "multitask", 0))

PROFILES = {
    "quick": dict(settings=dict(ways=5, shots=1, queries=5, filters=32, meta_batch_size=8,
                                iterations=500, checkpoint_every=100, eval_every=100,
                                eval_tasks=50, batch_size=64, reduced=True),
                  runs=RUNS, tasks=100),
    "paper": dict(settings=dict(ways=20, shots=1, iterations=60000, checkpoint_every=10000,
                                eval_every=2000, eval_tasks=200),
                  runs=RUNS + (Run("maml-s2", "maml", 2), Run("anil-s2", "anil", 2)), tasks=600),
}


def run_config(profile: str, dataset: str, data_root: str | None, run: Run):
    settings = {**PROFILES[profile]["settings"], "dataset": dataset, "algorithm": run.algorithm,
                "seed": run.seed}
    if data_root:
        settings["data_root"] = data_root
    return from_dict(settings, source=f"the {profile} profile").resolved()


def _finished(config, folder: Path) -> Path | None:
    """A finished run's final model, to reuse (None: train or resume it)."""
    if not (folder / "model.safetensors").is_file():
        return None
    if saved_config(folder) != config.to_dict():
        raise RepsimError(f"{folder} holds a run with another config: use another --out "
                          f"or delete that folder to retrain")
    return folder / "model.safetensors"


def _train(config, folder: Path, device: str, progress: bool) -> Path:
    """Resume an interrupted run, or start it."""
    return train(config, folder, device=device, resume=(folder / "config.yaml").is_file(), progress=progress)


def analysis_plan(finals: dict[str, Path], run_dirs: dict[str, Path], tasks: int,
                  analysis_tasks: int) -> list[tuple[str, list[Path], int]]:
    """Which models each of the paper's analyses gets, on how many test tasks, from runs named
    ALGORITHM-sSEED: accuracies on ``tasks`` (the paper's 600), representation analyses on
    ``analysis_tasks``; through-training on half as many, at every checkpoint of a run."""
    def named(*algorithms):
        return [finals[n] for n in sorted(finals) if n.split("-")[0] in algorithms]
    meta, with_boil = named("maml", "anil"), named("maml", "anil", "boil")
    return [
        ("accuracy", meta, tasks),
        ("similarity", with_boil, analysis_tasks),
        ("freezing", named("maml"), tasks),
        ("freezing-decomposed", meta, analysis_tasks),
        ("cross", meta, analysis_tasks),
        ("heads", meta, analysis_tasks),
        ("regimes", [finals[n] for n in sorted(finals)], tasks),
        ("through-training", [run_dirs[n] for n in sorted(run_dirs) if n.split("-")[0] in ("maml", "anil")],
         max(2, analysis_tasks // 2)),
        ("weight-change", with_boil, analysis_tasks),
    ]


def reproduce(*, dataset: str = "synthetic", data_root: str | None = None,
              profile: str = "quick", out: str | Path = "reproduction",
              figures: str | Path | None = None, device: str = "auto",
              progress: bool = True, jobs: int = 1) -> Path:
    """``jobs`` > 1: train that many runs at a time, and measure that many checkpoints at a time
    in each analysis, each in a worker process with its share of the threads. For many cores: one
    process already keeps two busy (a run's step scales to two threads, test tasks run on a thread
    each), and on two the quick profile took 0.93x the time (docs/BENCHMARKS.md). The numbers are
    those of one process with a worker's thread count: training's float rounding follows it."""
    if jobs < 1:
        raise RepsimError(f"--jobs must be at least 1, got {jobs}")
    if profile not in PROFILES:
        raise RepsimError(f"unknown profile {profile!r}: choose quick or paper")
    out = check_writable(out)
    results = check_writable(out / "results")
    spec = PROFILES[profile]
    configs = {run.name: run_config(profile, dataset, data_root, run) for run in spec["runs"]}

    print(f"[1/3] training {len(configs)} runs ({profile} profile, {dataset})")
    folders = {name: out / "runs" / name for name in configs}
    final = {name: _finished(configs[name], folders[name]) for name in configs}
    for name in (n for n in configs if final[n] is not None):
        print(f"  reusing {folders[name]}")
    todo = [name for name in configs if final[name] is None]
    if jobs > 1 and len(todo) > 1:  # one run per worker, its progress bar left out
        print(f"  {', '.join(todo)}")
        trained = run_in_workers(_train, [(configs[n], folders[n], device, False) for n in todo], jobs,
                                 desc="training runs", progress=progress)
        final.update(zip(todo, trained))
    else:
        for name in todo:
            print(f"  {name}")
            final[name] = _train(configs[name], folders[name], device, progress)

    plan = analysis_plan(final, folders, spec["tasks"], spec["tasks"])
    print(f"[2/3] running {len(plan)} analyses")
    for name, checkpoints, tasks in plan:
        print(f"  {name} ({tasks} test tasks)")
        # the folder is this command's own: a profile or data set run again rewrites it whole
        run_analysis(name, checkpoints, results, TestProtocol(tasks=tasks, data_root=data_root, device=device),
                     replace=True, progress=progress, jobs=jobs)

    print("[3/3] writing the report")
    from repsim.report import write_report
    report = write_report(results, figures_dir=figures,
                          title=f"repsim reproduction: {dataset}, {profile} profile")
    print(f"report: {report}")
    return report
