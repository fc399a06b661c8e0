"""Few-shot data: splits of classes held in memory, and the tasks sampled from them.

`load_splits(dataset, ...)` is the one entry point the trainer needs; it returns the train, val
and test `Split`s of a data set, ready for `sample_task` / `TaskList`.

Data sets:
  synthetic     procedurally drawn Omniglot-like characters; no download, built in seconds.
  omniglot      the official zips (or their folders) at data_root / $REPSIM_DATA_ROOT.
  miniimagenet  Ravi & Larochelle CSVs + images/, or the mini-imagenet-cache-*.pkl files.
"""

from __future__ import annotations

from repsim.data.episodes import Split, Task, TaskList, batch_tasks, sample_task, task_generator
from repsim.errors import RepsimError
from repsim.names import DATASETS

# Omniglot-style data gets MAML's rotation augmentation (each rotated character is a new class);
# natural images do not, as in the paper.
DEFAULT_ROTATE = {"synthetic": True, "omniglot": True, "miniimagenet": False}

__all__ = [
    "DATASETS", "DEFAULT_ROTATE", "Split", "Task", "TaskList", "batch_tasks", "load_splits", "sample_task",
    "task_generator",
]


def load_splits(dataset: str, data_root: str | None = None, *, split_scheme: str = "maml", rotate: bool | None = None,
                seed: int = 0, image_resize: str | None = None, cache_dir: str | None = None,
                progress: bool = True) -> dict[str, Split]:
    """The "train", "val" and "test" splits of a data set.

    `seed` fixes which classes go to which split (Omniglot's shuffle; for the synthetic set, the
    characters themselves), so it is a property of the data, independent of the training seed.
    MiniImageNet's split is fixed by its files, so `seed` does not affect it. `image_resize`
    is how Omniglot's drawings are brought to 28x28 ("lanczos", the default, or "nearest", as
    in Finn et al.'s data); the other data sets have no such choice and ignore it.
    """
    if dataset not in DATASETS:
        raise RepsimError(f"unknown data set {dataset!r}; use one of {', '.join(DATASETS)}")
    if rotate is None:
        rotate = DEFAULT_ROTATE[dataset]
    if dataset == "synthetic":
        from repsim.data import synthetic

        if split_scheme != "maml":
            raise RepsimError(
                f"the synthetic data set has one split scheme, got {split_scheme!r}; use split_scheme='maml'"
            )
        return synthetic.load_splits(seed=seed, rotate=rotate)
    if dataset == "omniglot":
        from repsim.data import omniglot

        return omniglot.load_splits(data_root, split_scheme=split_scheme, rotate=rotate, seed=seed,
                                    resize=image_resize or "lanczos", cache_dir=cache_dir,
                                    progress=progress)
    from repsim.data import miniimagenet

    return miniimagenet.load_splits(data_root, split_scheme=split_scheme, rotate=rotate, cache_dir=cache_dir,
                                    progress=progress)
