"""A study: checkpoints loaded for testing, and the fixed list of tasks they are tested on.

Every analysis (:mod:`repsim.measures`) and ``repsim evaluate`` (:func:`evaluate_checkpoint`)
go through a :class:`Study`: it builds the test tasks once, from the checkpoints' own data
set, split and image conventions, and loads each checkpoint as it is tested (its
``key=value`` test overrides applied, a fresh head where it has no ``ways``-sized one) into a
:class:`Model`, which carries the label its rows are keyed on (:func:`assign_labels`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from repsim.checkpoint import Checkpoint, check_head_width, latest_in, load_checkpoint
from repsim.config import check_test_flags, check_testable, parse_overrides, tested_with
from repsim.data import load_splits
from repsim.data.episodes import TaskList
from repsim.errors import RepsimError
from repsim.evaluate import check_counts, resolve_device, score_tasks, test_time_params
from repsim.meta import own_inner_loop
from repsim.names import ALGORITHMS, ANALYSIS_QUERIES

# how the analyses compare conv layers, and the same in words for their provenance
CONVENTIONS = {"cca": "spatial", "cka": "flatten"}
CONVENTION_TEXT = ("CCA: mean canonical correlation, conv layers with spatial positions as data "
                   "points (n*h*w, c); CKA: linear CKA, conv layers flattened (n, c*h*w)")
CI_TEXT = ("95% Student-t interval over tasks, t(0.975, n-1) * s / sqrt(n); changes: the same "
           "interval of per-task paired differences")


@dataclass
class Model:
    """A checkpoint ready for analysis: its model, its parameters, and its label, the name its
    rows carry in every result (:func:`assign_labels`). ``model`` is None where only its
    provenance is wanted (:meth:`Study.checkpoint_provenance`)."""
    ckpt: Checkpoint
    model: torch.nn.Module | None
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
        if self.label == plain:
            return self.ckpt.config.algorithm
        if self.ckpt.imported and self.label in ALGORITHMS:
            # an import named after an algorithm (maml.pt) must not pool with repsim's own runs of it
            return f"{self.label} (imported)"
        at = f"-it{self.ckpt.iteration}"
        if self.ckpt.path and Path(self.ckpt.path).parent.name == "checkpoints" and self.label.endswith(at):
            return self.label[:-len(at)]  # a run told apart by its folder: one model through training
        return self.label

    def provenance(self) -> dict:
        c = self.ckpt.config
        return {"checkpoint": str(self.ckpt.path), "label": self.label, "model": self.unit,
                "algorithm": c.algorithm, "seed": c.seed,
                "iteration": self.ckpt.iteration, "reduced_schedule": c.reduced,
                "dataset": c.dataset, "ways": c.ways, "shots": c.shots,
                "inner_lr": c.inner_lr, "test_inner_steps": c.inner_steps_test,
                # trained elsewhere: its iteration (0) and, unless given, its seed say nothing
                "imported": self.ckpt.imported,
                "seed_known": self.ckpt.seed_known,
                # imported without its test split: repsim's own was assumed (repsim import warned)
                "split_guessed": bool(self.ckpt.extra.get("split_guessed")),
                **c.conventions_used(), "convention_summary": c.describe_conventions()}


@dataclass(frozen=True)
class TestProtocol:
    """How every model of a study is tested, fixed once before any work (the command line builds
    it from its flags): the task list (``tasks`` tasks drawn with ``seed``, ``ways`` and ``shots``
    (None: the first checkpoint's), ``queries`` points per class (None: each checkpoint's
    ``test_queries``)), the inner loop's ``steps`` (None: each checkpoint's test-time steps), and
    ``overrides``, changes to the checkpoints' own test-time keys (``--set``: a {key: value} dict, or
    ``key=value`` strings, parsed here once). ``data_root`` and ``device``: where the test images
    are and where the models run. Built, it has been checked: counts, keys a test may change,
    ``steps`` and ``inner_steps_test`` not both given (whether ``test_queries`` may be given
    beside ``queries`` is for the command to say: evaluate refuses both, analyze the key)."""
    __test__ = False  # not a test class, for pytest
    tasks: int = 600
    seed: int = 0
    ways: int | None = None
    shots: int | None = None
    queries: int | None = None
    steps: int | None = None
    overrides: Mapping[str, str] = field(default_factory=dict)
    data_root: str | None = None
    device: str = "auto"

    def __post_init__(self):
        given = self.overrides
        if not isinstance(given, Mapping):
            given = parse_overrides(given, once=True)
        object.__setattr__(self, "overrides", dict(given))
        check_counts(tasks=self.tasks, queries=self.queries, inner_steps=self.steps)
        check_testable(self.overrides)
        check_test_flags(self.overrides, inner_steps=self.steps)  # queries: the command's own rule


def overrides_text(given: Mapping[str, str]) -> str:
    """``--set`` changes as the results and reports record them: ``key=value`` ..."""
    return " ".join(f"{k}={v}" for k, v in given.items())


@dataclass
class Study:
    """The shared test protocol: which tasks, how many, on what device.

    ``ways``/``shots`` default to the first checkpoint's; ``queries`` to 15 per class (the
    paper's representation analysis). Every checkpoint of a study must share the data set.
    """
    dataset: str
    ways: int
    shots: int
    queries: int = ANALYSIS_QUERIES
    num_tasks: int = 100
    seed: int = 0
    split: str = "test"
    data_root: str | None = None
    split_scheme: str = "maml"
    split_seed: int = 0
    rotate: bool | None = None
    image_resize: str | None = None
    device: str = "auto"
    overrides: Mapping[str, str] = field(default_factory=dict)  # how every checkpoint is tested (config.tested_with)
    progress: bool = True
    labels: dict[str, str] = field(default_factory=dict)  # resolved path -> label
    _tasks: TaskList | None = field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.overrides, Mapping):  # key=value strings, as on the command line
            self.overrides = parse_overrides(self.overrides, once=True)

    @classmethod
    def for_checkpoint(cls, ckpt: Checkpoint, **kwargs) -> "Study":
        c = ckpt.config
        base = dict(dataset=c.dataset, ways=c.ways, shots=c.shots, data_root=c.data_root,
                    split_scheme=c.split_scheme, split_seed=c.split_seed, rotate=c.rotate,
                    image_resize=c.image_resize)
        base.update({k: v for k, v in kwargs.items() if v is not None})
        return cls(**base)

    @classmethod
    def for_protocol(cls, ckpt: Checkpoint, protocol: "TestProtocol", **kwargs) -> "Study":
        """The study that tests by ``protocol``, on ``ckpt``'s data set, split and image conventions."""
        given = dict(ways=protocol.ways, shots=protocol.shots, queries=protocol.queries, num_tasks=protocol.tasks,
                     seed=protocol.seed, data_root=protocol.data_root, device=protocol.device,
                     overrides=protocol.overrides)
        return cls.for_checkpoint(ckpt, **{**given, **kwargs})

    @property
    def dev(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def tasks(self) -> TaskList:
        if self._tasks is None:
            if self.num_tasks < 1:  # scores need 2 (a confidence interval: check_counts), probes 1
                raise RepsimError(f"--tasks must be at least 1, got {self.num_tasks}")
            if self.dataset == "synthetic" and self.data_root:
                raise RepsimError(f"the synthetic data set is built in and reads no data folder: leave out "
                                  f"--data-root ({self.data_root})")
            splits = load_splits(self.dataset, self.data_root, split_scheme=self.split_scheme,
                                 rotate=self.rotate, seed=self.split_seed,
                                 image_resize=self.image_resize, progress=self.progress)
            if self.split not in splits:
                raise RepsimError(f"unknown split {self.split!r}: choose one of {', '.join(splits)}")
            self._tasks = TaskList(splits[self.split], self.ways, self.shots, self.queries,
                                   self.num_tasks, self.seed)
        return self._tasks

    def provenance(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "split_scheme": self.split_scheme,
                "split_seed": self.split_seed, "rotate": self.rotate,
                "image_resize": self.image_resize, "ways": self.ways, "shots": self.shots, "queries": self.queries,
                "tasks": self.num_tasks, "task_seed": self.seed, "test_overrides": overrides_text(self.overrides),
                "confidence_interval": CI_TEXT,
                "conventions": CONVENTION_TEXT}

    def load(self, checkpoint) -> Model:
        ckpt = self._tested(checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint))
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
        check_head_width(c.algorithm, c.ways, self.ways, ckpt.path or "the checkpoint",
                         f"the study's tasks are {self.ways}-way",
                         f"analyse it with --ways {c.ways}, or separately")
        model = ckpt.build_model().to(self.dev)
        params = test_time_params(model, dict(model.named_parameters()), ckpt.config.algorithm, self.ways)
        return Model(ckpt, model, {n: p.detach() for n, p in params.items()}, self._label(ckpt))

    def checkpoint_provenance(self, checkpoint) -> dict:
        """A checkpoint's provenance as this study tests it (its overrides applied, its
        label), read from its metadata: its weights are not loaded again."""
        ckpt = self._tested(load_checkpoint(checkpoint, weights=False))
        return Model(ckpt, None, {}, self._label(ckpt)).provenance()

    def _tested(self, ckpt: Checkpoint) -> Checkpoint:
        """``ckpt`` as this study tests it: its config with the study's overrides."""
        if self.overrides:
            ckpt = dataclasses.replace(ckpt, config=tested_with(ckpt.config, self.overrides))
        return ckpt

    def _label(self, ckpt: Checkpoint) -> str:
        label = self.labels.get(str(Path(ckpt.path).resolve())) if ckpt.path else None
        return label or ""

    def score(self, m: Model, *, names=None, steps=None, params=None, nil=False, desc="scoring"):
        """Score ``m`` with its own inner loop, adapting ``names`` only when given."""
        inner = own_inner_loop(m.ckpt.config, m.model, steps)
        if names is not None:
            inner = inner.but(names=names)
        return score_tasks(m.model, m.params if params is None else params, self.tasks,
                           inner=inner, device=self.dev, nil=nil, progress=self.progress,
                           desc=desc)


def evaluate_checkpoint(checkpoint, *, tasks: int = 600, inner_steps: int | None = None,
                        seed: int = 0, split: str = "test", data_root: str | None = None,
                        queries: int | None = None, nil: bool = False, device: str = "auto",
                        overrides=(), progress: bool = True) -> dict:
    """Score a checkpoint on ``tasks`` fixed tasks of ``split``; returns a flat record.

    The inner loop is the one the checkpoint was trained with (:func:`own_inner_loop`;
    no-inner-loop regimes adapt a fresh head), run for ``inner_steps`` (default: the
    config's test-time steps), on ``queries`` query points per class (default: the config's
    ``test_queries``). ``nil`` scores with NIL testing instead. ``overrides`` (``key=value``
    strings or a dict, :class:`TestProtocol`) change how it is tested, e.g. its inner step size. The
    record carries every convention the checkpoint was trained and tested with.
    """
    protocol = TestProtocol(tasks=tasks, seed=seed, queries=queries, steps=inner_steps, overrides=overrides,
                            data_root=data_root or None, device=device)
    check_test_flags(protocol.overrides, queries=queries, nil=nil, inner_steps=inner_steps)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    c = tested_with(ckpt.config, protocol.overrides)
    queries = c.test_queries if queries is None else queries
    study = Study.for_protocol(ckpt, protocol, queries=queries, split=split, progress=progress)
    study.dev  # an unknown or missing device is refused before the data are read
    study.tasks
    m = study.load(ckpt)
    score = study.score(m, steps=inner_steps, nil=nil, desc="evaluating")
    steps = c.inner_steps_test if inner_steps is None else inner_steps
    return {"checkpoint": str(ckpt.path), "algorithm": c.algorithm, "dataset": c.dataset,
            "ways": c.ways, "shots": c.shots, "queries": queries, "split": split,
            "iteration": ckpt.iteration, "inner_steps": 0 if nil else steps,
            "inner_lr": c.inner_lr, "mode": "nil" if nil else "inner-loop", "seed": seed,
            "tasks": score.tasks, "accuracy": score.mean, "ci95": score.ci95,
            "reduced_schedule": c.reduced, **c.conventions_used(),
            "convention_summary": c.describe_conventions(), "test_overrides": overrides_text(protocol.overrides)}


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


def _run_folder(path: Path) -> Path | None:
    """The run folder a checkpoint file belongs to (RUN/model.safetensors, RUN/checkpoints/iter-*), if any."""
    if path.stem == "model":
        return path.parent.resolve()
    if path.stem.startswith("iter-") and path.parent.name == "checkpoints":
        return path.parent.parent.resolve()
    return None


def _refuse_same_weights(files: list[Path]) -> None:
    """Two files that hold the same weights are one model (a run's model.safetensors and its
    last checkpoint; one model imported under two names): analysed as two, they would count
    it twice, as two seeds that agree perfectly (cross-model CCA 1.000)."""
    seen: dict[str, Path] = {}
    for f in dict.fromkeys(f.resolve() for f in files):
        params = load_checkpoint(f).params
        digest = hashlib.sha256()
        for name in sorted(params):
            digest.update(name.encode() + b"\0" + params[name].contiguous().numpy().tobytes())
        key = digest.hexdigest()
        if key in seen:
            raise RepsimError(f"{seen[key]} and {f} hold the same weights (a run's final model and its "
                              f"last checkpoint, or one model imported twice): list one of them")
        seen[key] = f


def _convention_variants(files: list[Path], ckpts: list[Checkpoint]) -> list[bool]:
    """Which of ``files`` (their checkpoints ``ckpts``, read without weights) were trained with
    other conventions than most runs of their algorithm (a control with PyTorch's head init
    beside Finn-convention seeds). A variant must never pool with the others as one more seed,
    whatever its seed. Runs are counted by run folder (a run's checkpoints are one run); with no
    single most common set, every unnamed checkpoint of the algorithm is a variant, since none
    of its sets can stand for it. Named checkpoints are never variants: their name labels them."""
    # the values, not the set's name: "pytorch" with every key set to Finn's is Finn's set
    conventions = [tuple(sorted((k, str(v)) for k, v in c.config.conventions_used().items() if k != "conventions"))
                   for c in ckpts]
    runs: dict = {}  # algorithm -> conventions -> the runs trained with them
    for f, c, used in zip(files, ckpts, conventions):
        if not c.name:
            runs.setdefault(c.config.algorithm, {}).setdefault(used, set()).add(_run_folder(f) or f.resolve())
    usual = {}
    for algorithm, by_set in runs.items():
        ranked = sorted(by_set, key=lambda used: len(by_set[used]), reverse=True)
        if len(ranked) == 1 or len(by_set[ranked[0]]) > len(by_set[ranked[1]]):
            usual[algorithm] = ranked[0]
    return [not c.name and usual.get(c.config.algorithm) != used for c, used in zip(ckpts, conventions)]


def assign_labels(paths: list[Path]) -> dict[str, str]:
    """Each checkpoint's label (resolved path -> label), distinct, so no two checkpoints' rows
    are ever pooled into one. A checkpoint with a name (``repsim import --name``) keeps it;
    the others are ALGORITHM-sSEED-itITERATION, or their file's name where two would share
    that or where it was trained with other conventions than most runs of its algorithm
    (:func:`_convention_variants`); then every checkpoint of the same run folder takes its
    file's name too, so that a run keeps one name through training. Two that still share a
    label are refused, naming both files."""
    files = [latest_in(p) if p.is_dir() else p for p in paths]
    ckpts = [load_checkpoint(f, weights=False) for f in files]
    named = [c.name for c in ckpts]
    labels = [default_label(c.config.algorithm, c.config.seed, c.iteration, c.name) for c in ckpts]
    _refuse_same_weights(files)
    variants = _convention_variants(files, ckpts)
    counts = {}  # a variant's label is its file's: it takes no default label from the others
    for f, label, v in zip(files, labels, variants):
        if not v:
            counts.setdefault(label, set()).add(f.resolve())
    apart = [not n and (v or len(counts[label]) > 1) for label, n, v in zip(labels, named, variants)]
    runs_apart = {_run_folder(f) for f, a in zip(files, apart) if a} - {None}
    labels = [_file_label(f) if not n and (a or _run_folder(f) in runs_apart) else label
              for f, label, n, a in zip(files, labels, named, apart)]
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
