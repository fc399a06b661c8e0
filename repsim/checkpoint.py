"""Checkpoints: weights in safetensors, everything else as JSON in the same file's header.

A checkpoint is one ``.safetensors`` file. Its tensors are the model's parameters under their
module names (``conv1.conv.weight`` ... ``head.bias``) and, for resuming training, the
optimiser's state under ``optimizer/...``. Its header metadata holds one JSON document:
the full config, algorithm, data set and split seed, iteration, metrics and repsim version.
safetensors cannot hold code, so loading a checkpoint never runs any.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

import repsim
from repsim.config import Config, from_saved
from repsim.errors import RepsimError
from repsim.io import atomic_write_bytes
from repsim.model import is_head, model_for
from repsim.names import META_ALGORITHMS

OPTIMIZER_PREFIX = "optimizer/"


def check_head_width(algorithm: str, width: int, ways: int, source, against: str, fix: str) -> None:
    """The one rule for a head's width: a meta-learned head has one row per way, because it is
    what the inner loop starts from (a fresh head of another width would be another model).
    Multiclass and multitask heads have one row per training class and are replaced at test
    time, so any width passes. ``against`` says what ``ways`` came from, ``fix`` what to do."""
    if algorithm in META_ALGORITHMS and width != ways:
        raise RepsimError(f"{source} has a {width}-way head but {against}: {fix}")


@dataclass
class Checkpoint:
    config: Config
    params: dict[str, torch.Tensor]
    iteration: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # provenance: device, wall time, source
    path: Path | None = None
    factory: Callable[[], torch.nn.Module] | None = None  # a model of one's own (from_module)

    @classmethod
    def from_module(cls, module: torch.nn.Module, name: str, config: Config | None = None,
                    factory: Callable[[], torch.nn.Module] | None = None, **settings) -> "Checkpoint":
        """A model of one's own, in memory, for the analyses in Python: any module whose
        classifier is named ``head`` (the inner loop's head/body split). ``factory`` builds
        a fresh module of its class (default: a deep copy of ``module``); ``config`` (or
        ``settings``, e.g. ``dataset="omniglot", ways=5, inner_lr=0.4``) says how it learns."""
        import copy
        config_given = config is not None
        if config is None:
            from repsim.config import from_dict
            config = from_dict(settings, source="Checkpoint.from_module").resolved()
        state = {n: t.detach().clone() for n, t in module.state_dict().items()}
        # from settings, its seed is known only when given: the default (0) would pair it with
        # seed-0 runs; a config passed whole is taken at its word
        seed_known = config_given or "seed" in settings
        return cls(config, state, extra={"name": name, "seed_known": seed_known},
                   factory=factory or (lambda: copy.deepcopy(module)))

    def build_model(self) -> torch.nn.Module:
        """The conv4 this checkpoint was trained as (or its ``factory``'s module), with its
        weights loaded."""
        heads = [p for n, p in self.params.items() if is_head(n) and p.dim() == 2]
        if heads:
            width = heads[-1].shape[0]
            check_head_width(self.config.algorithm, width, self.config.ways, self.path or "the checkpoint",
                             f"its config says ways: {self.config.ways}",
                             f"give the ways it was trained with (ways={width})")
        model = self.factory() if self.factory else model_for(self.config, self.params)
        load_weights(model, self.params, source=str(self.path or "checkpoint"))
        bad = [n for n, p in self.params.items() if p.is_floating_point() and not torch.isfinite(p).all()]
        if bad:
            raise RepsimError(f"{self.path or 'the checkpoint'} has NaN or infinite weights (e.g. {bad[0]}): "
                              f"its run diverged; use an earlier checkpoint of the run")
        return model

    @property
    def name(self) -> str | None:
        """The name it was given (``repsim import --name``), which labels its results."""
        return self.extra.get("name") or None

    @property
    def imported(self) -> bool:
        """Trained elsewhere: read by ``repsim import``, or a module in memory (from_module)."""
        return bool(self.extra.get("imported_from") or self.factory)

    @property
    def seed_known(self) -> bool:
        """Whether ``config.seed`` is the seed it was trained from: always for repsim's own
        runs, for an imported model only when the seed was given at import (one imported
        before this was recorded: not known)."""
        return bool(self.extra.get("seed_known", not self.imported))


def load_weights(model: torch.nn.Module, params: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``params`` into ``model``, naming every mismatching layer if they do not fit."""
    expected = {n: p.shape for n, p in model.state_dict().items()}
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    wrong_shape = sorted(n for n in set(expected) & set(params) if params[n].shape != expected[n])
    if missing or unexpected or wrong_shape:
        def layers(names):
            return ", ".join(dict.fromkeys(n.split(".")[0] for n in names))
        if missing or unexpected:  # names, not shapes: the fix is a mapping, not a config
            raise RepsimError(
                f"{source} does not fit {type(model).__name__}: the model has {len(missing)} "
                f"tensors the weights lack (e.g. {', '.join(missing[:2]) or 'none'}) and the weights "
                f"{len(unexpected)} it has no place for (e.g. {', '.join(unexpected[:2]) or 'none'}): "
                f"import with a --layout that knows these names, or map them with --rename and --drop")
        n = wrong_shape[0]
        raise RepsimError(f"{source} does not fit {type(model).__name__}: layers {layers(wrong_shape)} "
                          f"have other shapes (e.g. {n} {tuple(params[n].shape)} vs {tuple(expected[n])}); "
                          f"check the config's dataset, ways, filters and pooling")
    model.load_state_dict({n: params[n] for n in expected})


FORMAT = "repsim-checkpoint-1"  # what a checkpoint's metadata says it is, read back and checked


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename over ``path``."""
    path = Path(path)
    tensors = {n: p.detach().cpu().contiguous() for n, p in ckpt.params.items()}
    tensors.update({OPTIMIZER_PREFIX + n: t.detach().cpu().contiguous()
                    for n, t in ckpt.optimizer.items()})
    meta = {
        "format": FORMAT,
        "repsim_version": repsim.__version__,
        "config": ckpt.config.to_dict(),
        "algorithm": ckpt.config.algorithm,
        "dataset": ckpt.config.dataset,
        "split_seed": ckpt.config.split_seed,
        "iteration": ckpt.iteration,
        "metrics": ckpt.metrics,
        "extra": ckpt.extra,
    }
    # the tensors' bytes and their index (name, dtype, shape, place) do not depend on the
    # metadata, so a first serialisation without it gives their digests
    bare = save(tensors)
    meta["tensors_sha256"] = tensor_digest(bare)
    meta["tensor_index_sha256"] = index_digest(bare)
    return atomic_write_bytes(path, save(tensors, metadata={"repsim": json.dumps(meta, sort_keys=True)}))


def tensor_digest(data: bytes) -> str:
    """SHA-256 of a safetensors file's tensor bytes (all that follows its header). Written into
    the metadata at save and checked at load: a flipped or edited byte of a weight, which the
    file's structure cannot reveal, is refused instead of analysed."""
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()


def index_digest(data: bytes) -> str:
    """SHA-256 of a safetensors file's tensor index: each tensor's name, dtype, shape and byte
    range (its header without the metadata). The bytes' digest cannot see two tensors' ranges
    swapped, which loads other weights under each name from the same bytes."""
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    header.pop("__metadata__", None)
    return hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A checkpoint's repsim metadata (its config, iteration, metrics...), checked."""
    return _metadata(_read_bytes(Path(path)), Path(path))


def _read_bytes(path: Path) -> bytes:
    # read here rather than by safetensors' own file reader, which refuses paths that are
    # not valid UTF-8
    try:
        return path.read_bytes()
    except OSError as e:
        raise RepsimError(f"cannot read checkpoint {path} ({e.strerror}): pass a readable "
                          f".safetensors file written by 'repsim train' or 'repsim import'") from None


def _metadata(data: bytes, path: Path) -> dict[str, Any]:
    """The metadata of safetensors ``data``: an 8-byte little-endian header length, then a
    JSON header whose ``__metadata__`` holds our JSON document under ``repsim``."""
    try:
        if len(data) < 8:
            raise ValueError("shorter than a safetensors header")
        size = int.from_bytes(data[:8], "little")
        if size > len(data) - 8:
            raise ValueError("its header runs past the end of the file")
        header = json.loads(data[8:8 + size])
        raw = (header.get("__metadata__") or {}).get("repsim") if isinstance(header, dict) else None
    except (ValueError, UnicodeDecodeError) as e:
        raise RepsimError(f"{path} is not a readable safetensors checkpoint ({e}): it may have been "
                          f"cut short; use an earlier checkpoint of its run (a resumed run skips it), "
                          f"or write it again with 'repsim train' or 'repsim import'") from None
    if raw is None:
        raise RepsimError(f"{path} has no repsim metadata: import plain weights with "
                          f"'repsim import WEIGHTS --config FILE --out CKPT'")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise RepsimError(f"{path} has damaged repsim metadata (not JSON: {e.msg}): use another "
                          f"checkpoint of the run, or import its weights again with 'repsim import'") from None
    return _checked_metadata(meta, path)


def _checked_metadata(meta, path) -> dict[str, Any]:
    """The metadata's shape, checked, so a damaged or hand-edited header gives one clear line
    instead of a wrong number or a traceback later."""
    def damaged(what: str) -> RepsimError:
        return RepsimError(f"{path} has damaged repsim metadata ({what}): use another checkpoint "
                           f"of the run, or import its weights again with 'repsim import'")
    if not isinstance(meta, dict):
        raise damaged(f"a JSON {type(meta).__name__}, not an object")
    fmt = meta.get("format")
    if fmt != FORMAT:  # the first repsims wrote no format field; none of their checkpoints is kept
        which, other = ((f"of format {fmt!r}", "or a newer one") if fmt is not None
                        else ("without a format field", "or re-train it with 'repsim train'"))
        raise RepsimError(f"{path} is a checkpoint {which}, which this repsim ({repsim.__version__}) "
                          f"does not know (it reads {FORMAT!r}): read it with the repsim that wrote it "
                          f"({meta.get('repsim_version', 'unknown')}), {other}")
    if not isinstance(meta.get("config"), dict):
        raise damaged("no config" if meta.get("config") is None else "config is not an object")
    iteration = meta.get("iteration", 0)
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise damaged(f"iteration {iteration!r} is not a non-negative integer")
    for key in ("metrics", "extra"):
        if not isinstance(meta.get(key, {}), dict):
            raise damaged(f"{key} is not an object")
    extra = meta.get("extra", {})
    number = (int, float)
    for key, ok, what in (  # what repsim reads back from it (training's resume, the labels)
            ("name", lambda v: isinstance(v, str), "a string"),
            ("imported_from", lambda v: isinstance(v, str), "a string"),
            ("seed_known", lambda v: isinstance(v, bool), "true or false"),
            ("split_guessed", lambda v: isinstance(v, bool), "true or false"),
            ("devices", lambda v: isinstance(v, list) and all(isinstance(d, str) for d in v), "a list of devices"),
            ("execution", lambda v: isinstance(v, str), "a string"),
            ("wall_time_s", lambda v: isinstance(v, number) and not isinstance(v, bool), "a number"),
            ("window", lambda v: isinstance(v, list) and len(v) == 3
             and all(isinstance(x, number) and not isinstance(x, bool) for x in v), "three numbers")):
        if key in extra and extra[key] is not None and not ok(extra[key]):
            raise damaged(f"extra.{key} is {extra[key]!r}, not {what}")
    for key in ("tensors_sha256", "tensor_index_sha256"):  # written since digests were recorded
        digest = meta.get(key)
        if key in meta and not (isinstance(digest, str) and len(digest) == 64
                                and set(digest) <= set("0123456789abcdef")):
            raise damaged(f"{key} is not a SHA-256 hex digest")
    return meta


def load_checkpoint(path: str | Path, *, with_optimizer: bool = False, weights: bool = True) -> Checkpoint:
    """Load a repsim checkpoint. Never unpickles anything. ``weights=False``: its config,
    iteration and metadata only, its tensors not read (``params`` empty)."""
    path = Path(path)
    if path.is_dir():
        path = latest_in(path)
    if not path.is_file():
        raise RepsimError(f"checkpoint {path} not found: pass a .safetensors file written by "
                          f"'repsim train' (or its run folder)")
    data = _read_bytes(path)
    meta = _metadata(data, path)
    try:
        tensors = load(data) if weights else {}
    except (SafetensorError, ValueError) as e:
        raise RepsimError(f"checkpoint {path} is corrupt ({e}): use an earlier checkpoint of the run") from None
    # checkpoints written before digests were recorded have none, and load as they are (the committed
    # 5w1s ones have neither digest, the 20w1s, 20w5s and in-progress ones no index digest)
    if weights and "tensors_sha256" in meta and tensor_digest(data) != meta["tensors_sha256"]:
        raise RepsimError(f"checkpoint {path} is corrupt (its tensors differ from the SHA-256 written with "
                          f"them: a byte changed on disk or in transit): use an earlier checkpoint of the "
                          f"run, or copy the file again")
    if weights and "tensor_index_sha256" in meta and index_digest(data) != meta["tensor_index_sha256"]:
        raise RepsimError(f"checkpoint {path} is corrupt (its tensor index, which bytes belong to which "
                          f"weight, differs from the SHA-256 written with it: the header was edited): use an "
                          f"earlier checkpoint of the run, or copy the file again")
    params = {n: t for n, t in tensors.items() if not n.startswith(OPTIMIZER_PREFIX)}
    optimizer = ({n[len(OPTIMIZER_PREFIX):]: t for n, t in tensors.items()
                  if n.startswith(OPTIMIZER_PREFIX)} if with_optimizer else {})
    config = from_saved(meta["config"], source=str(path))
    try:
        config = config.resolved()
    except RepsimError as e:  # a value out of range: say which file holds it
        raise RepsimError(f"{path} has a config that cannot be used ({e}): use another checkpoint of "
                          f"the run, or import its weights again with 'repsim import'") from None
    return Checkpoint(config, params, meta.get("iteration", 0), meta.get("metrics", {}),
                      optimizer, meta.get("extra", {}), path)


def latest_in(folder: Path) -> Path:
    """The run folder's final model, or else its latest intermediate checkpoint."""
    final = folder / "model.safetensors"
    if final.is_file():
        return final
    found = sorted((folder / "checkpoints").glob("iter-*.safetensors"))
    if not found:
        raise RepsimError(f"no checkpoint in {folder}: expected model.safetensors or "
                          f"checkpoints/iter-*.safetensors (written by 'repsim train')")
    return found[-1]
