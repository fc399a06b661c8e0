"""The paper's analyses: does the inner loop change the representation, or reuse it?

Each analysis is a function from checkpoints to a tidy DataFrame (one row per measured
number, with its 95% CI where it is a mean over tasks). All analyses of one study score the
same fixed list of test tasks (`Study.tasks`), so their numbers are comparable.

1. ``layer_similarity``   CCA / CKA of each layer before vs after the inner loop (figure 2)
2. ``freezing``           accuracy with layers frozen in the inner loop at test time (table 1)
3. ``accuracy``           inner-loop and NIL accuracy of each checkpoint (tables 2 and 4)
   ``cross_similarity``   body-layer similarity across seeds and algorithms (table 3)
4. ``head_ablations``     NIL, trained/zeroed/random heads (section 5)
5. ``training_regimes``   NIL accuracy of MAML, ANIL, multiclass, multitask, random (table 5)
6. ``through_training``   the above on a run's intermediate checkpoints
7. ``weight_change``      ||theta_after - theta_before|| / ||theta_before|| per layer (BOIL's side)

Conventions: CCA is mean CCA with spatial positions as data points for conv layers
((n*h*w, c)); CKA is linear CKA on flattened activations ((n, c*h*w)); both on the query
points (15 per class) of the test tasks. CIs are 95% Student-t intervals over tasks; an
ablation's ``change`` (frozen - unfrozen, NIL - inner loop, head variant - trained head) has
the t-interval of its per-task differences, since every condition scores the same tasks.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from repsim.checkpoint import Checkpoint, latest_in, load_checkpoint, read_metadata
from repsim.config import tested_with
from repsim.data import load_splits
from repsim.data.episodes import TaskList
from repsim.errors import RepsimError
from repsim.evaluate import (check_counts, fresh_head, own_inner_loop, resolve_device,
                             score_tasks, test_time_params)
from repsim.io import atomic_write_bytes, atomic_write_text
from repsim.model import HEAD_PREFIX, draw_weights, model_for
from repsim.probe import check_layers, in_layers, iter_probes, probe_layers
from repsim.results import paired_change, summarise
from repsim.similarity import compare

CONVENTIONS = {"cca": "spatial", "cka": "flatten"}
CI_TEXT = ("95% Student-t interval over tasks, t(0.975, n-1) * s / sqrt(n); changes: the same "
           "interval of per-task paired differences")
CONVENTION_TEXT = ("CCA: mean canonical correlation, conv layers with spatial positions as data "
                   "points (n*h*w, c); CKA: linear CKA, conv layers flattened (n, c*h*w)")


@dataclass
class Model:
    """A checkpoint ready for analysis: its model, its parameters, and its label, the name its
    rows carry in every result (:func:`assign_labels`)."""
    ckpt: Checkpoint
    model: torch.nn.Module
    params: dict[str, torch.Tensor]
    label: str = ""

    def __post_init__(self):
        self.label = self.label or default_label(self.ckpt.config.algorithm, self.ckpt.config.seed,
                                                 self.ckpt.iteration, self.ckpt.name)

    @property
    def unit(self) -> str:
        """What the report compares: an algorithm, its seeds pooled, or a model that has a
        name of its own (one imported with ``--name``, or one told apart by its file)."""
        plain = default_label(self.ckpt.config.algorithm, self.ckpt.config.seed, self.ckpt.iteration)
        return self.ckpt.config.algorithm if self.label == plain else self.label

    def provenance(self) -> dict:
        c = self.ckpt.config
        return {"checkpoint": str(self.ckpt.path), "label": self.label, "model": self.unit,
                "algorithm": c.algorithm, "seed": c.seed,
                "iteration": self.ckpt.iteration, "reduced_schedule": c.reduced,
                "dataset": c.dataset, "ways": c.ways, "shots": c.shots,
                "inner_lr": c.inner_lr, "test_inner_steps": c.inner_steps_test,
                **c.conventions_used(), "convention_summary": c.describe_conventions()}


@dataclass
class Study:
    """The shared test protocol: which tasks, how many, on what device.

    ``ways``/``shots`` default to the first checkpoint's; ``queries`` to 15 per class (the
    paper's representation analysis). Every checkpoint of a study must share the data set.
    """
    dataset: str
    ways: int
    shots: int
    queries: int = 15
    num_tasks: int = 100
    seed: int = 0
    split: str = "test"
    data_root: str | None = None
    split_scheme: str = "maml"
    split_seed: int = 0
    rotate: bool | None = None
    image_resize: str | None = None
    device: str = "auto"
    overrides: tuple[str, ...] = ()  # key=value: how every checkpoint is tested (config.tested_with)
    progress: bool = True
    labels: dict[str, str] = field(default_factory=dict)  # resolved path -> label
    _tasks: TaskList | None = field(default=None, repr=False)

    @classmethod
    def for_checkpoint(cls, ckpt: Checkpoint, **kwargs) -> "Study":
        c = ckpt.config
        base = dict(dataset=c.dataset, ways=c.ways, shots=c.shots, data_root=c.data_root,
                    split_scheme=c.split_scheme, split_seed=c.split_seed, rotate=c.rotate,
                    image_resize=c.image_resize)
        base.update({k: v for k, v in kwargs.items() if v is not None})
        return cls(**base)

    @property
    def dev(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def tasks(self) -> TaskList:
        if self._tasks is None:
            if self.num_tasks < 2:
                raise RepsimError(f"a confidence interval needs at least 2 tasks, got {self.num_tasks}: use --tasks 2 or more")
            splits = load_splits(self.dataset, self.data_root, split_scheme=self.split_scheme,
                                 rotate=self.rotate, seed=self.split_seed,
                                 image_resize=self.image_resize, progress=self.progress)
            self._tasks = TaskList(splits[self.split], self.ways, self.shots, self.queries,
                                   self.num_tasks, self.seed)
        return self._tasks

    def provenance(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "split_scheme": self.split_scheme,
                "split_seed": self.split_seed, "rotate": self.rotate,
                "image_resize": self.image_resize, "ways": self.ways, "shots": self.shots, "queries": self.queries,
                "tasks": self.num_tasks, "task_seed": self.seed, "test_overrides": " ".join(self.overrides),
                "confidence_interval": CI_TEXT,
                "conventions": CONVENTION_TEXT}

    def load(self, checkpoint) -> Model:
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        if self.overrides:
            ckpt = dataclasses.replace(ckpt, config=tested_with(ckpt.config, self.overrides))
        c = ckpt.config
        if c.dataset != self.dataset:
            raise RepsimError(f"{ckpt.path} was trained on {c.dataset}, not {self.dataset}: "
                              f"analyse checkpoints of one data set together")
        # Test classes must be unseen by every checkpoint, and scored the same way for all.
        for key, ours in (("split_scheme", self.split_scheme), ("split_seed", self.split_seed),
                          ("rotate", self.rotate)):
            if ours is not None and getattr(c, key) != ours:
                raise RepsimError(f"{ckpt.path} was trained with {key}={getattr(c, key)}, the other "
                                  f"checkpoints with {key}={ours}: its training classes may be this "
                                  f"study's test classes; analyse checkpoints of one split together")
        # ... and its test images must be made as its training images were
        if (c.dataset == "omniglot" and self.image_resize is not None
                and c.image_resize != self.image_resize):
            raise RepsimError(f"{ckpt.path} was trained on images resized by {c.image_resize}, this "
                              f"study's test images are resized by {self.image_resize}: analyse "
                              f"checkpoints of one image_resize convention together")
        if c.algorithm not in ("multiclass", "multitask") and c.ways != self.ways:
            raise RepsimError(f"{ckpt.path} has a {c.ways}-way head but the study's tasks are "
                              f"{self.ways}-way: analyse it with --ways {c.ways}, or separately")
        model = ckpt.build_model().to(self.dev)
        params = test_time_params(model, dict(model.named_parameters()), ckpt.config.algorithm, self.ways)
        label = self.labels.get(str(Path(ckpt.path).resolve())) if ckpt.path else None
        return Model(ckpt, model, {n: p.detach() for n, p in params.items()}, label or "")

    def score(self, m: Model, *, names=None, steps=None, params=None, nil=False, desc="scoring"):
        """Score ``m`` with its own inner loop, adapting ``names`` only when given."""
        inner = own_inner_loop(m.ckpt.config, m.model, steps)
        if names is not None:
            inner = inner.but(names=names)
        return score_tasks(m.model, m.params if params is None else params, self.tasks,
                           inner=inner, device=self.dev, nil=nil, progress=self.progress,
                           desc=desc)


# 1. ---------------------------------------------------------------------------------------
def layer_similarity(study: Study, checkpoints, *, layers=None, steps: int | None = None,
                     points: str = "query", every_step: bool = False) -> pd.DataFrame:
    """CCA and CKA of every layer's activations before vs after the inner loop, per task.

    Rows: checkpoint, algorithm, seed, iteration, layer, measure, step, task, value.
    ``summarise`` turns them into means with CIs.
    """
    if steps is not None and steps < 1:
        raise RepsimError(f"before-vs-after similarity needs at least 1 inner step, got {steps}: use --inner-steps 1 or more")
    rows = []
    for checkpoint in checkpoints:
        m = study.load(checkpoint)
        chosen = check_layers(m.model, layers or probe_layers(m.model))
        inner = own_inner_loop(m.ckpt.config, m.model, steps)
        probes = iter_probes(m.model, m.params, study.tasks, device=study.dev, layers=chosen,
                             points=points, every_step=every_step, inner=inner)
        for probe in tqdm(probes, total=len(study.tasks), desc=f"similarity {m.label}",
                          disable=not study.progress, leave=False):
            for s, after in enumerate(probe.steps[1:], start=1):
                table = compare(probe.before, after, measures=("cca", "cka"), conv=CONVENTIONS)
                step = s if every_step else inner.steps
                for layer, measure, value in zip(table["layer"], table["measure"], table["value"]):
                    rows.append({**_ids(m), "layer": layer, "measure": measure, "step": step,
                                 "task": probe.task_index, "value": float(value)})
    return pd.DataFrame(rows)


def _ids(m: Model) -> dict:
    c = m.ckpt.config
    return {"checkpoint": m.label, "model": m.unit, "algorithm": c.algorithm, "seed": c.seed,
            "iteration": m.ckpt.iteration}


# 2. ---------------------------------------------------------------------------------------
def prefix_freezes(model) -> list[list[str]]:
    """The paper's freezing sets: none, conv1, conv1-2, conv1-3, conv1-4 (the body's layers)."""
    body = [layer for layer in probe_layers(model) if layer != HEAD_PREFIX.rstrip(".")]
    return [body[:k] for k in range(len(body) + 1)]


def freeze_label(frozen) -> str:
    return "none" if not frozen else ",".join(frozen)


def freezing(study: Study, checkpoint, *, frozen_sets=None, steps: int | None = None) -> pd.DataFrame:
    """Test accuracy when the inner loop leaves ``frozen`` layers at their meta-learned values,
    and its paired change from the unfrozen inner loop on the same tasks."""
    m = study.load(checkpoint)
    frozen_sets = prefix_freezes(m.model) if frozen_sets is None else frozen_sets
    for frozen in frozen_sets:
        check_layers(m.model, frozen)
    if not frozen_sets:
        return pd.DataFrame()
    scores = {}
    for frozen in ([[]] if [] not in frozen_sets else []) + list(frozen_sets):
        adapted = [n for n in own_inner_loop(m.ckpt.config, m.model).names if not in_layers(n, frozen)]
        scores[freeze_label(frozen)] = study.score(m, names=adapted, steps=steps,
                                                   desc=f"frozen {freeze_label(frozen)}")
    return pd.DataFrame([{**_ids(m), "frozen": freeze_label(f), **_with_change(scores[freeze_label(f)], scores["none"])}
                         for f in frozen_sets])


def _with_change(score, reference) -> dict:
    """A score's columns: accuracy with its CI, and its paired change from ``reference``."""
    change, change_ci = paired_change(100 * score.per_task, 100 * reference.per_task)
    return {"accuracy": score.mean, "ci95": score.ci95, "tasks": score.tasks,
            "change": change, "change_ci95": change_ci}


# 3. ---------------------------------------------------------------------------------------
def accuracy(study: Study, checkpoints, *, steps: int | None = None) -> pd.DataFrame:
    """Each checkpoint scored with its own inner loop and with NIL testing (tables 2 and 4)."""
    rows = []
    for checkpoint in checkpoints:
        m = study.load(checkpoint)
        inner = study.score(m, steps=steps, desc=f"{m.label} inner-loop")
        nil = study.score(m, steps=steps, nil=True, desc=f"{m.label} nil")
        # NIL's change is NIL - inner loop, paired over tasks
        rows.append({**_ids(m), "mode": "inner-loop", **_with_change(inner, inner)})
        rows.append({**_ids(m), "mode": "nil", **_with_change(nil, inner)})
    return pd.DataFrame(rows)


def cross_similarity(study: Study, checkpoints, *, layers=None) -> pd.DataFrame:
    """Similarity of the body layers of two different models on the same query points.

    For every pair of checkpoints, mean CCA and linear CKA per layer per task, before any
    adaptation. Rows carry a ``pair`` label such as ``ANIL-MAML`` (sorted algorithm names).
    """
    from repsim.probe import layer_outputs
    models = [study.load(c) for c in checkpoints]
    if len(models) < 2:
        raise RepsimError("cross-model similarity needs at least two checkpoints")
    body = [layer for layer in probe_layers(models[0].model) if layer != "head"]
    layers = check_layers(models[0].model, layers or body)
    rows = []
    for index, task in enumerate(tqdm(study.tasks, desc="cross-model similarity",
                                      disable=not study.progress, leave=False)):
        task = task.to(study.dev)
        acts = [layer_outputs(m.model, m.params, task.query_x, layers) for m in models]
        for (i, a), (j, b) in itertools.combinations(enumerate(models), 2):
            table = compare(acts[i], acts[j], measures=("cca", "cka"), conv=CONVENTIONS)
            pair = "-".join(sorted((a.ckpt.config.algorithm.upper(), b.ckpt.config.algorithm.upper())))
            for layer, measure, value in zip(table["layer"], table["measure"], table["value"]):
                rows.append({"model_a": a.label, "model_b": b.label, "pair": pair,
                             "seed_a": a.ckpt.config.seed, "seed_b": b.ckpt.config.seed, "layer": layer,
                             "measure": measure, "task": index, "value": float(value)})
    return pd.DataFrame(rows)


# 4. ---------------------------------------------------------------------------------------
def head_ablations(study: Study, checkpoint, *, steps: int | None = None) -> pd.DataFrame:
    """How much does the head matter? The trained network scored with its head
    adapted as trained, removed (NIL), kept but not adapted, zeroed, and randomised."""
    m = study.load(checkpoint)
    head = [n for n in m.params if n.startswith(HEAD_PREFIX)]
    gen = torch.Generator().manual_seed(study.seed)
    weight = m.params[HEAD_PREFIX + "weight"]
    # a head drawn as the checkpoint's own was at initialisation (its head_init convention)
    w, b = draw_weights(tuple(weight.shape), m.ckpt.config.head_init, gen,
                        bias=HEAD_PREFIX + "bias" in m.params)
    random = {**m.params, HEAD_PREFIX + "weight": w.to(weight)}
    if b is not None:
        random[HEAD_PREFIX + "bias"] = b.to(weight)
    zeroed = fresh_head(m.model, m.params, study.ways)
    variants = [
        ("trained inner loop", dict()),
        ("NIL (no head)", dict(nil=True)),
        ("trained head, no adaptation", dict(steps=0)),
        ("zeroed head, head adapted", dict(params=zeroed, names=head)),
        ("random head, no adaptation", dict(params=random, steps=0)),
        ("random head, head adapted", dict(params=random, names=head)),
    ]
    scores = {label: study.score(m, desc=label, **{"steps": steps, **kwargs}) for label, kwargs in variants}
    return pd.DataFrame([{**_ids(m), "variant": label, **_with_change(s, scores["trained inner loop"])}
                         for label, s in scores.items()])


# 5. ---------------------------------------------------------------------------------------
def training_regimes(study: Study, checkpoints, *, random_seeds=(0,)) -> pd.DataFrame:
    """NIL accuracy of networks trained by different regimes, and of random features."""
    rows = []
    models = [study.load(c) for c in checkpoints]
    for m in models:
        s = study.score(m, nil=True, desc=f"NIL {m.label}")
        rows.append({"regime": m.unit, "seed": m.ckpt.config.seed,
                     "checkpoint": m.label, "accuracy": s.mean, "ci95": s.ci95, "tasks": s.tasks})
    if models:
        config = models[0].ckpt.config
        for seed in random_seeds:
            torch.manual_seed(seed)
            model = model_for(config).to(study.dev)
            params = {n: p.detach() for n, p in model.named_parameters()}
            s = score_tasks(model, params, study.tasks, inner=None, device=study.dev, nil=True,
                            progress=study.progress, desc="NIL random")
            rows.append({"regime": "random features", "seed": seed, "checkpoint": f"random-s{seed}",
                         "accuracy": s.mean, "ci95": s.ci95, "tasks": s.tasks})
    return pd.DataFrame(rows)


# 6. ---------------------------------------------------------------------------------------
def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """A training run's intermediate checkpoints, oldest first."""
    found = sorted(Path(run_dir).glob("checkpoints/iter-*.safetensors"))
    if not found:
        raise RepsimError(f"no intermediate checkpoints in {run_dir}/checkpoints: pass a run folder written by 'repsim train'")
    return found


def through_training(study: Study, run_dir, *, steps: int | None = None) -> pd.DataFrame:
    """Accuracy, NIL accuracy and before/after similarity at every intermediate checkpoint."""
    return pd.concat([checkpoint_in_training(study, path, steps=steps)
                      for path in run_checkpoints(run_dir)], ignore_index=True)


def checkpoint_in_training(study: Study, checkpoint, *, steps: int | None = None) -> pd.DataFrame:
    """One point of ``through_training``: one intermediate checkpoint's accuracies and similarities."""
    m = study.load(checkpoint)
    rows = []
    for r in accuracy(study, [m.ckpt], steps=steps).itertuples():
        rows.append({**_ids(m), "metric": f"accuracy ({r.mode})", "layer": "", "mean": r.accuracy,
                     "ci95": r.ci95, "n": r.tasks})
    for r in summarise(layer_similarity(study, [m.ckpt], steps=steps)).itertuples():
        rows.append({**_ids(m), "metric": r.measure, "layer": r.layer, "mean": r.mean,
                     "ci95": r.ci95, "n": r.n})
    return pd.DataFrame(rows)


# 7. ---------------------------------------------------------------------------------------
def weight_change(study: Study, checkpoints, *, steps: int | None = None) -> pd.DataFrame:
    """Per layer, ||theta_after - theta_before|| / ||theta_before|| of the inner loop, per task."""
    rows = []
    for checkpoint in checkpoints:
        m = study.load(checkpoint)
        layers = probe_layers(m.model)
        probes = iter_probes(m.model, m.params, study.tasks, device=study.dev, layers=layers[:1],
                             points="query", inner=own_inner_loop(m.ckpt.config, m.model, steps))
        for probe in tqdm(probes, total=len(study.tasks), desc=f"weight change {m.label}",
                          disable=not study.progress, leave=False):
            before, after = probe.params[0], probe.params[-1]
            for layer in layers:
                names = [n for n in before if in_layers(n, [layer])]
                num = math.sqrt(sum(float((after[n] - before[n]).double().pow(2).sum()) for n in names))
                den = math.sqrt(sum(float(before[n].double().pow(2).sum()) for n in names))
                rows.append({**_ids(m), "layer": layer, "task": probe.task_index,
                             "value": num / den if den > 0 else float("nan"), "measure": "relative weight change"})
    return pd.DataFrame(rows)


# Running an analysis into a results folder -------------------------------------------------
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

    def part(self, checkpoint: Path, analyse) -> pd.DataFrame:
        # the label is part of the rows, and depends on the other checkpoints analysed
        file = latest_in(checkpoint) if checkpoint.is_dir() else checkpoint
        label = self.labels.get(str(file.resolve()), "")
        digest = hashlib.sha256(self.context.encode() + label.encode() + file.read_bytes()).hexdigest()[:24]
        path, seal = self.folder / f"{digest}.csv", self.folder / f"{digest}.sha256"
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


# pandas 3 reads floats back exactly by default (and deprecates asking); pandas 2 must be asked
_EXACT_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


@functools.cache
def _source_digest() -> str:
    package = Path(__file__).parent
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode() + source.read_bytes())
    return digest.hexdigest()


ANALYSES = ("similarity", "freezing", "accuracy", "cross", "heads", "regimes",
            "through-training", "weight-change")


def default_label(algorithm: str, seed: int, iteration: int, name: str | None = None) -> str:
    """A checkpoint's label: its name when it has one, else ALGORITHM-sSEED-itITERATION."""
    return name or f"{algorithm}-s{seed}-it{iteration}"


def _file_label(path: Path) -> str:
    """A label from a checkpoint's file: its stem, or for a run folder's own files the run's
    name (``runs/maml-a/model.safetensors`` -> ``maml-a``, its ``iter-000500`` -> ``maml-a-it500``)."""
    if path.stem == "model":
        return path.parent.name
    if path.stem.startswith("iter-") and path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}-it{int(path.stem[5:])}"
    return path.stem


def assign_labels(paths: list[Path]) -> dict[str, str]:
    """Each checkpoint's label (resolved path -> label), distinct, so no two checkpoints' rows
    are ever pooled into one. A checkpoint with a name (``repsim import --name``) keeps it;
    the others are ALGORITHM-sSEED-itITERATION, or their file's name where two would share
    that. Two that still share a label are refused, naming both files."""
    files = [latest_in(p) if p.is_dir() else p for p in paths]
    metas = [read_metadata(f) for f in files]
    named = [(m.get("extra") or {}).get("name") for m in metas]
    labels = [default_label(m["config"].get("algorithm"), m["config"].get("seed", 0),
                            m.get("iteration", 0), n) for m, n in zip(metas, named)]
    counts = {}
    for f, label in zip(files, labels):
        counts.setdefault(label, set()).add(f.resolve())
    labels = [_file_label(f) if not n and len(counts[label]) > 1 else label
              for f, label, n in zip(files, labels, named)]
    seen: dict[str, Path] = {}
    out = {}
    for f, label in zip(files, labels):
        if label in seen:
            what = ("is listed twice" if seen[label].resolve() == f.resolve()
                    else f"and {seen[label]} would both be labelled {label!r}")
            raise RepsimError(f"{f} {what}, and their rows pooled into one: give them distinct "
                              f"names (repsim import --name, or distinct file names)")
        seen[label] = f
        out[str(f.resolve())] = label
    return out


def run_analysis(name: str, checkpoints, out, *, tasks: int = 600, seed: int = 0,
                 ways: int | None = None, shots: int | None = None, queries: int = 15,
                 steps: int | None = None, layers=None, frozen_sets=None,
                 data_root: str | None = None, device: str = "auto", overrides=(),
                 replace: bool = False, progress: bool = True) -> Path:
    """Run analysis ``name`` on ``checkpoints`` (files or, for through-training, a run folder)
    and write its tables and provenance into the results folder ``out``. One process at a
    time may run an analysis into a folder (another one gets a clear refusal)."""
    from repsim.results import check_writable, exclusive

    name = analysis_name(name)
    check_counts(tasks=tasks, queries=queries, inner_steps=steps)
    check_writable(out)
    with exclusive(Path(out), name):
        return _run_analysis(name, checkpoints, out, tasks=tasks, seed=seed, ways=ways,
                             shots=shots, queries=queries, steps=steps, layers=layers,
                             frozen_sets=frozen_sets, data_root=data_root, device=device,
                             overrides=tuple(overrides), replace=replace, progress=progress)


def analysis_name(name: str) -> str:
    """The one spelling of an analysis (``through-training``); ``through_training``, the name
    of its result files, is accepted too."""
    spelled = name.replace("_", "-")
    if spelled not in ANALYSES:
        raise RepsimError(f"unknown analysis {name!r}: choose one of {', '.join(ANALYSES)}")
    return spelled


def result_stem(name: str) -> str:
    """The file name of an analysis' results: ``through-training`` -> ``through_training``."""
    return analysis_name(name).replace("-", "_")


# what makes two runs of an analysis comparable: rows made otherwise must not share a table
_COMPARABLE = ("dataset", "split", "ways", "shots", "queries", "tasks", "task_seed", "inner_steps",
               "test_overrides", "layers", "frozen_sets")


def check_earlier_result(out: Path, name: str, study: dict, labels: list[str]) -> None:
    """Refuse to replace an earlier result of ``name`` in ``out`` made with other options, or
    holding models this run leaves out: its rows would silently disappear. The same options
    with more models is how seeds are added (their parts are reused)."""
    earlier = Path(out) / f"{result_stem(name)}.json"
    if not earlier.is_file():
        return
    try:
        made = json.loads(earlier.read_text())
    except (OSError, ValueError):
        return  # damaged provenance: the result is rewritten whole
    before = made.get("study", {})
    for key in _COMPARABLE:
        if key in before and key in study and before[key] != study[key]:
            raise RepsimError(f"{earlier} was made with {key}={before[key]!r}, this run has "
                              f"{key}={study[key]!r}: use another --out, or --replace to overwrite it")
    # (results written before labels were recorded cannot say which models they hold)
    left_out = [c["label"] for c in made.get("checkpoints", []) if c.get("label") and c["label"] not in set(labels)]
    if left_out:
        raise RepsimError(f"{earlier} also holds {', '.join(map(str, left_out))}, which this run leaves "
                          f"out: list those checkpoints too (their parts are reused), use another --out, "
                          f"or --replace to overwrite it")


def _run_analysis(name, checkpoints, out, *, tasks, seed, ways, shots, queries, steps, layers,
                  frozen_sets, data_root, device, overrides, replace, progress) -> Path:
    from repsim.results import write_result
    checkpoints = [Path(c) for c in checkpoints]
    if not checkpoints:
        raise RepsimError(f"analysis {name} needs at least one checkpoint")
    labels = assign_labels([p for c in checkpoints
                            for p in (run_checkpoints(c) if name == "through-training" else [c])])
    first = run_checkpoints(checkpoints[0])[-1] if name == "through-training" else checkpoints[0]
    first_ckpt = load_checkpoint(first)
    study = Study.for_checkpoint(first_ckpt, ways=ways, shots=shots, queries=queries,
                                 num_tasks=tasks, seed=seed, data_root=data_root, device=device,
                                 overrides=overrides, progress=progress, labels=labels)
    made = {**study.provenance(), "inner_steps": steps if steps is not None
            else "each checkpoint's test_inner_steps", "layers": layers, "frozen_sets": frozen_sets}
    if not replace:
        check_earlier_result(Path(out), name, made, list(labels.values()))
    study.tasks  # build (and validate) the task list before any work
    parts = Parts(Path(out) / ".partial" / name, study,
                  {"steps": steps, "layers": layers, "frozen_sets": frozen_sets})
    per_task = None
    if name == "similarity":
        per_task = parts.concat(checkpoints, lambda c: layer_similarity(study, [c], layers=layers, steps=steps))
        table = summarise(per_task)
    elif name == "freezing":
        table = parts.concat(checkpoints, lambda c: freezing(study, c, frozen_sets=frozen_sets, steps=steps))
    elif name == "accuracy":
        table = parts.concat(checkpoints, lambda c: accuracy(study, [c], steps=steps))
    elif name == "cross":  # every pair, task by task: no per-checkpoint part to keep
        per_task = cross_similarity(study, checkpoints, layers=layers)
        table = summarise(per_task, by=("pair", "layer", "measure"))
    elif name == "heads":
        table = parts.concat(checkpoints, lambda c: head_ablations(study, c, steps=steps))
    elif name == "regimes":  # NIL only: cheap, and random features are shared by all
        table = training_regimes(study, checkpoints)
    elif name == "through-training":
        table = parts.concat([p for c in checkpoints for p in run_checkpoints(c)],
                             lambda c: checkpoint_in_training(study, c, steps=steps))
    else:
        per_task = parts.concat(checkpoints, lambda c: weight_change(study, [c], steps=steps))
        table = summarise(per_task)
    provenance = {"study": made, "checkpoints": [
        _provenance_of(load_checkpoint(p), labels, overrides)
        for c in checkpoints for p in (run_checkpoints(c) if name == "through-training" else [c])]}
    return write_result(out, result_stem(name), table, provenance, per_task)


def _provenance_of(ckpt: Checkpoint, labels: dict[str, str], overrides=()) -> dict:
    ckpt = dataclasses.replace(ckpt, config=tested_with(ckpt.config, overrides))  # as it was tested
    return Model(ckpt, None, {}, labels.get(str(Path(ckpt.path).resolve()), "")).provenance()
