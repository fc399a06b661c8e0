"""Bring your own checkpoint: another library's conv4 weights as a repsim checkpoint.

A state dict names its tensors after the module tree of the code that trained it. A *layout*
knows one library's tree: which keys it has, how they map onto repsim's conv4
(``conv1.conv.weight`` ... ``conv4.bn.bias``, ``head.weight``), and the architecture those
names imply (stride-2 convolutions or max-pooling, BatchNorm with or without a scale), which
a state dict cannot show but which changes what the network computes. The layout is chosen
from the keys where only one fits.

    layout        the code it reads                              architecture
    learn2learn   OmniglotCNN (base.i / features.1.i, classifier) stride 2, mean  (1 channel)
                  CNN4 / MiniImagenetCNN (features.i, classifier) max-pool, flatten (3 channels)
    torchmeta     examples/maml ConvolutionalNeuralNetwork         max-pool, flatten
                  (features.i.0 conv, features.i.1 BatchNorm)
    pytorch-maml  MetaConvModel (features.layerN.conv / .norm)     max-pool, flatten
    higher        higher's examples/maml-omniglot.py: an           3 blocks, unpadded convs,
                  nn.Sequential (0.weight conv, 1.weight BN, ...)  max-pool, flatten
    finn-tf       Finn et al.'s TensorFlow weights saved as .npz   TF "SAME" padding, BatchNorm
                  (conv1..conv4 HWIO, b1..b4, w5, b5, N/beta)      without scale, eps 1e-3
    repsim        repsim's own names                              as the config says

BatchNorm running statistics are dropped: repsim normalises with each batch's statistics, as
these libraries' MAML code does in training mode. Anything else maps with ``renames``
(regular expressions, applied in order) and ``drop`` (a regular expression of keys to leave
out). Files are read without unpickling code: ``.pt``/``.pth`` with ``torch.load(
weights_only=True)``, ``.npz`` with ``allow_pickle=False``, ``.safetensors`` directly.
"""

from __future__ import annotations

import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from repsim.checkpoint import Checkpoint, check_head_width, load_weights, read_metadata, save_checkpoint
from repsim.config import config_path, load_config
from repsim.errors import RepsimError, one_line
from repsim.model import model_for

RUNNING_STATS = re.compile(r"\.(running_mean|running_var|num_batches_tracked)$")
PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


@dataclass(frozen=True)
class Layout:
    """One library's conv4 state dict: ``pattern`` matches every key it has, ``required``
    are keys it always has, ``to_repsim`` maps the dict to repsim's names, and
    ``architecture`` gives the config keys its names imply (from the converted weights)."""
    name: str
    source: str
    pattern: re.Pattern
    required: tuple[str, ...]
    to_repsim: Callable[[dict], dict]
    architecture: Callable[[dict], dict]
    conventions: str = "pytorch"
    example: str = ""  # a key only this layout has, for messages

    def fits(self, keys) -> bool:
        return all(k in keys for k in self.required) and all(self.pattern.fullmatch(k) for k in keys)


def _renamer(rules: list[tuple[str, Callable[[re.Match], str]]], duplicates: str | None = None):
    """A ``to_repsim`` from (regex, new-prefix-of-match) rules; keys matching ``duplicates``
    are second names of the same tensors (learn2learn's ``features.1.*``), checked equal to
    their first name and left out."""
    def to_repsim(state: dict) -> dict:
        out = {}
        for key, tensor in state.items():
            if duplicates and re.match(duplicates, key):
                continue
            for pattern, new in rules:
                m = re.match(pattern, key)
                if m:
                    out[new(m) + key[m.end():]] = tensor
                    break
            else:
                raise RepsimError(f"key {key!r} has no place in repsim's conv4")
        if duplicates:
            for key, tensor in state.items():
                twin = re.sub(duplicates, "base.", key, count=1)
                if re.match(duplicates, key) and twin in state and not torch.equal(state[twin], tensor):
                    raise RepsimError(f"{key} and {twin} should be one tensor (learn2learn registers "
                                      f"its body twice) but differ: save the model's state_dict() again")
        return out
    return to_repsim


def _block(kind: str, offset: int = 1):
    return lambda m: f"conv{int(m[1]) + offset}.{kind}."


def _by_channels(state: dict, omniglot: dict, miniimagenet: dict) -> dict:
    """A layout's architecture on Omniglot (1 input channel) or MiniImageNet (3)."""
    return omniglot if state["conv1.conv.weight"].shape[1] == 1 else miniimagenet


TORCH_BN = dict(conv_padding="symmetric", batchnorm_scale=True, batchnorm_eps=1e-5)
MAXPOOL = dict(pooling="maxpool", feature_pooling="flatten", **TORCH_BN)
# torchmeta's Omniglot helper reads the PNGs with ToTensor and no inversion: ink 0 on 1
DARK_INK = dict(image_ink="dark")

LAYOUTS = (
    Layout("learn2learn", "learn2learn OmniglotCNN, CNN4 or MiniImagenetCNN",
           re.compile(rf"(base|features\.1|features\.0|features)\.[0-3]\.(conv|normalize)\.{PARAM}"
                      rf"|(classifier|linear)\.(weight|bias)"),
           ("classifier.weight",),
           lambda s: _l2l(s),
           lambda s: _by_channels(s, dict(pooling="stride", feature_pooling="mean", **TORCH_BN), MAXPOOL),
           example="base.0.normalize.weight"),
    Layout("torchmeta", "torchmeta's examples/maml ConvolutionalNeuralNetwork",
           re.compile(rf"features\.[0-3]\.[01]\.{PARAM}|classifier\.(weight|bias)"),
           ("features.0.0.weight", "features.0.1.bias", "classifier.weight"),
           _renamer([(r"features\.(\d)\.0\.", _block("conv", 1)), (r"features\.(\d)\.1\.", _block("bn", 1)),
                     (r"classifier\.", lambda m: "head.")]),
           lambda s: _by_channels(s, {**MAXPOOL, **DARK_INK}, MAXPOOL), example="features.0.1.weight"),
    Layout("pytorch-maml", "pytorch-maml's MetaConvModel (ModelConvOmniglot, ModelConvMiniImagenet)",
           re.compile(rf"features\.layer[1-4]\.(conv|norm)\.{PARAM}|classifier\.(weight|bias)"),
           ("features.layer1.conv.weight", "features.layer1.norm.bias", "classifier.weight"),
           _renamer([(r"features\.layer(\d)\.conv\.", _block("conv", 0)),
                     (r"features\.layer(\d)\.norm\.", _block("bn", 0)), (r"classifier\.", lambda m: "head.")]),
           lambda s: _by_channels(s, {**MAXPOOL, **DARK_INK}, MAXPOOL), example="features.layer1.norm.weight"),
    Layout("higher", "an nn.Sequential of conv, BatchNorm, ReLU, max-pool blocks and a Linear "
           "(higher's examples/maml-omniglot.py)",
           re.compile(rf"\d+\.{PARAM}"), ("0.weight", "1.weight"),
           lambda s: _sequential(s),
           lambda s: {"blocks": sum(k.endswith(".conv.weight") for k in s), "conv_padding": "valid",
                      "pooling": "maxpool", "feature_pooling": "flatten", "batchnorm_scale": True,
                      "batchnorm_eps": 1e-5, **(DARK_INK if s["conv1.conv.weight"].shape[1] == 1 else {})},
           example="0.weight"),
    Layout("finn-tf", "Finn et al.'s TensorFlow MAML (cbfinn/maml), weights saved as arrays",
           re.compile(r"conv[1-4]|b[1-5]|w5|[0-3]/beta"),
           ("conv1", "b1", "w5", "b5"),
           lambda s: _finn(s),
           lambda s: _by_channels(s, dict(pooling="stride", feature_pooling="mean"),
                                  dict(pooling="maxpool", feature_pooling="flatten")),
           conventions="finn", example="0/beta"),
)
REPSIM = Layout("repsim", "repsim's own names", re.compile(r"(conv[1-4]\.(conv|bn)|head)\." + PARAM),
                ("conv1.conv.weight", "head.weight"), lambda s: dict(s), lambda s: {},
                example="conv1.bn.weight")
LAYOUT_NAMES = tuple(x.name for x in LAYOUTS) + ("repsim",)


def _l2l(state: dict) -> dict:
    """learn2learn: ``base.i`` (OmniglotCNN, older MiniImagenetCNN), ``features.i`` (CNN4),
    ``features.0.i`` (a MiniImagenetCNN of 2020); OmniglotCNN holds its body twice, as
    ``base.i`` and ``features.1.i``."""
    keys = set(state)
    twice = any(k.startswith("base.") for k in keys) and any(k.startswith("features.1.") for k in keys)
    prefix = r"base" if any(k.startswith("base.") for k in keys) else (
        r"features\.0" if any(re.match(r"features\.0\.\d\.", k) for k in keys) else r"features")
    return _renamer([(prefix + r"\.(\d)\.conv\.", _block("conv")), (prefix + r"\.(\d)\.normalize\.", _block("bn")),
                     (r"(classifier|linear)\.", lambda m: "head.")],
                    duplicates=r"features\.1\." if twice else None)(state)


def _sequential(state: dict) -> dict:
    """An nn.Sequential's numbered children, told apart by their weights' shapes: a 4-d
    weight opens a conv block, a 1-d one is its BatchNorm, a 2-d one the classifier."""
    out, block = {}, 0
    for index in sorted({int(k.split(".")[0]) for k in state}):
        weight = state.get(f"{index}.weight")
        if weight is None or weight.dim() not in (1, 2, 4):
            raise RepsimError(f"layer {index} of the nn.Sequential is not a convolution, BatchNorm or "
                              f"Linear: map its names with --rename, or analyse it from Python")
        if weight.dim() == 4:
            block += 1
        kind = {4: f"conv{block}.conv", 1: f"conv{block}.bn", 2: "head"}[weight.dim()]
        for key in (k for k in state if k.split(".")[0] == str(index)):
            out[kind + key[len(str(index)):]] = state[key]
    return out


def _finn(state: dict) -> dict:
    """Finn et al.'s arrays in PyTorch's layout: kernels HWIO -> OIHW; ``w5`` (features,
    ways) transposed, and on MiniImageNet its rows reordered from TF's NHWC flattening
    (h, w, c) to PyTorch's (c, h, w); BatchNorm offsets ``i/beta``, no scale."""
    dims = {**{f"conv{i}": 4 for i in range(1, 5)}, **{f"b{i}": 1 for i in range(1, 6)}, "w5": 2}
    for name, d in dims.items():
        if name in state and state[name].dim() != d:
            raise RepsimError(f"Finn's array {name} has shape {tuple(state[name].shape)}, not {d} axes: export "
                              f"the variables as his code holds them (kernels HWIO, w5 (features, ways))")
    out = {}
    for i in range(1, 5):
        out[f"conv{i}.conv.weight"] = state[f"conv{i}"].permute(3, 2, 0, 1)
        out[f"conv{i}.conv.bias"] = state[f"b{i}"]
        if f"{i - 1}/beta" not in state:
            raise RepsimError(f"no BatchNorm offset {i - 1}/beta among the arrays: export the "
                              f"variables model/0/beta ... model/3/beta with the weights")
        out[f"conv{i}.bn.bias"] = state[f"{i - 1}/beta"]
    w5, channels = state["w5"], state["conv4"].shape[3]
    if w5.shape[0] != channels:  # flattened NHWC feature maps
        side = round((w5.shape[0] / channels) ** 0.5)
        if side * side * channels != w5.shape[0]:
            raise RepsimError(f"Finn's w5 has {w5.shape[0]} rows, neither conv4's {channels} channels nor "
                              f"a square map of them: export w5 as (features, ways), untransposed")
        w5 = w5.reshape(side, side, channels, -1).permute(3, 2, 0, 1).reshape(-1, w5.shape[0])
    else:
        w5 = w5.T
    out["head.weight"], out["head.bias"] = w5, state["b5"]
    return out


def detect_layout(keys) -> Layout:
    """The one layout whose names ``keys`` has; an error naming the candidates otherwise."""
    keys = set(keys)
    if REPSIM.fits(keys):
        return REPSIM
    fitting = [x for x in LAYOUTS if x.fits(keys)]
    if len(fitting) == 1:
        return fitting[0]
    sample = ", ".join(sorted(keys)[:4])
    raise RepsimError(f"no known layout fits the weights' names ({sample}, ...): name one with "
                      f"--layout ({', '.join(LAYOUT_NAMES)}), or map the names onto repsim's "
                      f"(conv1.conv.weight ... head.bias) with --rename REGEX=REPLACEMENT and --drop REGEX")


@dataclass
class Imported:
    """What ``import_weights`` wrote and everything it decided on the user's behalf."""
    path: Path
    layout: str
    config: object
    name: str
    notes: list[str] = field(default_factory=list)
    logits_error: float | None = None
    warnings: list[str] = field(default_factory=list)  # guesses that can change the numbers


def import_weights(weights: str | Path, out: str | Path, *, config: str | Path | None = None,
                   overrides=(), layout: str = "auto", renames=(), drop: str | None = None,
                   name: str | None = None, check_logits: tuple[str, str] | None = None) -> Imported:
    """Turn another library's conv4 weights into a repsim checkpoint at ``out``.

    ``renames`` are (regex, replacement) pairs applied to every key first (``re.sub``, first
    match per key), then ``drop`` leaves out the keys it matches; then the layout (named, or
    detected) maps the names. The config is the layout's architecture and conventions, the
    data set, width and ways read from the weights, then ``config`` and ``overrides`` on top.
    ``check_logits`` = (inputs file, logits file) saved from the original code: the import
    is refused unless the imported model's logits on those inputs match to 1e-4.
    """
    weights, out = Path(weights), Path(out)
    _check_files(weights, out)
    state = {_strip(k): v for k, v in read_weights(weights).items()}
    for pattern, replacement in renames:
        state = _renamed(state, pattern, replacement)
    notes = []
    if drop:
        state, dropped = _without(state, lambda k: _search(drop, k))
        notes.append(f"dropped {len(dropped)} tensors matching --drop {drop!r}")
    state, stats = _without(state, RUNNING_STATS.search)
    state = {k: v.float() for k, v in state.items()}
    if stats:
        notes.append(f"dropped {len(stats)} BatchNorm running statistics: repsim normalises with "
                     f"each batch's statistics, as MAML does in training mode")
    chosen = _chosen_layout(state, layout)
    params = chosen.to_repsim(state)
    _check_params(params, weights)
    cfg = load_config(config, list(overrides), defaults=_read_config(params, chosen))
    width = params["head.weight"].shape[0]
    check_head_width(cfg.algorithm, width, cfg.ways, weights, f"the config says ways: {cfg.ways}",
                     f"set ways: {width} in the config (or --set ways={width})")
    model = model_for(cfg, params)
    load_weights(model, params, source=str(weights))
    given = set(_config_keys(config)) | {o.partition("=")[0].strip() for o in overrides}
    split_guessed = cfg.dataset == "omniglot" and "split_scheme" not in given
    warnings = [_split_warning(cfg.split_scheme)] if split_guessed else []
    notes += _defaults_notes(cfg, given)
    error = _checked_logits(model, cfg, *check_logits) if check_logits else None
    name = _checked_name(name or weights.stem)
    ckpt = Checkpoint(cfg, dict(model.state_dict()), 0, {},
                      extra={"imported_from": str(weights), "name": name, "layout": chosen.name,
                             "seed_known": "seed" in given, "split_guessed": split_guessed})
    return Imported(save_checkpoint(out, ckpt), chosen.name, cfg, name, notes, error, warnings)


def _check_files(weights: Path, out: Path) -> None:
    """Refusals before the weights are read: no weights file, an ``out`` that exists (import
    never overwrites), or weights that are a repsim checkpoint already."""
    if not weights.is_file():
        raise RepsimError(f"weights file {weights} not found: pass the path of a .pt/.pth, .npz or .safetensors file")
    if out.exists():
        raise RepsimError(f"{out} already exists: choose another --out file (import never "
                          f"overwrites), or delete it first")
    if weights.suffix == ".safetensors" and _is_repsim_checkpoint(weights):
        raise RepsimError(f"{weights} is already a repsim checkpoint (written by 'repsim train' or "
                          f"'repsim import'): analyse it as it is, no import needed")


def _renamed(state: dict, pattern: str, replacement: str) -> dict:
    """``state`` with one ``--rename`` rule applied to every key."""
    renamed: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        new = _sub(pattern, replacement, k)
        if new in renamed:  # a dict would keep the last one and drop the other unseen
            first = next(old for old in state if _sub(pattern, replacement, old) == new)
            raise RepsimError(f"--rename {pattern}={replacement} maps {first} and {k} both onto {new}: "
                              f"write the rule so that each tensor keeps a name of its own")
        renamed[new] = v
    return renamed


def _without(state: dict, leave_out: Callable[[str], object]) -> tuple[dict, list[str]]:
    """``state`` less the keys ``leave_out`` matches, and those keys."""
    gone = sorted(k for k in state if leave_out(k))
    return {k: v for k, v in state.items() if k not in gone}, gone


def _chosen_layout(state: dict, layout: str) -> Layout:
    """The layout named (``auto``: detected from the keys), refused if the keys are not its."""
    chosen = detect_layout(state) if layout == "auto" else _named_layout(layout)
    if not chosen.fits(state) and chosen is not REPSIM:
        raise RepsimError(f"the weights do not have {chosen.name}'s names ({chosen.source}; e.g. "
                          f"{chosen.example}): leave out --layout to detect it, or rename them")
    return chosen


def _check_params(params: dict, weights: Path) -> None:
    """The first convolution and the classifier, from which the config is read, are there:
    a kernel of 4 axes and a linear weight of 2."""
    if "conv1.conv.weight" not in params or "head.weight" not in params:
        raise RepsimError(f"{weights} has no conv1.conv.weight or head.weight after renaming: map the "
                          f"first convolution and the classifier with --rename REGEX=REPLACEMENT")
    for key, axes, what in (("conv1.conv.weight", 4, "a convolution kernel"), ("head.weight", 2, "a linear weight")):
        if params[key].dim() != axes:
            raise RepsimError(f"{weights}: the tensor named {key} has shape {tuple(params[key].shape)}, not "
                              f"{what} ({axes} axes): map the right tensor onto it with --rename REGEX=REPLACEMENT")


def _read_config(params: dict, chosen: Layout) -> dict:
    """The config the weights themselves tell: data set (input channels), width, ways, and the
    layout's conventions and architecture."""
    conv1 = params["conv1.conv.weight"]
    return {"dataset": "omniglot" if conv1.shape[1] == 1 else "miniimagenet",
            "filters": conv1.shape[0], "ways": params["head.weight"].shape[0],
            "conventions": chosen.conventions, **chosen.architecture(params)}


def _split_warning(split_scheme: str) -> str:
    return (f"the test split is a guess (split_scheme={split_scheme}, repsim's own shuffle of the "
            f"characters): a model trained on another split is then tested partly on characters it "
            f"trained on; give the split it was trained with (torchmeta, prototypical networks: --set "
            f"split_scheme=vinyals; any other: --set split_scheme=file:TEST.txt, its test characters)")


def _defaults_notes(cfg, given: set[str]) -> list[str]:
    """What the config took from the paper's defaults because the user did not say."""
    filled = [k for k in ("algorithm", "inner_lr", "inner_steps", "inner_steps_test", "split_scheme", "split_seed")
              if k not in given]
    notes = []
    if filled:
        notes.append("not in the weights, so the paper's defaults for this setting: "
                     + ", ".join(f"{k}={getattr(cfg, k)}" for k in filled)
                     + " (give the values it was trained with by --config or --set)")
    if "seed" not in given:
        notes.append("no seed given, so it counts as a seed of its own in cross-model comparisons "
                     "(give --set seed=N to pair it with models trained from the same seed)")
    return notes


def _checked_logits(model: torch.nn.Module, cfg, inputs: str, logits: str) -> float:
    """The imported model's largest logit difference from the original code's, refused above 1e-4."""
    # the inputs are as the original code fed them; the model reads repsim's images
    dark = cfg.dataset == "omniglot" and cfg.image_ink == "dark"
    error = _logits_error(model, inputs, logits, invert=dark)
    if not math.isfinite(error):
        raise RepsimError(f"the logits are NaN or infinite (the saved ones in {logits}, or the "
                          f"imported model's on {inputs}): save finite logits of real images; "
                          f"nothing written")
    if not error <= 1e-4:
        raise RepsimError(f"the imported model's logits differ from {logits} by up to "
                          f"{error:.3g}: the layout or architecture is not the original's (try "
                          f"--set pooling=..., conv_padding=..., batchnorm_eps=...); nothing written")
    return error


def _checked_name(name: str) -> str:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes the terminal passed that are not UTF-8
        raise RepsimError(f"the name {name.encode('utf-8', 'backslashreplace').decode()} is not UTF-8 text: "
                          f"give --name in plain characters") from None
    return name


def _named_layout(name: str) -> Layout:
    for x in LAYOUTS + (REPSIM,):
        if x.name == name:
            return x
    raise RepsimError(f"unknown layout {name!r}: choose auto or one of {', '.join(LAYOUT_NAMES)}")


def _strip(key: str) -> str:
    """Wrappers' prefixes (DataParallel's ``module.``, ``model.``; TF's ``model/`` and ``:0``)."""
    key = re.sub(r":0$", "", key)
    return re.sub(r"^(module\.|model\.|model/)+", "", key)


def _sub(pattern, replacement, key):
    try:
        return re.sub(pattern, replacement, key, count=1)
    except re.error as e:
        raise RepsimError(f"--rename {pattern}={replacement} is not a valid regular expression ({e})") from None


def _search(pattern, key):
    try:
        return re.search(pattern, key)
    except re.error as e:
        raise RepsimError(f"--drop {pattern} is not a valid regular expression ({e})") from None


def _config_keys(path) -> list[str]:
    if path is None:
        return []
    import yaml
    try:
        loaded = yaml.safe_load(config_path(path).read_text()) or {}  # a path or a recipe's name
    except (OSError, yaml.YAMLError, RepsimError):
        return []  # load_config has already said what is wrong with it
    return list(loaded) if isinstance(loaded, dict) else []


def _logits_error(model: torch.nn.Module, inputs: str, logits: str, invert: bool = False) -> float:
    """The largest absolute difference between the model's logits and saved ones (``invert``:
    the inputs have dark ink, repsim's images bright)."""
    x, expected = _tensor_file(inputs, "inputs"), _tensor_file(logits, "logits")
    channels = model.conv1.conv.in_channels if hasattr(model, "conv1") else "C"
    if x.dim() >= 1 and len(x) == 0:
        raise RepsimError(f"{inputs} holds no images (an empty batch): save a batch of images as the "
                          f"original code fed them")
    try:
        if x.dim() != 4:
            raise ValueError(f"{x.dim()} axes")
        with torch.no_grad():
            got = model(1 - x.float() if invert else x.float())
    except (RuntimeError, ValueError, IndexError) as e:
        raise RepsimError(f"the imported model cannot run on {inputs} (shape {tuple(x.shape)}: {one_line(e)[:80]}): "
                          f"save a batch of images (N, {channels}, H, W) as the original code fed them") from None
    if got.shape != expected.shape:
        raise RepsimError(f"{logits} holds logits of shape {tuple(expected.shape)}, the imported model "
                          f"gives {tuple(got.shape)} on {inputs}: save the logits of those very inputs")
    return float((got - expected.float()).abs().max())


def _tensor_file(path: str, what: str) -> torch.Tensor:
    try:
        t = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # missing, junk, or a pickle that would run code
        raise RepsimError(f"cannot read {what} from {path} "
                          f"({one_line(e)[:120]}): "
                          f"save one tensor with torch.save(tensor, path)") from None
    if not isinstance(t, torch.Tensor):
        raise RepsimError(f"{path} does not hold one tensor of {what}: save it with torch.save(tensor, path)")
    return t


def _is_repsim_checkpoint(path: Path) -> bool:
    try:
        read_metadata(path)
    except RepsimError:  # plain safetensors of another library, or not readable (said later)
        return False
    return True


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A file of named tensors, read without running any code it might carry."""
    if path.suffix == ".safetensors":
        try:
            return _checked_state(load_file(str(path)), path)
        except (SafetensorError, OSError, ValueError) as e:
            raise RepsimError(f"{path} is not a readable safetensors file ({e})") from None
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as arrays:
                texts = [k for k in arrays.files if arrays[k].dtype.kind not in "biuf"]
                if texts:
                    raise RepsimError(f"{path}: {texts[0]} holds {arrays[texts[0]].dtype} values, not "
                                      f"numbers: save only the weights' arrays")
                return _checked_state({k: torch.from_numpy(np.array(arrays[k])) for k in arrays.files}, path)
        except (OSError, ValueError) as e:
            raise RepsimError(f"{path} is not a readable .npz of arrays ({str(e)[:160]}): save the weights "
                              f"with numpy.savez(path, **{{name: array}})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text invites loading it anyway: not quoted
        raise RepsimError(f"refusing to load {path}: it holds pickled Python objects (a whole model, "
                          f"say), which could run code; save torch.save(model.state_dict(), path) or "
                          f"safetensors instead") from None
    except Exception as e:  # junk, a truncated file
        raise RepsimError(f"refusing to load {path}: it is not a plain tensor state dict "
                          f"({one_line(e)[:160]}); save it with torch.save(model.state_dict(), path) "
                          f"or as safetensors") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RepsimError(f"{path} does not hold a state dict of tensors: save it with "
                          f"torch.save(model.state_dict(), path)")
    return _checked_state(state, path)


def _checked_state(state: dict, path: Path) -> dict[str, torch.Tensor]:
    """Weights a network can hold: named by strings, dense, real numbers, all finite. Each
    other kind was either a traceback or, worse, a silent change (a complex tensor's imaginary
    part dropped, a NaN weight analysed)."""
    for key, t in state.items():
        if not isinstance(key, str):
            raise RepsimError(f"{path} names a tensor by {key!r} ({type(key).__name__}), not by a string: "
                              f"save the model's state_dict(), whose keys are its parameters' names")
        if t.layout != torch.strided:
            raise RepsimError(f"{path}: {key} is a {str(t.layout).replace('torch.', '')} tensor: save dense "
                              f"weights (tensor.to_dense())")
        if t.is_complex() or not (t.is_floating_point() or t.dtype in INTEGER_DTYPES):
            raise RepsimError(f"{path}: {key} holds {str(t.dtype).replace('torch.', '')} values, not real "
                              f"numbers: save the network's real-valued weights")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise RepsimError(f"{path}: {key} holds NaN or infinite values: the model diverged in "
                              f"training; import an earlier checkpoint of it")
    return state


INTEGER_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)  # counters (num_batches_tracked)
