"""Few-shot episodes: splits of classes, tasks sampled from them, and fixed task lists.

Every data set ends up as a `Split`: one dense uint8 tensor of shape (classes, examples, C, H, W).
Keeping the whole split in one tensor makes sampling a task a couple of indexing operations, so
the meta-training loop never waits on a data loader and needs no worker processes.

Randomness is addressed, not carried: task number `index` of stream `seed` is always drawn from
`task_generator(seed, index)`. Training draws the j-th task of iteration i from index
i * meta_batch + j, so a resumed run sees exactly the tasks it would have seen without the
interruption, and evaluation tasks are identical for every method compared on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Iterator

import numpy as np
import torch

from repsim.errors import RepsimError


@dataclass
class Split:
    """The classes of one split (train, val or test) of a data set, all examples in memory.

    `images` stays uint8 so that a whole split fits comfortably in memory (Omniglot: 25 MB);
    tasks are converted to float only when sampled.
    """

    images: torch.Tensor
    class_names: list[str]
    rotate: bool
    name: str = ""

    def __post_init__(self) -> None:
        label = self.name or "split"
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.dim() != 5:
            dtype = getattr(self.images, "dtype", type(self.images))
            shape = tuple(getattr(self.images, "shape", ()))
            raise RepsimError(
                f"{label}: images must be a uint8 tensor of shape (classes, examples, C, H, W), "
                f"got {dtype} of shape {shape}; convert the data set to that layout"
            )
        if len(self.class_names) != self.images.shape[0]:
            raise RepsimError(
                f"{label}: {len(self.class_names)} class names for {self.images.shape[0]} classes; "
                "give exactly one name per class"
            )
        if self.rotate and self.images.shape[-1] != self.images.shape[-2]:
            raise RepsimError(
                f"{label}: rotation augmentation needs square images, got {tuple(self.images.shape[-2:])}; "
                "pass rotate=False"
            )

    @property
    def num_classes(self) -> int:
        return int(self.images.shape[0])

    @property
    def examples_per_class(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[2:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"Split(name={self.name!r}, classes={self.num_classes}, "
            f"examples_per_class={self.examples_per_class}, image_shape={self.image_shape}, rotate={self.rotate})"
        )


@dataclass
class Task:
    """One N-way K-shot episode: a labelled support set to adapt on and a query set to score.

    Labels are 0..ways-1 in the order of `classes`; `rotations[i]` is the number of quarter
    turns applied to class `classes[i]` (the rotated character counts as a new class, as in MAML).
    `examples[i]` lists which stored examples of that class were used, support first; it lets
    provenance and tests check that query and support never share an image.

    A task made by `batch_tasks` has a leading task dimension on every tensor.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor
    rotations: torch.Tensor | None = None
    examples: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.rotations is None:
            self.rotations = torch.zeros_like(self.classes)

    def to(self, device: torch.device | str) -> "Task":
        """A copy on `device`; labels and bookkeeping move too, so accuracy can be computed there."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Task(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in moved.items()})


def task_generator(seed: int, index: int, stream: int = 0) -> torch.Generator:
    """The random generator for task `index` of the task stream `seed`.

    SeedSequence mixes (seed, index) into well-separated states, so neighbouring indices or seeds
    do not give correlated tasks, and any task can be recreated on its own. A non-zero `stream`
    gives another, independent generator for the same (seed, index).
    """
    if int(seed) < 0 or int(index) < 0:
        raise RepsimError(f"task seed and index must be non-negative, got seed={seed}, index={index}; use seeds >= 0")
    entropy = [int(seed), int(index)] + ([int(stream)] if stream else [])
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    generator = torch.Generator()
    generator.manual_seed(int(state[0]) << 32 | int(state[1]))
    return generator


def check_task_shape(split: Split, ways: int, shots: int, queries: int) -> None:
    """Fail early, with the fix, when a split cannot supply tasks of this shape."""
    label = split.name or "split"
    for what, value, least in (("ways", ways, 1), ("shots", shots, 1), ("queries", queries, 0)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise RepsimError(f"{what} must be an integer >= {least}, got {value!r}; fix the task configuration")
    if ways > split.num_classes:
        raise RepsimError(
            f"{ways}-way tasks need {ways} classes but {label} has only {split.num_classes}; "
            f"use at most {split.num_classes} ways (ways: in the config, or --ways)"
        )
    if shots + queries > split.examples_per_class:
        raise RepsimError(
            f"{shots} shots + {queries} queries need {shots + queries} examples per class but {label} has only "
            f"{split.examples_per_class}; lower the shots or queries (in the config, or --shots / --queries) "
            f"so that shots + queries <= {split.examples_per_class}"
        )


def rotate_images(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """``images[i]`` turned by ``turns[i]`` quarter turns (a rotated character is a new class,
    as in MAML's Omniglot)."""
    return torch.stack([torch.rot90(x, int(k), dims=(-2, -1)) for x, k in zip(images, turns)])


@dataclass(frozen=True)
class TaskDraw:
    """Which images make a task, without the images: what a task's generator decides.

    ``classes[i]`` is the class labelled i, ``rotations[i]`` its quarter turns, and
    ``examples[i]`` the stored examples of it, support first. A GPU trainer gathers the images
    on the device from these (repsim.batched); :func:`task_from_draw` gathers them here.
    """

    classes: torch.Tensor    # (ways,)
    examples: torch.Tensor   # (ways, shots + queries)
    rotations: torch.Tensor  # (ways,)


def draw_task(num_classes: int, examples_per_class: int, rotate: bool, ways: int, per_class: int,
              generator: torch.Generator, rotation_generator: torch.Generator | None = None) -> TaskDraw:
    """Draw `ways` distinct classes and `per_class` distinct examples of each.

    Classes are taken in random order and labelled by position, so the label a class gets is
    random too: the model cannot memorise a class -> label mapping across tasks. Rotations
    come from `rotation_generator` when one is given (a pool of tasks whose rotations are
    drawn afresh), else from `generator`. Only the split's sizes matter, not its images.
    """
    classes = torch.randperm(num_classes, generator=generator)[:ways]
    examples = torch.stack(
        [torch.randperm(examples_per_class, generator=generator)[:per_class] for _ in range(ways)]
    )
    if rotate:
        rotations = torch.randint(0, 4, (ways,), generator=rotation_generator or generator)
    else:
        rotations = torch.zeros(ways, dtype=torch.int64)
    return TaskDraw(classes.to(torch.int64), examples.to(torch.int64), rotations.to(torch.int64))


def task_from_draw(split: Split, draw: TaskDraw, shots: int) -> Task:
    """The task a draw names: its images gathered, rotated and scaled to [0, 1], the first
    `shots` examples of each class its support set, the others its query set."""
    ways, per_class = draw.examples.shape
    images = split.images[draw.classes[:, None], draw.examples]  # (ways, per_class, C, H, W)
    if split.rotate:
        images = rotate_images(images, draw.rotations)
    images = images.float().div_(255.0)

    shape = images.shape[2:]
    labels = torch.arange(ways, dtype=torch.int64)
    queries = per_class - shots
    return Task(
        support_x=images[:, :shots].reshape(ways * shots, *shape),
        support_y=labels.repeat_interleave(shots),
        query_x=images[:, shots:].reshape(ways * queries, *shape),
        query_y=labels.repeat_interleave(queries),
        classes=draw.classes,
        rotations=draw.rotations,
        examples=draw.examples,
    )


def sample_task(split: Split, ways: int, shots: int, queries: int, generator: torch.Generator,
                rotation_generator: torch.Generator | None = None) -> Task:
    """A task of `ways` classes with `shots` support and `queries` query examples each
    (:func:`draw_task`, then :func:`task_from_draw`)."""
    check_task_shape(split, ways, shots, queries)
    draw = draw_task(split.num_classes, split.examples_per_class, split.rotate, ways,
                     shots + queries, generator, rotation_generator)
    return task_from_draw(split, draw, shots)


class TaskList(Sequence):
    """A fixed, reproducible list of tasks, e.g. the 600 evaluation tasks of a test split.

    Tasks are rebuilt on access from `task_generator(seed, i)` rather than stored, so a list of
    thousands of 20-way tasks costs no memory, and two TaskLists with the same parameters hold the
    same tasks in every process: all methods and ablations are scored on identical episodes.
    """

    def __init__(self, split: Split, ways: int, shots: int, queries: int, num_tasks: int, seed: int = 0):
        check_task_shape(split, ways, shots, queries)
        if not isinstance(num_tasks, (int, np.integer)) or num_tasks < 0:
            raise RepsimError(
                f"num_tasks must be a non-negative integer, got {num_tasks!r}; fix the evaluation configuration"
            )
        if int(seed) < 0:
            raise RepsimError(f"task seed must be non-negative, got {seed}; use a seed >= 0")
        self.split = split
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
        self.num_tasks, self.seed = int(num_tasks), int(seed)

    def __len__(self) -> int:
        return self.num_tasks

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.num_tasks))]
        i = int(index)
        if i < 0:
            i += self.num_tasks
        if not 0 <= i < self.num_tasks:
            raise IndexError(f"task {index} out of range for a TaskList of {self.num_tasks} tasks")
        return sample_task(self.split, self.ways, self.shots, self.queries, task_generator(self.seed, i))

    def __iter__(self) -> Iterator[Task]:
        for i in range(self.num_tasks):
            yield self[i]

    def describe(self) -> dict:
        """Everything needed to rebuild this list, for results files and provenance."""
        return {
            "split": self.split.name,
            "split_classes": self.split.num_classes,
            "examples_per_class": self.split.examples_per_class,
            "rotate": self.split.rotate,
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "num_tasks": self.num_tasks,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        d = self.describe()
        return (
            f"TaskList({d['split']!r}, {d['ways']}-way {d['shots']}-shot, {d['queries']} queries, "
            f"{d['num_tasks']} tasks, seed={d['seed']})"
        )


def batch_tasks(tasks: list[Task]) -> Task:
    """Stack same-shaped tasks into one with a leading task dimension, for vmap-style execution."""
    tasks = list(tasks)
    if not tasks:
        raise RepsimError("batch_tasks got no tasks; pass at least one task")
    stacked = {}
    for f in fields(Task):
        values = [getattr(t, f.name) for t in tasks]
        if any(v is None for v in values):
            stacked[f.name] = None
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise RepsimError(
                f"batch_tasks needs tasks of one shape, got {f.name} shapes {sorted(shapes)}; "
                "batch only tasks with the same ways, shots and queries"
            )
        stacked[f.name] = torch.stack(values)
    return Task(**stacked)
