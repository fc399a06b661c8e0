"""MiniImageNet (Vinyals et al. 2016) with the class split of Ravi & Larochelle (2017): 64 train,
16 val and 20 test classes, 600 images each, 84x84 RGB.

There is no official download, so we accept the two forms people actually have:

* the Ravi & Larochelle files: `train.csv`, `val.csv`, `test.csv` (header `filename,label`) and
  an `images/` folder of JPEGs. Decoding 60,000 JPEGs is slow, so each split is prepared once
  (resized to 84x84 if needed) and cached as an .npz keyed on the source files' sizes and mtimes;
* the widely shared pickle cache: `mini-imagenet-cache-{train,val,test}.pkl`, each a dict with
  `image_data` (uint8, N x 84 x 84 x 3) and `class_dict` (class name -> list of row indices).

Unpickling can run arbitrary code, and these pickles are passed around the internet, so they
are read with an unpickler that can only rebuild numpy arrays, dicts and lists; anything else
(a function call smuggled in through __reduce__, say) is refused before it runs.
"""

from __future__ import annotations

import csv
import importlib
import pickle
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from repsim.data import _cache
from repsim.data.episodes import Split
from repsim.errors import RepsimError
from repsim.io import where

SPLITS = ("train", "val", "test")
IMAGE_SIZE = 84
SPLIT_SCHEMES = ("maml", "ravi")  # one and the same: the Ravi & Larochelle split MAML used
_PREP_VERSION = 1
_FOLDER_NAMES = ("", "miniimagenet", "mini-imagenet", "mini_imagenet", "miniImageNet", "MiniImageNet", "miniImagenet")
_EXPECTED = (
    "expected train.csv, val.csv, test.csv and an images/ folder (Ravi & Larochelle) "
    "or mini-imagenet-cache-{train,val,test}.pkl"
)


def _numpy_attr(submodule: str, name: str):
    """numpy's own reconstruction helpers, from numpy._core (numpy 2) or numpy.core (numpy 1)."""
    try:
        module = importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        module = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(module, name)


# Everything a pickled dict of numpy arrays and lists may legitimately refer to, under the module
# names numpy 1 and numpy 2 (and Python 2, for old pickles) write.
_ALLOWED = {}
for _prefix in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_prefix}.multiarray", "_reconstruct")] = _numpy_attr("multiarray", "_reconstruct")
    _ALLOWED[(f"{_prefix}.multiarray", "scalar")] = _numpy_attr("multiarray", "scalar")
    _ALLOWED[(f"{_prefix}.numeric", "_frombuffer")] = _numpy_attr("numeric", "_frombuffer")
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype


def _latin1_encode(text, encoding="latin1"):
    """How protocol-2 pickles written by Python 3 spell a bytes object (the raw bytes of a numpy
    array among them): _codecs.encode(text, "latin1"). Only that one, harmless use is allowed."""
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise RepsimError(
            f"refusing to unpickle: unexpected _codecs.encode({type(text).__name__}, {encoding!r}); use a trusted copy"
        )
    return text.encode("latin1")


_ALLOWED[("_codecs", "encode")] = _latin1_encode
for _builtins in ("builtins", "__builtin__"):
    _ALLOWED[(_builtins, "dict")] = dict
    _ALLOWED[(_builtins, "list")] = list


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals in _ALLOWED: numpy arrays, dicts and lists can be rebuilt,
    nothing can be called."""

    def __init__(self, file, source: Path):
        super().__init__(file, encoding="latin1")  # latin1: numpy arrays pickled by Python 2
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RepsimError(
                f"refusing to unpickle {self.source}: it asks for {module}.{name}, which a MiniImageNet cache never "
                "needs and which could run code; use a trusted copy or the CSV + images/ form"
            ) from None

    def persistent_load(self, pid):
        raise RepsimError(f"refusing to unpickle {self.source}: it uses persistent ids; use a trusted copy")


def safe_load_pickle(path: Path):
    """Unpickle a file that may only contain numpy arrays, dicts and lists."""
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, path).load()
    except RepsimError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError) as err:
        raise RepsimError(f"cannot read the MiniImageNet pickle {path} ({err}); download it again") from None


def _find_sources(root: Path) -> tuple[str, Path]:
    """("pickle" or "csv", the folder holding that form); `root` may hold a miniimagenet/ folder."""
    for sub in _FOLDER_NAMES:
        base = root / sub if sub else root
        if all((base / f"mini-imagenet-cache-{s}.pkl").is_file() for s in SPLITS):
            return "pickle", base
        if all((base / f"{s}.csv").is_file() for s in SPLITS) and (base / "images").is_dir():
            return "csv", base
    raise RepsimError(f"MiniImageNet not found at {where(root)}: {_EXPECTED}; "
                      f"pass --data-root DIR or set REPSIM_DATA_ROOT")


def _equal_counts(groups: dict[str, list], source: Path) -> int:
    """Splits are dense tensors, so every class must have as many examples as the smallest."""
    counts = {len(v) for v in groups.values()}
    smallest = min(counts)
    if len(counts) > 1:
        warnings.warn(
            f"{source}: classes have {min(counts)} to {max(counts)} images; using the first {smallest} of each",
            stacklevel=3,
        )
    if smallest < 1:
        raise RepsimError(f"{source} has a class without images; download MiniImageNet again")
    return smallest


def _load_pickle_split(path: Path) -> tuple[np.ndarray, list[str]]:
    data = safe_load_pickle(path)
    bad = (
        f"{path} is not a MiniImageNet cache (expected a dict with image_data (N, H, W, 3) uint8 and class_dict); "
        "use the standard mini-imagenet-cache-*.pkl files"
    )
    if not isinstance(data, dict) or "image_data" not in data or "class_dict" not in data:
        raise RepsimError(bad)
    image_data, class_dict = data["image_data"], data["class_dict"]
    if not (isinstance(image_data, np.ndarray) and image_data.dtype == np.uint8 and image_data.ndim == 4
            and image_data.shape[-1] == 3 and isinstance(class_dict, dict) and class_dict):
        raise RepsimError(bad)
    names = sorted(class_dict)
    groups = {name: np.asarray(class_dict[name], dtype=np.int64).reshape(-1) for name in names}
    for name, idx in groups.items():
        if idx.size and (idx.min() < 0 or idx.max() >= len(image_data)):
            raise RepsimError(f"{path}: class {name} lists images outside image_data; download the file again")
    per_class = _equal_counts(groups, path)
    _, h, w, c = image_data.shape
    images = np.empty((len(names), per_class, c, h, w), dtype=np.uint8)
    for i, name in enumerate(names):
        images[i] = image_data[groups[name][:per_class]].transpose(0, 3, 1, 2)
    return images, [str(n) for n in names]


def _read_csv(path: Path) -> dict[str, list[str]]:
    """Filenames grouped by label, labels sorted, files in the order the CSV lists them."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RepsimError(f"cannot read {path} ({err}); download MiniImageNet's split files again") from None
    if not rows or [c.strip().lower() for c in rows[0]] != ["filename", "label"]:
        raise RepsimError(f"{path} must start with the header 'filename,label'; use the Ravi & Larochelle split files")
    groups: dict[str, list[str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise RepsimError(
                f"{path} line {line}: expected 'filename,label', got {','.join(row)!r}; fix or replace the file"
            )
        groups.setdefault(row[1].strip(), []).append(row[0].strip())
    if not groups:
        raise RepsimError(f"{path} lists no images; use the Ravi & Larochelle split files")
    return dict(sorted(groups.items()))


def _decode(path: Path) -> np.ndarray:
    """An image as 84x84 RGB, (3, 84, 84); originals of other sizes are resized with antialiasing."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except FileNotFoundError:
        raise RepsimError(f"MiniImageNet image {path} is missing; copy the complete images/ folder") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise RepsimError(
            f"cannot read the MiniImageNet image {path} ({err}); replace it or download MiniImageNet again"
        ) from None


def _load_csv_split(base: Path, split: str, cache_dir, progress: bool) -> tuple[np.ndarray, list[str]]:
    csv_path = base / f"{split}.csv"
    groups = _read_csv(csv_path)
    per_class = _equal_counts(groups, csv_path)
    files = {name: [base / "images" / f for f in fs[:per_class]] for name, fs in groups.items()}
    ident = [(csv_path.name, csv_path)]
    for fs in files.values():
        for f in fs:
            if not f.is_file():
                raise RepsimError(
                    f"MiniImageNet image {f} listed in {csv_path} is missing; copy the complete images/ folder"
                )
            ident.append((f.name, f))
    key = _cache.source_key(ident, {"version": _PREP_VERSION, "size": IMAGE_SIZE})
    cache_file = _cache.cache_dir(cache_dir) / f"miniimagenet-{split}-{IMAGE_SIZE}px-{key}.npz"
    cached = _cache.load_npz(cache_file)
    if cached is not None and {"images", "names"} <= cached.keys():
        return cached["images"], [str(n) for n in cached["names"]]

    names = list(files)
    images = np.empty((len(names), per_class, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    started = time.perf_counter()
    with tqdm(total=images.shape[0] * per_class, desc=f"Preparing MiniImageNet {split}", unit="img",
              disable=not progress, leave=False) as bar:
        for c, name in enumerate(names):
            for e, f in enumerate(files[name]):
                images[c, e] = _decode(f)
            bar.update(per_class)
    if progress:
        tqdm.write(f"Prepared MiniImageNet {split} in {time.perf_counter() - started:.1f}s; cached at {cache_file}",
                   file=sys.stderr)
    _cache.save_npz(cache_file, images=images, names=np.array(names))
    return images, names


def load_splits(data_root: str | Path | None = None, *, split_scheme: str = "maml", rotate: bool = False,
                cache_dir: str | Path | None = None, progress: bool = True) -> dict[str, Split]:
    """Train/val/test splits of MiniImageNet, as (classes, 600, 3, 84, 84) uint8 tensors."""
    if split_scheme not in SPLIT_SCHEMES:
        raise RepsimError(
            f"MiniImageNet has one split scheme (Ravi & Larochelle), got {split_scheme!r}; use split_scheme='maml'"
        )
    root = _cache.data_root(data_root, "MiniImageNet")
    form, base = _find_sources(root)
    splits = {}
    for split in SPLITS:
        if form == "pickle":
            images, names = _load_pickle_split(base / f"mini-imagenet-cache-{split}.pkl")
        else:
            images, names = _load_csv_split(base, split, cache_dir, progress)
        splits[split] = Split(images=torch.from_numpy(images), class_names=names, rotate=rotate,
                              name=f"miniimagenet/{split}")
    return splits
