"""Training configurations: one flat dataclass, defaults per data set and way/shot from the paper.

A config is written as a YAML file of ``key: value`` lines (recipes live in analyses/configs/)
and can be changed from the command line with ``--set key=value``. Keys left out take the
paper's defaults for the data set, ways and shots (PAPER.md, "Protocol").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from repsim.errors import RepsimError
from repsim.meta import ALGORITHMS

DATASETS = ("synthetic", "omniglot", "miniimagenet")


@dataclass
class Config:
    # what to learn
    algorithm: str = "maml"            # maml | fomaml | anil | boil | multiclass | multitask
    dataset: str = "synthetic"         # synthetic | omniglot | miniimagenet
    data_root: str | None = None       # folder of the real data (or env REPSIM_DATA_ROOT)
    split_scheme: str = "maml"         # omniglot: maml (1100/100/423 shuffled) | official
    split_seed: int = 0                # seed of the character shuffle (omniglot, synthetic)
    rotate: bool | None = None         # class augmentation by 90-degree rotations (None: per data set)
    ways: int = 5
    shots: int = 1
    queries: int | None = None         # query points per class at training (None: per data set)
    # model
    filters: int | None = None         # conv4 width (None: 64 omniglot-like, 32 miniimagenet)
    # inner loop
    inner_lr: float | None = None
    inner_steps: int | None = None
    inner_steps_test: int | None = None
    adapt_batchnorm: bool = True       # false: BatchNorm weight/bias left to the outer loop (Finn's TF)
    # outer loop
    meta_batch_size: int | None = None
    outer_lr: float = 0.001
    iterations: int = 60000
    batch_size: int = 64               # multiclass pretraining: images per step
    # bookkeeping
    seed: int = 0
    checkpoint_every: int = 1000
    eval_every: int = 1000
    eval_tasks: int = 100              # validation tasks at each evaluation
    execution: str = "auto"            # auto | loop | vmap: how a meta-batch runs
    reduced: bool = False              # marks a schedule shortened from the paper's

    def resolved(self) -> "Config":
        """A copy with every None replaced by the paper's default for this setting."""
        c = dataclasses.replace(self)
        omniglot_like = c.dataset != "miniimagenet"
        if c.rotate is None:
            c.rotate = omniglot_like
        if c.filters is None:
            c.filters = 64 if omniglot_like else 32
        if omniglot_like:
            five_way = c.ways <= 5
            defaults = dict(inner_lr=0.4 if five_way else 0.1,
                            inner_steps=1 if five_way else 5,
                            inner_steps_test=3 if five_way else 10,
                            meta_batch_size=32 if five_way else 16,
                            queries=c.shots)
        else:
            defaults = dict(inner_lr=0.01, inner_steps=5, inner_steps_test=10,
                            meta_batch_size=4, queries=15)
        for key, value in defaults.items():
            if getattr(c, key) is None:
                setattr(c, key, value)
        c.validate()
        return c

    def validate(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise RepsimError(f"unknown algorithm {self.algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
        if self.dataset not in DATASETS:
            raise RepsimError(f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASETS)}")
        if self.execution not in ("auto", "loop", "vmap"):
            raise RepsimError(f"unknown execution {self.execution!r}: choose auto, loop or vmap")
        for key, least in (("ways", 1), ("shots", 1), ("queries", 1), ("filters", 1),
                           ("meta_batch_size", 1), ("batch_size", 1), ("iterations", 1),
                           ("checkpoint_every", 1), ("eval_every", 1), ("eval_tasks", 2),
                           ("inner_steps", 0), ("inner_steps_test", 0)):
            value = getattr(self, key)
            if value is not None and value < least:
                raise RepsimError(f"{key} must be at least {least}, got {value}")
        for key in ("inner_lr", "outer_lr"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise RepsimError(f"{key} must be positive, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


KEYS = tuple(f.name for f in fields(Config))


def from_dict(values: dict[str, Any], source: str = "config") -> Config:
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise RepsimError(f"unknown key(s) {', '.join(unknown)} in {source}; valid keys: {', '.join(KEYS)}")
    return Config(**{k: _coerce(k, v) for k, v in values.items()})


def _coerce(key: str, value: Any) -> Any:
    """Check a value against the field's type, converting strings from --set."""
    default = Config.__dataclass_fields__[key].default
    kind = type(default) if default is not None else None
    if value is None:
        return None
    if isinstance(value, str) and kind is not str:
        value = yaml.safe_load(value)  # "0.1" -> 0.1, "true" -> True, "null" -> None
        if value is None:
            return None
    int_fields = {"ways", "shots", "queries", "filters", "inner_steps", "inner_steps_test",
                  "meta_batch_size", "iterations", "batch_size", "seed", "checkpoint_every",
                  "eval_every", "eval_tasks", "split_seed"}
    float_fields = {"inner_lr", "outer_lr"}
    bool_fields = {"rotate", "reduced", "adapt_batchnorm"}
    ok = ((key in int_fields and isinstance(value, int) and not isinstance(value, bool))
          or (key in float_fields and isinstance(value, (int, float)) and not isinstance(value, bool))
          or (key in bool_fields and isinstance(value, bool))
          or (key not in int_fields | float_fields | bool_fields and isinstance(value, str)))
    if not ok:
        raise RepsimError(f"bad value {value!r} for {key}: expected "
                          f"{'an integer' if key in int_fields else 'a number' if key in float_fields else 'true/false' if key in bool_fields else 'a string'}")
    return float(value) if key in float_fields else value


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML config file (optional) and apply ``key=value`` overrides, then resolve defaults."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RepsimError(f"config file {path} not found: pass the path of a YAML file (recipes are in analyses/configs/)")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise RepsimError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]}): fix the syntax") from None
        if not isinstance(loaded, dict):
            raise RepsimError(f"config file {path} must hold 'key: value' lines, not a {type(loaded).__name__}")
        values.update(loaded)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise RepsimError(f"--set expects key=value, got {item!r}")
        values[key.strip()] = value.strip()
    return from_dict(values, source=str(path) if path else "--set").resolved()


def config_json(config: Config) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)
