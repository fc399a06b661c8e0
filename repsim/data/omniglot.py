"""Omniglot (Lake et al. 2015) as MAML used it: 28x28 grayscale, ink bright, 20 drawings a class.

The user points us at the official `images_background.zip` and `images_evaluation.zip` (or the
folders they unpack to). Decoding and downsizing the 32,460 drawings takes several seconds, so
it is done once and cached as a single .npz; later runs load that file in a fraction of a second.

Characters are ordered canonically (background before evaluation, then alphabet, then character
number), so that a class index means the same character on every machine and the seeded split
below is reproducible.

Split schemes
-------------
"maml" (default, as in Finn et al. 2017 and Raghu et al. 2020): all 1623 characters are shuffled
    with `seed`; the first 1100 are train, the next 100 val, the remaining 423 test.
"official": the background set without 100 held-out characters is train; those 100 (the last of
    the background characters after a shuffle with `seed`) are val; the evaluation set's 659
    characters are test. Alphabets are shared between train and val, but not with test.
"vinyals" (Vinyals et al. 2016, as torchmeta and the prototypical-networks code ship it): whole
    alphabets, no shuffle. Test: 12 evaluation alphabets and Gurmukhi's characters 42-45 (423
    characters); val: 5 background alphabets (172); train: the other 1028 (Gurmukhi 1-41 among
    them). `seed` plays no part.
"file:PATH": the test characters listed in the text file PATH, one per line as
    ALPHABET/characterNN (a trailing /rotXXX, as the Vinyals lists have, is ignored; blank lines
    and # comments too); 100 of the others, drawn with `seed`, are val, the rest train. For a
    model trained on a split of its own: list its test characters.
"""

from __future__ import annotations

import io
import re
import sys
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from repsim.data import _cache
from repsim.data.episodes import Split
from repsim.errors import RepsimError
from repsim.io import where

PARTS = ("images_background", "images_evaluation")
IMAGE_SIZE = 28
SPLIT_SCHEMES = ("maml", "official", "vinyals")
# the published Vinyals split, by alphabet (its class lists name every character of these)
VINYALS_VAL = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
VINYALS_TEST = ("Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian", "Old_Church_Slavonic_(Cyrillic)",
                "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan", "ULOG")
VINYALS_TEST_GURMUKHI = range(42, 46)  # Gurmukhi's characters 1-41 are training classes
MAML_TRAIN, MAML_VAL = 1100, 100
OFFICIAL_VAL = 100
_PREP_VERSION = 1  # bump when the preparation below changes, to invalidate old caches

_MISSING_HINT = "pass --data-root DIR or set REPSIM_DATA_ROOT"


def _find_sources(root: Path) -> dict[str, Path]:
    """The zip (preferred: one file to check) or extracted folder of each part, by part name.

    `root` may be the Omniglot folder itself or a data folder holding an `omniglot/` subfolder.
    """
    for base in (root, root / "omniglot", root / "Omniglot"):
        found = {}
        for part in PARTS:
            if (base / f"{part}.zip").is_file():
                found[part] = base / f"{part}.zip"
            elif (base / part).is_dir():
                found[part] = base / part
        if len(found) == len(PARTS):
            return found
    raise RepsimError(
        f"Omniglot not found at {where(root)}: expected images_background.zip and images_evaluation.zip "
        f"(or their extracted folders); {_MISSING_HINT}"
    )


def _character_order(key: tuple[str, str]) -> tuple:
    """Alphabet by name, then character by its number (character2 before character10)."""
    alphabet, character = key
    m = re.fullmatch(r"character(\d+)", character)
    return (alphabet, int(m.group(1)) if m else float("inf"), character)


def _is_junk(parts) -> bool:
    """macOS archivers add __MACOSX/ folders and ._* resource files that are not drawings."""
    return "__MACOSX" in parts or parts[-1].startswith("._")


Reader = Callable[[], bytes]
Drawings = dict[tuple[str, str], list[tuple[str, Reader]]]  # (alphabet, character) -> [(where, read)]


def _list_part(source: Path) -> tuple[Drawings, list[tuple[str, Path]], Callable[[], None]]:
    """Drawings of one part grouped by (alphabet, character), each with a way to read its bytes.

    Returns the groups, the (name, path) pairs that identify the source for the cache key, and a
    function that releases the source (closes the zip).
    """
    groups: Drawings = {}
    if source.is_file():
        try:
            archive = zipfile.ZipFile(source)
            names = archive.namelist()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise RepsimError(
                f"Omniglot archive {source} is corrupt or truncated ({err}); download {source.name} again"
            ) from None
        for name in names:
            parts = name.split("/")
            if len(parts) >= 3 and parts[-1].lower().endswith(".png") and not _is_junk(parts):
                groups.setdefault((parts[-3], parts[-2]), []).append(
                    (f"{source}:{name}", lambda n=name: archive.read(n))
                )
        return groups, [(source.name, source)], archive.close

    files = [f for f in sorted(source.glob("*/*/*.png")) + sorted(source.glob("*/*/*.PNG")) if not _is_junk(f.parts)]
    for f in files:
        groups.setdefault((f.parent.parent.name, f.parent.name), []).append((str(f), f.read_bytes))
    ident = [(str(f.relative_to(source.parent)), f) for f in files]
    return groups, ident, lambda: None


RESIZES = ("lanczos", "nearest")


def _decode(data: bytes, image_size: int, resize: str = "lanczos") -> np.ndarray:
    """Downsize and invert: the 1-bit scans have black ink on white, and MAML's networks expect
    ink as the bright, non-zero signal on a zero background.

    ``lanczos`` filters the drawing as grey levels (antialiased strokes); ``nearest`` keeps
    one source pixel per output pixel, so pixels stay 0 or 255. Finn et al.'s
    resize_images.py asked PIL for LANCZOS, but PIL resizes 1-bit images by nearest
    neighbour whatever filter is asked for, so their Omniglot is the ``nearest`` one.
    """
    with Image.open(io.BytesIO(data)) as im:
        if resize == "nearest":
            small = im.convert("L").resize((image_size, image_size), Image.NEAREST)
        else:
            small = im.convert("L").resize((image_size, image_size), Image.LANCZOS)
    return 255 - np.asarray(small, dtype=np.uint8)


def prepare(data_root: str | Path | None = None, cache_dir: str | Path | None = None, *,
            progress: bool = True, image_size: int = IMAGE_SIZE,
            resize: str = "lanczos") -> tuple[np.ndarray, list[str], int]:
    """All of Omniglot as (images uint8 (1623, 20, 1, s, s), names "Alphabet/characterNN", number
    of background characters), from the cache when it matches the source files, else prepared
    from them and cached. ``resize``: see :func:`_decode`."""
    if resize not in RESIZES:
        raise RepsimError(f"unknown Omniglot resize {resize!r}; use one of {', '.join(RESIZES)}")
    root = _cache.data_root(data_root, "Omniglot")
    sources = _find_sources(root)
    listed = []
    try:
        for part in PARTS:
            listed.append(_list_part(sources[part]))
        ident = [pair for _, pairs, _ in listed for pair in pairs]
        key = _cache.source_key(ident, {"version": _PREP_VERSION, "size": image_size, "resize": resize})
        cache_file = _cache.cache_dir(cache_dir) / f"omniglot-{image_size}px-{resize}-{key}.npz"
        cached = _cache.load_npz(cache_file)
        if cached is not None and {"images", "names", "num_background"} <= cached.keys():
            return cached["images"], [str(n) for n in cached["names"]], int(cached["num_background"])

        characters: list[tuple[str, list[tuple[str, Reader]]]] = []
        num_background = 0
        for part, (groups, _, _) in zip(PARTS, listed):
            if not groups:
                raise RepsimError(
                    f"no PNG drawings found in {sources[part]}: expected the official layout "
                    f"{part}/<Alphabet>/character<NN>/<id>_<drawer>.png; download Omniglot again"
                )
            for k in sorted(groups, key=_character_order):
                characters.append((f"{k[0]}/{k[1]}", sorted(groups[k], key=lambda d: d[0])))
            if part == PARTS[0]:
                num_background = len(characters)

        counts = {len(drawings) for _, drawings in characters}
        if len(counts) > 1:
            expected = max(counts, key=lambda c: sum(len(d) == c for _, d in characters))
            odd, drawings = next((name, d) for name, d in characters if len(d) != expected)
            raise RepsimError(
                f"Omniglot character {odd} has {len(drawings)} drawings where the "
                f"others have {expected}: the copy at {root} is incomplete; download Omniglot again"
            )
        per_class = counts.pop()

        images = np.empty((len(characters), per_class, 1, image_size, image_size), dtype=np.uint8)
        started = time.perf_counter()
        with tqdm(total=images.shape[0] * per_class, desc="Preparing Omniglot", unit="img",
                  disable=not progress, leave=False) as bar:
            for c, (_, drawings) in enumerate(characters):
                for e, (where, read) in enumerate(drawings):
                    images[c, e, 0] = _read_drawing(where, read, image_size, resize)
                bar.update(per_class)
        if progress:
            tqdm.write(f"Prepared Omniglot ({images.shape[0]} characters) in {time.perf_counter() - started:.1f}s; "
                       f"cached at {cache_file}", file=sys.stderr)
        names = [name for name, _ in characters]
        _cache.save_npz(cache_file, images=images, names=np.array(names), num_background=np.array(num_background))
        return images, names, num_background
    finally:
        for _, _, close in listed:
            close()


def _read_drawing(where: str, read: Reader, image_size: int, resize: str) -> np.ndarray:
    """One drawing, with every way a damaged download can fail turned into a message with a fix."""
    try:
        data = read()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        archive = where.split(":")[0]
        raise RepsimError(
            f"Omniglot archive {archive} is corrupt or truncated (reading {where}: {err}); "
            f"download {Path(archive).name} again"
        ) from None
    try:
        return _decode(data, image_size, resize)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise RepsimError(
            f"cannot read the Omniglot image {where} ({err}); replace it or download Omniglot again"
        ) from None


def split_indices(num_classes: int, num_background: int, split_scheme: str = "maml",
                  seed: int = 0, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Class indices of train/val/test under a split scheme (see the module docstring);
    ``names`` (ALPHABET/characterNN) are needed by the vinyals scheme."""
    rng = np.random.default_rng(int(seed))
    if split_scheme == "vinyals":
        parts = _vinyals(names or [])
    elif split_scheme.startswith("file:"):
        test = _listed(split_scheme[5:], names or [])
        rest = rng.permutation(np.setdiff1d(np.arange(num_classes), test))
        parts = rest[OFFICIAL_VAL:], rest[:OFFICIAL_VAL], test
    elif split_scheme == "maml":
        if num_classes <= MAML_TRAIN + MAML_VAL:
            raise RepsimError(
                f"the maml split needs more than {MAML_TRAIN + MAML_VAL} Omniglot characters, found {num_classes}; "
                "use the complete images_background and images_evaluation sets"
            )
        perm = rng.permutation(num_classes)
        parts = perm[:MAML_TRAIN], perm[MAML_TRAIN : MAML_TRAIN + MAML_VAL], perm[MAML_TRAIN + MAML_VAL :]
    elif split_scheme == "official":
        if num_background <= OFFICIAL_VAL or num_classes <= num_background:
            raise RepsimError(
                f"the official split needs more than {OFFICIAL_VAL} background and some evaluation characters, found "
                f"{num_background} and {num_classes - num_background}; use the complete Omniglot sets"
            )
        perm = rng.permutation(num_background)
        parts = perm[:-OFFICIAL_VAL], perm[-OFFICIAL_VAL:], np.arange(num_background, num_classes)
    else:
        raise RepsimError(f"unknown Omniglot split scheme {split_scheme!r}; use one of {', '.join(SPLIT_SCHEMES)}")
    return {name: np.sort(idx) for name, idx in zip(("train", "val", "test"), parts)}


def _listed(path: str, names: list[str]) -> np.ndarray:
    """Class indices of the characters listed in ``path`` (see "file:PATH" above)."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RepsimError(f"cannot read the split file {path} ({getattr(e, 'strerror', None) or e}): "
                          f"give split_scheme=file:PATH a text file of test characters") from None
    index = {name: i for i, name in enumerate(names)}
    listed = []
    for number, line in enumerate(lines, start=1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        name = "/".join(line.split("/")[:2])
        if name not in index:
            raise RepsimError(f"{path}, line {number}: {line!r} is not an Omniglot character: write "
                              f"ALPHABET/characterNN as in the official folders (e.g. Bengali/character01)")
        listed.append(index[name])
    if not listed:
        raise RepsimError(f"the split file {path} lists no characters: one test character per line")
    test = np.unique(listed)
    if len(names) - len(test) <= OFFICIAL_VAL:
        raise RepsimError(f"{path} lists {len(test)} test characters, leaving too few for train and val: "
                          f"list only the test characters")
    return test


def _vinyals(names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def part(name: str) -> int:
        alphabet, character = name.split("/")
        if alphabet in VINYALS_VAL:
            return 1
        test = alphabet in VINYALS_TEST or (
            alphabet == "Gurmukhi" and int(character.removeprefix("character")) in VINYALS_TEST_GURMUKHI)
        return 2 if test else 0
    which = np.array([part(n) for n in names])
    counts = np.bincount(which, minlength=3) if len(which) else np.zeros(3, int)
    if tuple(counts) != (1028, 172, 423):
        raise RepsimError(f"the vinyals split expects 1028/172/423 train/val/test characters of the complete "
                          f"Omniglot sets, found {'/'.join(map(str, counts))}: use both official zips unchanged")
    return tuple(np.flatnonzero(which == k) for k in range(3))


def load_splits(data_root: str | Path | None = None, *, split_scheme: str = "maml", rotate: bool = True,
                seed: int = 0, resize: str = "lanczos", cache_dir: str | Path | None = None,
                progress: bool = True) -> dict[str, Split]:
    """Train/val/test splits of Omniglot, preparing (or reusing) the cache as needed."""
    if split_scheme not in SPLIT_SCHEMES and not split_scheme.startswith("file:"):
        raise RepsimError(f"unknown Omniglot split scheme {split_scheme!r}; use one of "
                          f"{', '.join(SPLIT_SCHEMES)} or file:PATH")
    images, names, num_background = prepare(data_root, cache_dir, progress=progress, resize=resize)
    splits = {}
    for split, idx in split_indices(len(names), num_background, split_scheme, seed, names).items():
        splits[split] = Split(
            images=torch.from_numpy(images[idx]),
            class_names=[names[i] for i in idx],
            rotate=rotate,
            name=f"omniglot/{split}",
        )
    return splits
