"""Running an analysis into a results folder: ``repsim analyze`` and ``repsim reproduce``.

Each analysis of :mod:`repsim.measures` is registered once (:data:`REGISTRY`) under its one
spelling (``through-training``; its files are ``through_training.*``), with how it is run:
checkpoint by checkpoint, each checkpoint's rows kept as a part that a later run reuses
(:class:`Parts`), or the whole set at once; and whether its rows are per task, summarised
into its table with their 95% CIs. :func:`run_analysis` writes the table, the per-task rows
and the provenance (:func:`repsim.results.write_result`).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from repsim import measures
from repsim.checkpoint import latest_in, load_checkpoint
from repsim.errors import RepsimError
from repsim.io import atomic_write_bytes, atomic_write_text
from repsim.names import ANALYSES, ANALYSIS_QUERIES, analysis_name, declaration
from repsim.results import check_writable, exclusive, write_result
from repsim.statistics import (
    cross_extras,
    cross_layers,
    decompose_freezing,
    over_seeds,
    seed_means,
    summarise,
    through_training_body,
    through_training_summary,
)
from repsim.study import Study, TestProtocol, assign_labels
from repsim.workers import run_in_workers


@dataclass(frozen=True)
class Options:
    """The options of an analysis run that change its numbers (and so its parts' digest)."""
    steps: int | None = None
    layers: list[str] | None = None
    frozen_sets: list[list[str]] | None = None


@dataclass(frozen=True)
class Analysis:
    """An analysis as ``repsim analyze`` runs it.

    ``measure(study, checkpoint, options)`` gives the rows of one checkpoint, kept as its
    part (:class:`Parts`); with ``per_checkpoint`` False, ``measure(study, checkpoints,
    options)`` gives the rows of the whole set at once. ``summary`` makes the table from
    rows that are per task (kept beside it as NAME_tasks.csv); None: the rows are the table.
    ``extras(rows, table)`` makes the further summaries its declaration names (besides
    NAME_over_seeds.csv, made here for every analysis that declares keys to pool seeds by),
    {suffix: table}, written as NAME_SUFFIX.csv. ``run_folders``: it is given run folders, and measures each one's
    intermediate checkpoints. ``uses``: the :class:`Options` it reads (another one given is
    refused, not ignored).
    """
    name: str
    measure: Callable[[Study, object, Options], pd.DataFrame]
    uses: tuple[str, ...] = ("steps",)
    per_checkpoint: bool = True
    summary: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    extras: Callable[[pd.DataFrame, pd.DataFrame], dict[str, pd.DataFrame]] | None = None
    run_folders: bool = False

    def checkpoints(self, given: list[Path]) -> list[Path]:
        """What it measures: the checkpoints ``given`` or, of run folders, their intermediate ones."""
        return [p for c in given for p in (measures.run_checkpoints(c) if self.run_folders else [c])]


# The measures are looked up in repsim.measures when run, not bound here (tests replace them).
REGISTRY = {a.name: a for a in (
    Analysis("similarity", lambda study, c, o: measures.layer_similarity(study, [c], layers=o.layers, steps=o.steps),
             uses=("steps", "layers"), summary=summarise, extras=lambda rows, table: {"seeds": seed_means(rows)}),
    Analysis("freezing", lambda study, c, o: measures.freezing(study, c, frozen_sets=o.frozen_sets, steps=o.steps),
             uses=("steps", "frozen_sets")),
    Analysis("freezing-decomposed",
             lambda study, c, o: measures.freezing_decomposed(study, c, frozen_sets=o.frozen_sets, steps=o.steps),
             uses=("steps", "frozen_sets"), summary=decompose_freezing),
    Analysis("accuracy", lambda study, c, o: measures.accuracy(study, [c], steps=o.steps)),
    # every pair, task by task: no per-checkpoint part to keep
    Analysis("cross", lambda study, cs, o: measures.cross_similarity(study, cs, layers=o.layers),
             uses=("layers",), per_checkpoint=False, summary=cross_layers,
             extras=lambda rows, table: cross_extras(rows)),
    Analysis("heads", lambda study, c, o: measures.heads(study, c, steps=o.steps)),
    # NIL only: cheap, and random features are shared by all
    Analysis("regimes", lambda study, cs, o: measures.regimes(study, cs), uses=(), per_checkpoint=False),
    Analysis("through-training", lambda study, c, o: measures.through_training(study, c, steps=o.steps),
             run_folders=True, summary=through_training_summary,
             extras=lambda rows, table: {"body": through_training_body(table)}),
    Analysis("weight-change", lambda study, c, o: measures.weight_change(study, [c], steps=o.steps),
             summary=summarise, extras=lambda rows, table: {"seeds": seed_means(rows)}),
)}
assert tuple(REGISTRY) == ANALYSES, "names.DECLARATIONS declares every analysis of the registry, in order"


FLAGS = {"steps": "--inner-steps", "layers": "--layers", "frozen_sets": "--frozen"}


def check_options(analysis: Analysis, options: Options) -> None:
    """Refuse an option the analysis would not use (it used to be ignored without a word)."""
    for option, value in dataclasses.asdict(options).items():
        if value is not None and option not in analysis.uses:
            users = [a.name for a in REGISTRY.values() if option in a.uses]
            raise RepsimError(f"analyze {analysis.name} does not use {FLAGS[option]}: leave it out "
                              f"(it applies to {', '.join(users)})")


def run_analysis(name: str, checkpoints, out, protocol: TestProtocol | None = None, *, layers=None,
                 frozen_sets=None, replace: bool = False, progress: bool = True, jobs: int = 1) -> Path:
    """Run analysis ``name`` on ``checkpoints`` (files or, for through-training, run folders),
    every model tested by ``protocol`` (default: 600 tasks; its queries default to 15 per
    class), and write its tables and provenance into the results folder ``out``. One process
    at a time may run an analysis into a folder (another one gets a clear refusal). ``jobs`` > 1
    computes the checkpoints' parts in that many worker processes (:func:`_parts_in_workers`)."""
    name = analysis_name(name)
    if jobs < 1:
        raise RepsimError(f"--jobs must be at least 1, got {jobs}")
    protocol = protocol or TestProtocol()
    if protocol.queries is None:
        protocol = dataclasses.replace(protocol, queries=ANALYSIS_QUERIES)
    options = Options(steps=protocol.steps, layers=layers, frozen_sets=frozen_sets)
    check_options(REGISTRY[name], options)
    for what, values in (("--frozen", [",".join(f) or "none" for f in frozen_sets or []]), ("--layers", layers or [])):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:  # the report keys rows on them: one set twice broke it after the analysis ran
            raise RepsimError(f"{what} gives {', '.join(twice)} more than once: give each once")
    if "test_queries" in protocol.overrides:  # every model is tested on the study's queries
        raise RepsimError(f"analyze tests every model on --queries query points per class ({protocol.queries} "
                          f"now): give --queries, not --set test_queries")
    new_folder = not Path(out).exists()
    check_writable(out)
    with exclusive(Path(out), name):
        try:
            return _run_analysis(name, checkpoints, out, protocol, options, replace=replace, progress=progress,
                                 jobs=jobs)
        except BaseException:
            if new_folder:  # still holding the lock, so no other run of it is using the folder
                _remove_if_unused(Path(out), name)
            raise


def _remove_if_unused(folder: Path, name: str) -> None:
    """Remove a results folder this analysis created, if it failed before keeping anything in
    it but its own lock file: a refused analysis leaves no debris. Only empty folders and that
    lock file are removed, so anything another process put there stays."""
    lock = folder / f".{name}.lock"
    if any(p.is_file() and p != lock for p in folder.rglob("*")):
        return
    lock.unlink(missing_ok=True)
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


# what makes two runs of an analysis comparable: rows made otherwise must not share a table
_COMPARABLE = ("dataset", "split", "ways", "shots", "queries", "tasks", "task_seed", "inner_steps",
               "test_overrides", "layers", "frozen_sets")


def check_earlier_result(out: Path, name: str, study: dict, labels: list[str]) -> None:
    """Refuse to replace an earlier result of ``name`` in ``out`` made with other options, or
    holding models this run leaves out: its rows would silently disappear. The same options
    with more models is how seeds are added (their parts are reused)."""
    earlier = Path(out) / f"{declaration(name).stem}.json"
    table = earlier.with_suffix(".csv")
    try:
        made = json.loads(earlier.read_text()) if earlier.is_file() else None
    except (OSError, ValueError):
        made = None
    if not isinstance(made, dict) or not isinstance(made.get("checkpoints", []), list):
        if table.is_file() or earlier.is_file():
            # without it, which models the table holds cannot be checked: a run on a subset
            # would silently drop the others' rows
            raise RepsimError(f"{table} has no readable provenance ({earlier.name} is "
                              f"{'damaged' if earlier.is_file() else 'missing'}): which models it holds "
                              f"cannot be checked; use --replace to overwrite it, or another --out")
        return
    before = made.get("study", {})
    for key in _COMPARABLE:
        if key in before and key in study and before[key] != study[key]:
            raise RepsimError(f"{earlier} was made with {key}={before[key]!r}, this run has "
                              f"{key}={study[key]!r}: use another --out, or --replace to overwrite it")
    earlier_labels = [c.get("label") if isinstance(c, dict) else None for c in made.get("checkpoints", [])]
    if not all(isinstance(label, str) for label in earlier_labels):
        raise RepsimError(f"{earlier} does not label the models it holds (an earlier repsim's, or damaged): "
                          f"which models its table holds cannot be checked; use --replace to overwrite it, "
                          f"or another --out")
    left_out = [label for label in earlier_labels if label not in set(labels)]
    if left_out:
        raise RepsimError(f"{earlier} also holds {', '.join(map(str, left_out))}, which this run leaves "
                          f"out: list those checkpoints too (their parts are reused), use another --out, "
                          f"or --replace to overwrite it")


def _run_analysis(name, checkpoints, out, protocol: TestProtocol, options: Options, *, replace, progress,
                  jobs=1) -> Path:
    analysis = REGISTRY[name]
    checkpoints = [Path(c) for c in checkpoints]
    if not checkpoints:
        raise RepsimError(f"analysis {name} needs at least one checkpoint")
    measured = analysis.checkpoints(checkpoints)
    labels = assign_labels(measured)
    first = analysis.checkpoints(checkpoints[:1])[-1]
    study = Study.for_protocol(load_checkpoint(first, weights=False), protocol, progress=progress, labels=labels)
    made = {**study.provenance(), "inner_steps": options.steps if options.steps is not None
            else "each checkpoint's test_inner_steps", "layers": options.layers, "frozen_sets": options.frozen_sets}
    if not replace:
        check_earlier_result(Path(out), name, made, list(labels.values()))
    study.tasks  # build (and validate) the task list before any work
    if analysis.per_checkpoint:
        parts = Parts(Path(out) / ".partial" / name, study, dataclasses.asdict(options))
        if jobs > 1:
            _parts_in_workers([c for c in measured if not parts.kept(c)], jobs,
                              (name, first, protocol, options, labels, Path(out)), progress)
        rows = parts.concat(measured, lambda c: analysis.measure(study, c, options))
    else:
        rows = analysis.measure(study, measured, options)
    table = rows if analysis.summary is None else analysis.summary(rows)
    extras = {} if analysis.extras is None else analysis.extras(rows, table)
    declared = declaration(name)
    if declared.over_seeds:  # what the report shows of several seeds, made here so it computes none
        extras["over_seeds"] = over_seeds(table, declared.over_seeds, declared.value)
    assert set(extras) == set(declared.extra_tables), f"{name} writes the extra tables its declaration names"
    provenance = {"study": made, "checkpoints": [study.checkpoint_provenance(p) for p in measured]}
    return write_result(out, declared.stem, table, provenance,
                        None if analysis.summary is None else rows, extras)


# Each checkpoint's part of an analysis, kept and reused -----------------------------------
class Parts:
    """Each checkpoint's part of an analysis, kept in ``folder`` as it is finished.

    An analysis interrupted after some checkpoints, or run again with more of them (a new
    seed), computes only the checkpoints it has no part for. A part is found by a digest of
    the checkpoint's bytes, the study (its test images, tasks and device), the analysis
    options, repsim's own source and the versions of the libraries it computes with, so
    changed weights, data, tasks or code are never answered from an old part.
    Parts are read back from CSV even when just computed, so a result never depends on
    which of its parts were reused.
    """

    def __init__(self, folder: Path, study: Study, options: dict):
        self.folder = folder
        split = study.tasks.split
        data = hashlib.sha256(split.images.numpy().tobytes() + "\n".join(split.class_names).encode())
        self.context = json.dumps({"study": study.provenance(), "data": data.hexdigest(),
                                   "device": str(study.dev), "options": options,
                                   "code": _source_digest(), "libraries": [
                                       torch.__version__, np.__version__, pd.__version__]},
                                  sort_keys=True, default=str)
        self.progress = study.progress
        self.labels = study.labels

    def concat(self, checkpoints, analyse) -> pd.DataFrame:
        return pd.concat([self.part(Path(c), analyse) for c in checkpoints], ignore_index=True)

    def _files(self, checkpoint: Path) -> tuple[Path, Path]:
        """Where ``checkpoint``'s part is kept: the rows and their seal."""
        # the label is part of the rows, and depends on the other checkpoints analysed
        file = latest_in(checkpoint) if checkpoint.is_dir() else checkpoint
        label = self.labels.get(str(file.resolve()), "")
        digest = hashlib.sha256(self.context.encode() + label.encode() + file.read_bytes()).hexdigest()[:24]
        return self.folder / f"{digest}.csv", self.folder / f"{digest}.sha256"

    def kept(self, checkpoint: Path) -> bool:
        """Whether ``checkpoint``'s part is kept, whole (the file exists and matches its seal)."""
        return self._intact(*self._files(Path(checkpoint)))

    def part(self, checkpoint: Path, analyse) -> pd.DataFrame:
        path, seal = self._files(checkpoint)
        if self._intact(path, seal):
            if self.progress:
                tqdm.write(f"{self.folder.name}: {checkpoint} done before, reusing {path}", file=sys.stderr)
        else:
            frame = analyse(checkpoint)
            if frame.empty:  # nothing to keep (and an empty CSV could not be read back)
                return frame
            # NaN written as "NaN", so that an empty string (a layer-less row) stays a string
            data = frame.to_csv(index=False, na_rep="NaN").encode()
            atomic_write_bytes(path, data)
            atomic_write_text(seal, hashlib.sha256(data).hexdigest() + "\n")  # last: the part is complete
        return pd.read_csv(path, keep_default_na=False, na_values=["NaN"], **_EXACT_FLOATS)

    def _intact(self, path: Path, seal: Path) -> bool:
        """Whether a kept part exists and is the very bytes that were written: a part cut
        short, edited or written by an older repsim (no seal) is computed again."""
        if not path.is_file():
            return False
        intact = seal.is_file() and seal.read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()
        if not intact:
            tqdm.write(f"{self.folder.name}: {path} is damaged or unsealed; computing it again", file=sys.stderr)
        return intact


def _parts_in_workers(checkpoints, jobs: int, run: tuple, progress: bool) -> None:
    """Compute the parts of ``checkpoints`` in ``jobs`` worker processes
    (:func:`repsim.workers.run_in_workers`); the caller then reads them back as kept parts, in its
    own order, so the result is the one a single process with a worker's thread count writes, byte
    for byte. (On a CPU the analyses that score tasks give the same numbers on any thread count,
    each task on one torch thread, repsim.threads.map_tasks; in the others, such as similarity,
    the thread count moves float rounding.) A part cut short by an error or Ctrl-C is not kept
    (its seal is written last), so the next run computes it."""
    if len(checkpoints) < 2:  # nothing to share out: the caller measures it as it reads the parts
        return
    run_in_workers(_part_in_worker, [(c, *run) for c in checkpoints], jobs, desc=f"{run[0]}: parts",
                   progress=progress)


def _part_in_worker(checkpoint: Path, name: str, first: Path, protocol: TestProtocol, options: Options,
                    labels: dict, out: Path) -> None:
    """One checkpoint's part, computed in a worker process as :func:`_run_analysis` would: the
    same study (task list, labels) and options, so the same digest."""
    study = Study.for_protocol(load_checkpoint(first, weights=False), protocol, progress=False, labels=labels)
    parts = Parts(out / ".partial" / name, study, dataclasses.asdict(options))
    parts.part(checkpoint, lambda c: REGISTRY[name].measure(study, c, options))


# pandas 3 reads floats back exactly by default (and deprecates asking); pandas 2 must be asked
_EXACT_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


@functools.cache
def _source_digest() -> str:
    return code_digest(Path(__file__).parent)


def code_digest(package: Path, start: str = "runner") -> str:
    """A digest of the code an analysis' numbers come from: the modules of ``package`` that
    module ``start`` imports, directly or not (the report, training and the command line are
    not among them), each as its syntax tree without docstrings. A comment, a docstring, a
    line break or a change to the report leaves it, and the kept parts (hours of analysis), as
    they were; a change to anything the numbers are computed with does not."""
    digest = hashlib.sha256()
    for name, path in sorted(_imported_modules(package, f"{package.name}.{start}").items()):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        digest.update(name.encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return digest.hexdigest()


def _imported_modules(package: Path, start: str) -> dict[str, Path]:
    """{module name: file} of ``start`` and every module of ``package`` it imports, at any
    depth, anywhere in a file (imports inside functions included), with the packages above each."""
    def file_of(name: str) -> Path | None:  # None: not one of the package's modules
        if name.split(".")[0] != package.name:
            return None
        below = package.joinpath(*name.split(".")[1:])
        return next((p for p in (below / "__init__.py", below.with_suffix(".py")) if p.is_file()), None)

    found, todo = {}, [start]
    while todo:
        name = todo.pop()
        path = file_of(name)
        if name in found or path is None:
            continue
        found[name] = path
        todo += [".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)]
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (".".join(here.split(".")[:len(here.split(".")) - node.level + 1] + [node.module or ""])
                        .rstrip(".") if node.level else node.module)
                todo += [base] + [f"{base}.{a.name}" for a in node.names]
    return found
