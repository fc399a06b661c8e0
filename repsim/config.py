"""Training configurations: one flat dataclass, defaults per data set and way/shot from the paper.

A config is written as a YAML file of ``key: value`` lines and can be changed from the command
line with ``--set key=value``. The paper's recipes (analyses/configs/ in a checkout, shipped in
the package as repsim/configs/) are also reachable by name from anywhere, e.g.
``--config omniglot_20w1s_maml``; ``recipes()`` lists the names. Keys left out take the
paper's defaults for the data set, ways and shots (the paper's protocol, repsim.paper).

Conventions
-----------
Where two implementations of "the same" MAML differ in a detail that changes what is learned,
the detail is a config key (``CONVENTION_KEYS``), and ``conventions`` names a whole set of
them; a key given explicitly overrides its set. Two sets are defined:

``finn`` (the default, and every paper recipe's)
    the TensorFlow MAML of Finn et al. (github cbfinn/maml), which Raghu et al. ran: support
    loss summed and divided by shots (each inner step is ``ways`` times the mean-loss step),
    Omniglot head drawn from N(0, 1) (multiclass and multitask heads, not in his code:
    PyTorch's), Xavier-uniform convolutions, BatchNorm without scale, epsilon 1e-3 and outside
    the inner loop, TF's "SAME" padding, nearest-neighbour Omniglot images, a pool of 200,000
    training tasks, 10 test-time steps, K test queries per class, and on MiniImageNet the
    meta-gradient clipped to [-10, 10].
``pytorch``
    what repsim did before these keys existed, as learn2learn and pytorch-maml do: mean losses,
    PyTorch's default initialisations, BatchNorm with scale and epsilon 1e-5 in the inner
    loop, symmetric padding, antialiased images, fresh tasks, no clipping, 3 test steps on
    5-way Omniglot. A checkpoint written before the keys existed loads with this set.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, get_args, get_type_hints

import yaml

from repsim.errors import RepsimError, one_line
from repsim.names import ALGORITHMS, DATASETS, LOSSES, META_ALGORITHMS

CONVENTION_SETS = ("finn", "pytorch")
CONVENTION_KEYS = ("inner_loss", "outer_loss", "head_init", "conv_init", "batchnorm_scale",
                   "batchnorm_eps", "adapt_batchnorm", "conv_padding", "image_resize",
                   "task_pool", "meta_grad_clip", "inner_steps_test", "test_queries")
# the keys that change only how a trained model is tested, not how it is trained
TEST_TIME_KEYS = ("inner_steps_test", "test_queries")
CHOICES = {"inner_loss": LOSSES, "outer_loss": LOSSES,
           "head_init": ("pytorch", "normal", "xavier_uniform"),
           "conv_init": ("pytorch", "xavier_uniform"),
           "conv_padding": ("symmetric", "same", "valid"),
           "image_resize": ("lanczos", "nearest"),
           "conventions": CONVENTION_SETS, "dataset": DATASETS, "algorithm": ALGORITHMS,
           "execution": ("auto", "loop", "vmap", "compiled"),
           "pooling": ("stride", "maxpool"), "feature_pooling": ("mean", "flatten"),
           "image_ink": ("bright", "dark")}


@dataclass
class Config:
    # what to learn
    algorithm: str = "maml"            # maml | fomaml | anil | boil | multiclass | multitask
    dataset: str = "synthetic"         # synthetic | omniglot | miniimagenet
    data_root: str | None = None       # folder of the real data (or env REPSIM_DATA_ROOT)
    split_scheme: str = "maml"         # omniglot: maml (1100/100/423 shuffled) | official | vinyals
                                       # | file:PATH (the test characters listed there)
    split_seed: int = 0                # seed of the character shuffle (omniglot, synthetic)
    rotate: bool | None = None         # class augmentation by 90-degree rotations (None: per data set)
    ways: int = 5
    shots: int = 1
    queries: int | None = None         # query points per class at training (None: per data set)
    # model
    filters: int | None = None         # conv4 width (None: 64 omniglot-like, 32 miniimagenet)
    blocks: int = 4                    # conv blocks (conv1..convN); 4 in the MAML setup
    pooling: str | None = None         # stride: stride-2 convs (omniglot) | maxpool: stride 1, 2x2 max-pool
    feature_pooling: str | None = None  # mean over positions (omniglot) | flatten (miniimagenet)
    image_ink: str = "bright"          # omniglot input: bright (ink 1 on 0: Finn's, learn2learn's)
                                       # | dark (ink 0 on 1: torchmeta's ToTensor of the PNGs)
    # inner loop
    inner_lr: float | None = None      # step size on the support loss that inner_loss defines
    inner_steps: int | None = None
    inner_steps_test: int | None = None
    # outer loop
    meta_batch_size: int | None = None
    outer_lr: float = 0.001
    iterations: int = 60000
    batch_size: int = 64               # multiclass pretraining: images per step
    # conventions (None: from the named set; module docstring)
    conventions: str = "finn"          # finn (Finn et al.'s TF code) | pytorch
    inner_loss: str | None = None      # mean | sum_div_shots: sum over the support set / shots
    outer_loss: str | None = None      # mean | sum_div_shots, of each task's query loss
    head_init: str | None = None       # pytorch | normal (N(0, 1), bias 0) | xavier_uniform
    conv_init: str | None = None       # pytorch | xavier_uniform (bias 0)
    batchnorm_scale: bool | None = None   # BatchNorm has a learned scale (gamma)
    batchnorm_eps: float | None = None
    adapt_batchnorm: bool | None = None   # BatchNorm's parameters are fast weights (inner loop)
    conv_padding: str | None = None    # symmetric | same (TF: the extra row/column at the end)
    image_resize: str | None = None    # Omniglot 105 -> 28 px: lanczos | nearest (binary pixels)
    task_pool: int | None = None       # 0: fresh training tasks | N: cycle N fixed tasks
    meta_grad_clip: float | None = None   # 0: none | c: meta-gradient clipped to [-c, c]
    test_queries: int | None = None    # query points per class at test (evaluate, MANIFEST)
    # bookkeeping
    seed: int = 0
    checkpoint_every: int = 1000
    eval_every: int = 1000
    eval_tasks: int = 100              # validation tasks at each evaluation
    execution: str = "auto"            # auto | loop | vmap | compiled (the loop, each task's meta-
                                       # gradient compiled: opt-in, minutes to compile)
    reduced: bool = False              # marks a schedule shortened from the paper's

    def resolved(self) -> "Config":
        """A copy with every None replaced by the paper's default for this setting, and the
        conventions by their named set's values."""
        c = dataclasses.replace(self)
        c.validate()
        omniglot_like = c.dataset != "miniimagenet"
        if c.rotate is None:
            c.rotate = omniglot_like
        if c.filters is None:
            c.filters = 64 if omniglot_like else 32
        if c.pooling is None:
            c.pooling = "stride" if omniglot_like else "maxpool"
        if c.feature_pooling is None:
            c.feature_pooling = "mean" if c.pooling == "stride" else "flatten"
        if omniglot_like:
            five_way = c.ways <= 5
            defaults = dict(inner_lr=0.4 if five_way else 0.1,
                            inner_steps=1 if five_way else 5,
                            meta_batch_size=32 if five_way else 16,
                            queries=c.shots)
        else:
            defaults = dict(inner_lr=0.01, inner_steps=5, meta_batch_size=4, queries=15)
        for key, value in defaults.items():
            if getattr(c, key) is None:
                setattr(c, key, value)
        for key, value in convention_set(c.conventions, c).items():
            if getattr(c, key) is None:
                setattr(c, key, value)
        c.validate()
        return c

    def validate(self) -> None:
        for key, choices in CHOICES.items():
            value = getattr(self, key)
            if value is not None and value not in choices:
                raise RepsimError(f"unknown {key} {value!r}: choose one of {', '.join(choices)}")
        for key, least in (("ways", 1), ("shots", 1), ("queries", 1), ("filters", 1), ("blocks", 1),
                           ("meta_batch_size", 1), ("batch_size", 1), ("iterations", 1),
                           ("checkpoint_every", 1), ("eval_every", 1), ("eval_tasks", 2),
                           ("inner_steps", 0), ("inner_steps_test", 0), ("task_pool", 0),
                           ("test_queries", 1), ("seed", 0), ("split_seed", 0)):
            value = getattr(self, key)
            if value is not None and value < least:
                raise RepsimError(f"{key} must be at least {least}, got {value}")
        if self.dataset == "synthetic" and self.data_root:
            raise RepsimError(f"the synthetic data set is built in and reads no data folder: leave out "
                              f"--data-root / data_root ({self.data_root}), or set dataset: omniglot")
        for key in ("seed", "split_seed"):  # torch and numpy seed with signed 64-bit integers
            if getattr(self, key) is not None and getattr(self, key) >= 2 ** 63:
                raise RepsimError(f"{key} must be below 2**63, got {getattr(self, key)}: choose a smaller seed")
        for key in ("inner_lr", "outer_lr", "batchnorm_eps"):
            value = getattr(self, key)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise RepsimError(f"{key} must be a positive finite number, got {value}")
        if self.meta_grad_clip is not None and not (self.meta_grad_clip >= 0 and math.isfinite(self.meta_grad_clip)):
            raise RepsimError(f"meta_grad_clip must be 0 (no clipping) or a positive number, got {self.meta_grad_clip}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def conventions_used(self) -> dict[str, Any]:
        """The resolved value of every convention key, and the set they started from."""
        return {"conventions": self.conventions, **{k: getattr(self, k) for k in CONVENTION_KEYS}}

    def describe_architecture(self) -> str:
        """One line: the network's shape, as ``model_for`` builds it."""
        pool = ("stride-2 convolutions" if self.pooling == "stride"
                else "stride-1 convolutions and 2x2 max-pooling")
        scale = "with" if self.batchnorm_scale else "without"
        return (f"{self.blocks} conv blocks, {self.filters} filters, {pool}, {self.conv_padding} padding, BatchNorm "
                f"{scale} scale (eps {self.batchnorm_eps:g}, batch statistics), features "
                f"{'averaged over positions' if self.feature_pooling == 'mean' else 'flattened'}"
                + (f", Omniglot ink {self.image_ink}" if self.dataset == "omniglot" else ""))

    def describe_conventions(self) -> str:
        """One line: the named set, and every key where this config departs from it."""
        named = convention_set(self.conventions, self)
        changed = [f"{k}={getattr(self, k)}" for k in CONVENTION_KEYS
                   if getattr(self, k) is not None and getattr(self, k) != named[k]]
        return f"{self.conventions} conventions" + (f" except {', '.join(changed)}" if changed else "")


def convention_set(name: str, c: Config) -> dict[str, Any]:
    """The values of the named convention set for the setting of ``c`` (its data set, shots
    and training queries). See the module docstring for what each set is."""
    omniglot_like = c.dataset != "miniimagenet"
    if name == "finn":
        # Finn's code draws only the few-shot head; a pretraining head with one output per
        # training class (multiclass, multitask: not in his code) takes PyTorch's default, as
        # N(0, 1) on a 4,800-way head leaves multiclass training stuck at chance
        few_shot_head = "normal" if omniglot_like else "xavier_uniform"
        return dict(inner_loss="sum_div_shots", outer_loss="sum_div_shots",
                    head_init=few_shot_head if c.algorithm in META_ALGORITHMS else "pytorch",
                    conv_init="xavier_uniform", batchnorm_scale=False, batchnorm_eps=1e-3,
                    adapt_batchnorm=False, conv_padding="same", image_resize="nearest",
                    task_pool=200_000, meta_grad_clip=0.0 if omniglot_like else 10.0,
                    inner_steps_test=10, test_queries=c.shots)
    if name == "pytorch":
        return dict(inner_loss="mean", outer_loss="mean", head_init="pytorch",
                    conv_init="pytorch", batchnorm_scale=True, batchnorm_eps=1e-5,
                    adapt_batchnorm=True, conv_padding="symmetric", image_resize="lanczos",
                    task_pool=0, meta_grad_clip=0.0,
                    inner_steps_test=3 if omniglot_like and c.ways <= 5 else 10,
                    test_queries=c.queries)
    raise RepsimError(f"unknown conventions {name!r}: choose one of {', '.join(CONVENTION_SETS)}")


KEYS = tuple(f.name for f in fields(Config))


def check_known(keys, source: str) -> None:
    """Refuse keys that are not config keys, listing the valid ones."""
    unknown = sorted(set(keys) - set(KEYS))
    if unknown:
        raise RepsimError(f"unknown key(s) {', '.join(unknown)} in {source}; valid keys: {', '.join(KEYS)}")


def from_dict(values: dict[str, Any], source: str = "config") -> Config:
    check_known(values, source)
    try:
        return Config(**{k: _coerce(k, v) for k, v in values.items()})
    except RepsimError as e:
        if source == "--set":
            raise
        # a value damaged in a file: say which file, so that it can be fixed or replaced
        raise RepsimError(f"{source}: {e}") from None


def _kind(key: str) -> type:
    """The type a key holds (int, float, bool or str), read from Config's annotations."""
    hint = get_type_hints(Config)[key]
    return next(t for t in (get_args(hint) or (hint,)) if t is not type(None))


def _coerce(key: str, value: Any) -> Any:
    """Check a value against the field's type, reading strings (from --set) strictly."""
    kind = _kind(key)
    if value is None:
        return None
    if isinstance(value, str) and kind is not str:
        value = _from_text(key, kind, value)
    ok = ((kind is int and isinstance(value, int) and not isinstance(value, bool))
          or (kind is float and isinstance(value, (int, float)) and not isinstance(value, bool))
          or (kind is bool and isinstance(value, bool))
          or (kind is str and isinstance(value, str)))
    if not ok:
        raise RepsimError(f"bad value {value!r} for {key}: expected {_EXPECTED[kind]}")
    return float(value) if kind is float else value


_EXPECTED = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _from_text(key: str, kind: type, text: str) -> Any:
    """A value given as text, read as ``kind`` the way a person writes it: decimal integers,
    plain numbers, true or false. Not YAML's reading, in which 010 is octal 8, 1:0 is 60
    (base 60) and "null" means the default, each silently."""
    t = text.strip()
    if kind is int and re.fullmatch(r"[+-]?\d+", t):
        return int(t, 10)
    if kind is float and _NUMBER.fullmatch(t):
        return float(t)
    if kind is bool and t.lower() in ("true", "false"):
        return t.lower() == "true"
    raise RepsimError(f"bad value {text!r} for {key}: expected {_EXPECTED[kind]}"
                      + (" (decimal digits)" if kind is int else ""))


def recipe_dir() -> Path | None:
    """The folder of the shipped recipes: repsim/configs in an installed package (setup.cfg maps
    analyses/configs there), else analyses/configs beside the package (a checkout, or an editable
    install, which runs from the checkout)."""
    here = Path(__file__).resolve().parent
    for folder in (here / "configs", here.parent / "analyses" / "configs"):
        if folder.is_dir():
            return folder
    return None


def recipes() -> list[str]:
    """The names of the shipped recipes (``omniglot_20w1s_maml``, ...), sorted; each one is a
    valid ``--config`` from any folder."""
    folder = recipe_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder else []


def config_path(path: str | Path) -> Path:
    """The YAML file ``--config`` names: ``path`` itself when that file exists, else the shipped
    recipe named by a bare ``path`` (``omniglot_20w1s_maml``, with or without ``.yaml``)."""
    given = Path(path)
    if given.is_file():
        return given
    text = str(path)
    stem = text[:-len(given.suffix)] if given.suffix in (".yaml", ".yml") else text
    bare = given.name == text and "/" not in text and "\\" not in text
    folder = recipe_dir()
    if bare and folder is not None and (folder / f"{stem}.yaml").is_file():
        return folder / f"{stem}.yaml"
    names = recipes()
    listing = f"one of the recipe names {', '.join(names)}" if names else "a recipe name (none shipped here)"
    if given.stem in names:  # e.g. analyses/configs/X.yaml given outside the checkout
        raise RepsimError(f"config file {path} not found: pass the path of a YAML file, or the shipped "
                          f"recipe by its name alone (--config {given.stem})")
    if bare:
        raise RepsimError(f"config {text!r} is neither a file nor a shipped recipe: pass the path of a "
                          f"YAML file, or {listing}")
    raise RepsimError(f"config file {path} not found: pass the path of a YAML file, or {listing}")


def load_config(path: str | Path | None = None, overrides: list[str] = (),
                defaults: dict[str, Any] | None = None) -> Config:
    """Read a YAML config file (optional: a path, or a shipped recipe's name, ``config_path``)
    and apply ``key=value`` overrides, then resolve defaults. ``defaults`` holds values for keys
    that neither the file nor the overrides give."""
    values: dict[str, Any] = dict(defaults or {})
    if path is not None:
        path = config_path(path)
        try:
            loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
        except UnicodeDecodeError:
            raise RepsimError(f"config file {path} is not UTF-8 text: save it as UTF-8") from None
        except yaml.YAMLError as e:
            raise RepsimError(f"config file {path} is not valid YAML ({one_line(e)}): fix it") from None
        if not isinstance(loaded, dict):
            raise RepsimError(f"config file {path} must hold 'key: value' lines, not a {type(loaded).__name__}")
        values.update(loaded)
    given = parse_overrides(overrides)
    check_known(given, "--set")  # an unknown --set key is named as such, not as the file's
    values.update(given)
    return from_dict(values, source=str(path) if path else "--set").resolved()


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice (PyYAML keeps the last one unseen)."""


def _unique_mapping(loader, node, deep=False):
    keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
    twice = [k for i, k in enumerate(keys) if k in keys[:i]]
    if twice:
        raise yaml.constructor.ConstructorError(None, None, f"key {twice[0]!r} is given twice", node.start_mark)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_overrides(overrides=(), *, once: bool = False) -> dict[str, str]:
    """``key=value`` items as a dict, a later item overriding an earlier one (so lists of
    overrides compose in Python); ``once`` refuses a key given twice, as the command line does
    (two ``--set`` of one key are a slip, not a plan). An item without ``=`` is refused."""
    values: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise RepsimError(f"--set expects key=value, got {item!r}")
        if once and key in values:
            raise RepsimError(f"--set {key}=... is given twice: give each key once")
        if value.strip() in ("", "~", "null", "Null", "NULL", "None"):
            # YAML would read these as "no value", and the key would fall back to a default
            # (the paper's, not the checkpoint's) without a word
            raise RepsimError(f"--set {item.strip()} gives {key} no value: give one (e.g. {key}=VALUE), "
                              f"or leave {key} out for its default")
        values[key] = value.strip()
    return values


# what a trained model's test may change (``--set`` on evaluate and analyze): its inner loop.
# Everything else (the network, its data, how it was trained) is fixed by its training.
TESTABLE_KEYS = ("inner_lr", "inner_loss", "adapt_batchnorm", "inner_steps_test", "test_queries")


def check_testable(given: Mapping[str, str]) -> None:
    """Refuse a ``--set`` key that a trained model's test cannot change: an unknown key, or one
    fixed by its training (the network, its data, how it was trained)."""
    for key in given:
        if key not in KEYS:
            raise RepsimError(f"unknown key {key} in --set: at test time --set takes only "
                              f"{', '.join(TESTABLE_KEYS)}")
        if key not in TESTABLE_KEYS:
            raise RepsimError(f"--set {key}=... cannot change a trained model's test ({key} is fixed "
                              f"by its training): at test time set only {', '.join(TESTABLE_KEYS)}")


def tested_with(config: Config, given: Mapping[str, str]) -> Config:
    """``config`` with ``given`` changes of how the trained model is tested ({key: value}, as
    :func:`parse_overrides` reads ``--set``), e.g. ``{"inner_lr": "0.4"}`` to test a
    Finn-convention checkpoint with a mean-loss step."""
    if not given:
        return config
    check_testable(given)
    return from_dict({**config.to_dict(), **given}, source="--set").resolved()


def check_test_flags(given: Mapping[str, str], *, inner_steps: int | None = None, queries: int | None = None,
                     nil: bool = False) -> None:
    """Refuse a flag and a ``--set`` key (``given``, parsed) that both say how a model is tested
    (the flag would win unseen while the record named the key), and inner steps for NIL, which
    has none."""
    for flag, value, key in (("--inner-steps", inner_steps, "inner_steps_test"),
                             ("--queries", queries, "test_queries")):
        if value is not None and key in given:
            raise RepsimError(f"{flag} and --set {key}=... both set the test protocol: give one of them")
    if nil and (inner_steps is not None or "inner_steps_test" in given):
        raise RepsimError("--nil tests without an inner loop: leave out --inner-steps and inner_steps_test")


def from_saved(values: dict[str, Any], source: str) -> Config:
    """A config as a checkpoint or run folder recorded it. One recorded before the convention
    keys existed was trained with repsim's conventions of then: the ``pytorch`` set."""
    values = dict(values)
    values.setdefault("conventions", "pytorch")
    return from_dict(values, source)
