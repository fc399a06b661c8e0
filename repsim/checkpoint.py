"""Checkpoints: weights in safetensors, everything else as JSON in the same file's header.

A checkpoint is one ``.safetensors`` file. Its tensors are the model's parameters under their
module names (``conv1.conv.weight`` ... ``head.bias``) and, for resuming training, the
optimiser's state under ``optimizer/...``. Its header metadata holds one JSON document:
the full config, algorithm, data set and split seed, iteration, metrics and repsim version.
safetensors cannot hold code, so loading a checkpoint never runs any.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save

import repsim
from repsim.config import Config, from_saved
from repsim.errors import RepsimError
from repsim.io import atomic_write_bytes
from repsim.model import conv4_for

OPTIMIZER_PREFIX = "optimizer/"


@dataclass
class Checkpoint:
    config: Config
    params: dict[str, torch.Tensor]
    iteration: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # provenance: device, wall time, source
    path: Path | None = None

    def build_model(self) -> torch.nn.Module:
        """The conv4 this checkpoint was trained as, with its weights loaded."""
        model = model_for(self.config, self.params)
        load_weights(model, self.params, source=str(self.path or "checkpoint"))
        bad = [n for n, p in self.params.items() if p.is_floating_point() and not torch.isfinite(p).all()]
        if bad:
            raise RepsimError(f"{self.path or 'the checkpoint'} has NaN or infinite weights (e.g. {bad[0]}): "
                              f"its run diverged; use an earlier checkpoint of the run")
        return model

    def describe(self) -> str:
        c = self.config
        return (f"{c.algorithm} on {c.dataset} {c.ways}-way {c.shots}-shot, iteration "
                f"{self.iteration}, seed {c.seed}{' (reduced schedule)' if c.reduced else ''}")


def model_for(config: Config, params: dict[str, torch.Tensor] | None = None,
              head_width: int | None = None) -> torch.nn.Module:
    """conv4 for the config; the head's width follows the weights when they are given
    (multiclass pretraining has one output per training class, not ``ways``)."""
    ways = head_width or config.ways
    if params is not None and "head.weight" in params:
        ways = params["head.weight"].shape[0]
    return conv4_for(config.dataset, ways, config.filters, padding=config.conv_padding,
                     bn_eps=config.batchnorm_eps, bn_scale=config.batchnorm_scale,
                     conv_init=config.conv_init, head_init=config.head_init)


def load_weights(model: torch.nn.Module, params: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``params`` into ``model``, naming every mismatching layer if they do not fit."""
    expected = {n: p.shape for n, p in model.state_dict().items()}
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    wrong_shape = sorted(n for n in set(expected) & set(params) if params[n].shape != expected[n])
    if missing or unexpected or wrong_shape:
        def layers(names):
            return ", ".join(dict.fromkeys(n.split(".")[0] for n in names))
        parts = []
        if wrong_shape:
            n = wrong_shape[0]
            parts.append(f"layers {layers(wrong_shape)} have other shapes (e.g. {n} "
                         f"{tuple(params[n].shape)} vs {tuple(expected[n])})")
        if missing:
            parts.append(f"layers {layers(missing)} are missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"layers {layers(unexpected)} are not in the model (e.g. {unexpected[0]})")
        raise RepsimError(f"{source} does not fit {type(model).__name__}: {'; '.join(parts)}; "
                          f"check the config's dataset, ways and filters")
    model.load_state_dict({n: params[n] for n in expected})


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename over ``path``."""
    path = Path(path)
    tensors = {n: p.detach().cpu().contiguous() for n, p in ckpt.params.items()}
    tensors.update({OPTIMIZER_PREFIX + n: t.detach().cpu().contiguous()
                    for n, t in ckpt.optimizer.items()})
    meta = {
        "format": "repsim-checkpoint-1",
        "repsim_version": repsim.__version__,
        "config": ckpt.config.to_dict(),
        "algorithm": ckpt.config.algorithm,
        "dataset": ckpt.config.dataset,
        "split_seed": ckpt.config.split_seed,
        "iteration": ckpt.iteration,
        "metrics": ckpt.metrics,
        "extra": ckpt.extra,
    }
    return atomic_write_bytes(path, save(tensors, metadata={"repsim": json.dumps(meta, sort_keys=True)}))


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
    if not isinstance(meta.get("config"), dict):
        raise damaged("no config" if meta.get("config") is None else "config is not an object")
    iteration = meta.get("iteration", 0)
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise damaged(f"iteration {iteration!r} is not a non-negative integer")
    for key in ("metrics", "extra"):
        if not isinstance(meta.get(key, {}), dict):
            raise damaged(f"{key} is not an object")
    return meta


def load_checkpoint(path: str | Path, *, with_optimizer: bool = False) -> Checkpoint:
    """Load a repsim checkpoint. Never unpickles anything."""
    path = Path(path)
    if path.is_dir():
        path = latest_in(path)
    if not path.is_file():
        raise RepsimError(f"checkpoint {path} not found: pass a .safetensors file written by "
                          f"'repsim train' (or its run folder)")
    data = _read_bytes(path)
    meta = _metadata(data, path)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as e:
        raise RepsimError(f"checkpoint {path} is corrupt ({e}): use an earlier checkpoint of the run") from None
    params = {n: t for n, t in tensors.items() if not n.startswith(OPTIMIZER_PREFIX)}
    optimizer = ({n[len(OPTIMIZER_PREFIX):]: t for n, t in tensors.items()
                  if n.startswith(OPTIMIZER_PREFIX)} if with_optimizer else {})
    config = from_saved(meta["config"], source=str(path)).resolved()
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


def import_state_dict(weights: str | Path, config: Config, out: str | Path,
                      rename: dict[str, str] | None = None) -> Path:
    """Turn a plain PyTorch state dict of a conv4 trained elsewhere into a repsim checkpoint.

    ``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)``, which refuses
    pickles that would build arbitrary objects (and so run code); ``.safetensors`` files are
    read directly. Keys may carry a ``module.`` or ``model.`` prefix; ``rename`` maps other
    names (e.g. ``{"classifier": "head"}``, applied as prefixes).
    """
    weights, out = Path(weights), Path(out)
    if not weights.is_file():
        raise RepsimError(f"weights file {weights} not found: pass the path of a .pt/.pth or .safetensors state dict")
    if out.exists():
        raise RepsimError(f"{out} already exists: choose another --out file (import never "
                          f"overwrites), or delete it first")
    state = _read_state_dict(weights)
    renamed = {}
    for name, tensor in state.items():
        for prefix in ("module.", "model."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        for old, new in (rename or {}).items():
            if name.startswith(old):
                name = new + name[len(old):]
        # running statistics are never used: BatchNorm here always normalises by the batch
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        renamed[name] = tensor.float()
    head = renamed.get("head.weight")
    if head is not None and config.algorithm not in ("multiclass", "multitask") and head.shape[0] != config.ways:
        raise RepsimError(f"{weights} has a {head.shape[0]}-way head but the config says ways: "
                          f"{config.ways}: set ways: {head.shape[0]} in the config (or --set ways={head.shape[0]})")
    model = model_for(config, renamed)
    load_weights(model, renamed, source=str(weights))
    ckpt = Checkpoint(config, dict(model.state_dict()), 0, {},
                      extra={"imported_from": str(weights)})
    return save_checkpoint(out, ckpt)


def _read_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    if weights.suffix == ".safetensors":
        try:
            return load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as e:
            raise RepsimError(f"{weights} is not a readable safetensors file ({e})") from None
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for code-carrying pickles, others for junk
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RepsimError(f"refusing to load {weights}: it is not a plain tensor state dict "
                          f"({first[:160]}); save it with torch.save(model.state_dict(), path) "
                          f"or as safetensors") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RepsimError(f"{weights} does not hold a state dict of tensors: save it with "
                          f"torch.save(model.state_dict(), path)")
    return state
