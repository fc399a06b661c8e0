"""Tests of the data layer: task sampling, the synthetic set, Omniglot and MiniImageNet loading.

Real Omniglot is prepared once per session (a few seconds) when the shared copy is present;
error paths and MiniImageNet use tiny fixtures built here in the official layouts.
"""

from __future__ import annotations

import io
import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from repsim.data import (
    DATASETS,
    Split,
    Task,
    TaskList,
    _cache,
    batch_tasks,
    load_splits,
    miniimagenet,
    omniglot,
    sample_task,
    synthetic,
    task_generator,
)
from repsim.errors import RepsimError


@pytest.fixture(autouse=True, scope="module")
def data_single_thread():
    """These tests run many tiny tensor ops; on a shared, busy 2-core machine torch's intra-op
    threads spin-wait for each other and make them ~50x slower (measured), so use one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------
# Episodes
# --------------------------------------------------------------------------------------------


def coded_split(num_classes=12, examples=8, size=6, rotate=False) -> Split:
    """Every image unique and asymmetric: pixel (0,0) codes the class, (0,1) the example."""
    images = torch.zeros(num_classes, examples, 1, size, size, dtype=torch.uint8)
    images[:, :, 0, 0, 0] = torch.arange(num_classes, dtype=torch.uint8)[:, None] + 1
    images[:, :, 0, 0, 1] = torch.arange(examples, dtype=torch.uint8)[None, :] + 100
    return Split(images, [f"c{i}" for i in range(num_classes)], rotate=rotate, name="coded/train")


def stored(split: Split, task: Task, label: int, j: int) -> torch.Tensor:
    """The stored image used as the j-th example (support first) of class `label`, rotated."""
    img = split.images[task.classes[label], task.examples[label, j]].float() / 255
    return torch.rot90(img, int(task.rotations[label]), dims=(-2, -1))


def test_sample_task_shapes_labels_and_contents():
    split = coded_split()
    task = sample_task(split, ways=5, shots=2, queries=3, generator=task_generator(0, 0))
    assert task.support_x.shape == (10, 1, 6, 6) and task.query_x.shape == (15, 1, 6, 6)
    assert task.support_x.dtype == task.query_x.dtype == torch.float32
    assert 0 <= task.support_x.min() and task.support_x.max() <= 1
    assert task.support_y.dtype == task.query_y.dtype == task.classes.dtype == task.rotations.dtype == torch.int64
    assert task.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert task.query_y.tolist() == sum(([k] * 3 for k in range(5)), [])
    assert len(set(task.classes.tolist())) == 5 and task.rotations.tolist() == [0] * 5
    for i in range(10):
        assert torch.equal(task.support_x[i], stored(split, task, i // 2, i % 2))
    for i in range(15):
        assert torch.equal(task.query_x[i], stored(split, task, i // 3, 2 + i % 3))


def test_query_examples_disjoint_from_support():
    split = coded_split(examples=5)
    for index in range(20):
        task = sample_task(split, 4, 2, 3, task_generator(1, index))
        for row in task.examples.tolist():
            assert sorted(row) == list(range(5))  # all 5 examples, each once: none shared
        support_codes = {tuple(x[0, 0, :2].tolist()) for x in task.support_x}
        query_codes = {tuple(x[0, 0, :2].tolist()) for x in task.query_x}
        assert not support_codes & query_codes


def test_labels_are_randomly_assigned_to_classes():
    split = coded_split(num_classes=5)
    first_classes = {sample_task(split, 5, 1, 1, task_generator(0, i)).classes[0].item() for i in range(40)}
    assert len(first_classes) > 1


def test_task_generator_determinism():
    split = coded_split()
    a = sample_task(split, 5, 1, 2, task_generator(7, 3))
    b = sample_task(split, 5, 1, 2, task_generator(7, 3))
    for field in ("support_x", "support_y", "query_x", "query_y", "classes", "rotations", "examples"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    other_index = sample_task(split, 5, 1, 2, task_generator(7, 4))
    other_seed = sample_task(split, 5, 1, 2, task_generator(8, 3))
    assert not torch.equal(a.examples, other_index.examples) or not torch.equal(a.classes, other_index.classes)
    assert not torch.equal(a.examples, other_seed.examples) or not torch.equal(a.classes, other_seed.classes)
    with pytest.raises(RepsimError):
        task_generator(-1, 0)


def test_rotation_is_applied_per_class():
    split = coded_split(rotate=True)
    seen = set()
    for index in range(10):
        task = sample_task(split, 5, 2, 1, task_generator(0, index))
        seen.update(task.rotations.tolist())
        for i in range(10):
            assert torch.equal(task.support_x[i], stored(split, task, i // 2, i % 2))
        for i in range(5):
            assert torch.equal(task.query_x[i], stored(split, task, i, 2))
    assert seen == {0, 1, 2, 3}
    with pytest.raises(RepsimError, match="square"):
        Split(torch.zeros(2, 2, 1, 4, 5, dtype=torch.uint8), ["a", "b"], rotate=True)


def test_too_many_ways_or_shots_is_a_helpful_error():
    split = coded_split(num_classes=12, examples=8)
    with pytest.raises(RepsimError) as err:
        sample_task(split, 20, 1, 1, task_generator(0, 0))
    msg = one_line(err)
    assert "20" in msg and "12" in msg and "--ways" in msg
    with pytest.raises(RepsimError) as err:
        TaskList(split, 5, 5, 4, num_tasks=3, seed=0)
    msg = one_line(err)
    assert "9" in msg and "8" in msg and "--shots" in msg
    with pytest.raises(RepsimError):
        sample_task(split, 0, 1, 1, task_generator(0, 0))


def test_task_list_is_reproducible():
    split = coded_split(rotate=True)
    a, b = TaskList(split, 5, 1, 3, num_tasks=6, seed=11), TaskList(split, 5, 1, 3, num_tasks=6, seed=11)
    assert len(a) == 6 and len(list(a)) == 6
    for x, y in zip(a, b):
        assert torch.equal(x.query_x, y.query_x) and torch.equal(x.classes, y.classes)
    assert torch.equal(a[2].support_x, a[2].support_x) and torch.equal(a[-1].classes, a[5].classes)
    assert [t.classes.tolist() for t in a[1:3]] == [a[1].classes.tolist(), a[2].classes.tolist()]
    with pytest.raises(IndexError):
        a[6]
    c = TaskList(split, 5, 1, 3, num_tasks=6, seed=12)
    assert any(not torch.equal(x.examples, y.examples) for x, y in zip(a, c))
    assert a.describe() == {"split": "coded/train", "split_classes": 12, "examples_per_class": 8, "rotate": True,
                            "ways": 5, "shots": 1, "queries": 3, "num_tasks": 6, "seed": 11}


def test_batch_tasks_and_to():
    split = coded_split()
    tasks = [sample_task(split, 3, 2, 4, task_generator(0, i)) for i in range(4)]
    batch = batch_tasks(tasks)
    assert batch.support_x.shape == (4, 6, 1, 6, 6) and batch.query_x.shape == (4, 12, 1, 6, 6)
    assert batch.support_y.shape == (4, 6) and batch.query_y.shape == (4, 12)
    assert batch.classes.shape == batch.rotations.shape == (4, 3) and batch.examples.shape == (4, 3, 6)
    assert torch.equal(batch.query_x[2], tasks[2].query_x)
    moved = tasks[0].to("cpu")
    assert isinstance(moved, Task) and torch.equal(moved.support_x, tasks[0].support_x)
    with pytest.raises(RepsimError):
        batch_tasks([tasks[0], sample_task(split, 4, 2, 4, task_generator(0, 9))])
    with pytest.raises(RepsimError):
        batch_tasks([])
    # A hand-built task without bookkeeping gets rotations of zero.
    x, y = torch.zeros(2, 1, 2, 2), torch.tensor([0, 1])
    t = Task(x, y, x, y, torch.tensor([4, 7]))
    assert t.rotations.tolist() == [0, 0]


@settings(max_examples=25, deadline=None)
@given(ways=st.integers(1, 12), shots=st.integers(1, 5), queries=st.integers(0, 5), index=st.integers(0, 10**9))
def test_sample_task_invariants(ways, shots, queries, index):
    split = coded_split(num_classes=12, examples=10, rotate=True)
    task = sample_task(split, ways, shots, queries, task_generator(5, index))
    assert task.support_x.shape[0] == ways * shots and task.query_x.shape[0] == ways * queries
    assert torch.equal(torch.bincount(task.support_y, minlength=ways), torch.full((ways,), shots))
    assert len(set(task.classes.tolist())) == ways
    assert all(len(set(row)) == shots + queries for row in task.examples.tolist())
    assert task.rotations.min() >= 0 and task.rotations.max() <= 3


# --------------------------------------------------------------------------------------------
# Synthetic data set
# --------------------------------------------------------------------------------------------


def raw_pixel_1nn(split: Split, num_tasks=200, ways=5, shots=1, queries=15) -> float:
    correct = []
    for task in TaskList(split, ways, shots, queries, num_tasks, seed=123):
        nearest = torch.cdist(task.query_x.flatten(1), task.support_x.flatten(1)).argmin(1)
        correct.append((task.support_y[nearest] == task.query_y).float().mean().item())
    return float(np.mean(correct))


def test_synthetic_is_deterministic_per_seed():
    synthetic.generate.cache_clear()
    a = synthetic.generate(3, num_classes=40, examples_per_class=5)
    synthetic.generate.cache_clear()
    b = synthetic.generate(3, num_classes=40, examples_per_class=5)
    assert a is not b and a.tobytes() == b.tobytes()
    assert a.shape == (40, 5, 1, 28, 28) and a.dtype == np.uint8
    c = synthetic.generate(4, num_classes=40, examples_per_class=5)
    assert (a != c).mean() > 0.05


def test_synthetic_splits_are_omniglot_like():
    splits = load_splits("synthetic")
    assert [splits[k].num_classes for k in ("train", "val", "test")] == [1100, 100, 423]
    names = [n for s in splits.values() for n in s.class_names]
    assert len(set(names)) == 1623
    for s in splits.values():
        assert s.examples_per_class == 20 and s.image_shape == (1, 28, 28) and s.rotate
        assert s.images.dtype == torch.uint8
    images = torch.cat([s.images for s in splits.values()]).float()
    assert (images.amax(dim=(2, 3, 4)) == 255).all()  # every drawing has solid ink
    assert 5 < images.mean() < 40  # ...on a mostly dark background
    # Drawings of a class really differ from each other.
    assert (images[:, 0] != images[:, 1]).float().mean(dim=(1, 2, 3)).min() > 0.01
    assert load_splits("synthetic", rotate=False)["test"].rotate is False


def test_synthetic_raw_pixel_nearest_neighbour_is_informative_but_far_from_perfect():
    accuracy = raw_pixel_1nn(load_splits("synthetic")["test"])
    print(f"synthetic raw-pixel 1-NN, 5-way 1-shot, 200 tasks: {accuracy:.3f}")
    assert 0.40 <= accuracy <= 0.70


def test_synthetic_small_variant_and_errors():
    small = synthetic.load_splits(seed=1, num_classes=60, examples_per_class=6)
    assert sum(s.num_classes for s in small.values()) == 60 and small["train"].examples_per_class == 6
    with pytest.raises(RepsimError):
        synthetic.load_splits(num_classes=10, split_sizes=(5, 5, 5))
    with pytest.raises(RepsimError) as err:
        load_splits("synthetic", split_scheme="official")
    assert "split_scheme" in one_line(err)
    with pytest.raises(RepsimError) as err:
        load_splits("cifar")
    assert all(d in one_line(err) for d in DATASETS)


# --------------------------------------------------------------------------------------------
# Omniglot: the real data (once per session)
# --------------------------------------------------------------------------------------------


def test_omniglot_real_data(omniglot_root, omniglot_cache):
    images, names, num_background = omniglot.prepare(omniglot_root, omniglot_cache, progress=False)
    assert images.shape == (1623, 20, 1, 28, 28) and images.dtype == np.uint8
    assert num_background == 964 and len(set(names)) == 1623
    assert names[0] == "Alphabet_of_the_Magi/character01" and names[963].startswith("Tifinagh/")
    assert names[964].startswith("Angelic/")
    assert np.median(images) == 0 and images.max() == 255  # ink bright on a black background
    assert 10 < images.mean() < 40


def test_omniglot_real_splits(omniglot_root, omniglot_cache):
    splits = load_splits("omniglot", omniglot_root, cache_dir=omniglot_cache, progress=False)
    assert [splits[k].num_classes for k in ("train", "val", "test")] == [1100, 100, 423]
    sets = [set(splits[k].class_names) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(sets[0] | sets[1] | sets[2]) == 1623
    assert all(s.rotate and s.examples_per_class == 20 and s.image_shape == (1, 28, 28) for s in splits.values())
    assert splits["test"].name == "omniglot/test"

    again = load_splits("omniglot", omniglot_root, cache_dir=omniglot_cache, progress=False)
    assert again["test"].class_names == splits["test"].class_names
    other = load_splits("omniglot", omniglot_root, cache_dir=omniglot_cache, progress=False, seed=1)
    assert set(other["test"].class_names) != sets[2]

    official = load_splits("omniglot", omniglot_root, split_scheme="official", cache_dir=omniglot_cache, progress=False)
    assert [official[k].num_classes for k in ("train", "val", "test")] == [864, 100, 659]
    assert official["test"].class_names[0].startswith("Angelic/")
    assert not set(official["val"].class_names) & set(official["train"].class_names)
    with pytest.raises(RepsimError) as err:
        load_splits("omniglot", omniglot_root, split_scheme="lake", cache_dir=omniglot_cache)
    assert "maml" in one_line(err)


def test_omniglot_cache_is_reused(omniglot_root, omniglot_cache, monkeypatch):
    def no_decoding(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(omniglot, "_decode", no_decoding)
    started = time.perf_counter()
    load_splits("omniglot", omniglot_root, cache_dir=omniglot_cache, progress=False)
    assert time.perf_counter() - started < 10  # ~0.5 s; generous for a busy machine
    assert len(list(Path(omniglot_cache).glob("*.npz"))) == 1
    assert not list(Path(omniglot_cache).glob("*.tmp"))


def test_omniglot_raw_pixel_nearest_neighbour(omniglot_root, omniglot_cache):
    """Reference point for the synthetic set's difficulty (measured: ~0.45)."""
    test = load_splits("omniglot", omniglot_root, cache_dir=omniglot_cache, progress=False)["test"]
    accuracy = raw_pixel_1nn(test)
    print(f"Omniglot raw-pixel 1-NN, 5-way 1-shot, 200 tasks: {accuracy:.3f}")
    assert 0.3 < accuracy < 0.8


# --------------------------------------------------------------------------------------------
# Omniglot: small fixtures in the official layout
# --------------------------------------------------------------------------------------------


def drawing_png(c: int, e: int) -> bytes:
    """A 105x105 one-bit scan, black ink on white, with a square that identifies (c, e)."""
    img = Image.new("1", (105, 105), 1)
    x, y = 8 + 8 * (c % 10), 8 + 8 * e
    for i in range(x, x + 12):
        for j in range(y, y + 12):
            img.putpixel((i, j), 0)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# (part, alphabet, character numbers) with 3 drawings each; "character10" tests natural sorting.
FIXTURE = [
    ("images_background", "Zeta", (1, 2)),
    ("images_background", "Alpha", (2, 10, 1)),
    ("images_evaluation", "Omega", (1, 3)),
]
DRAWINGS = 3


def write_fixture(root: Path, as_zip=True, compression=zipfile.ZIP_DEFLATED) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    c = 0
    archives = {}
    for part, alphabet, numbers in FIXTURE:
        for n in numbers:
            for e in range(DRAWINGS):
                name = f"{part}/{alphabet}/character{n:02d}/{c:04d}_{e + 1:02d}.png"
                archives.setdefault(part, {})[name] = drawing_png(c, e)
            c += 1
    archives["images_background"]["__MACOSX/images_background/Zeta/character01/._0000_01.png"] = b"junk"
    for part, files in archives.items():
        if as_zip:
            with zipfile.ZipFile(root / f"{part}.zip", "w", compression) as z:
                for name, data in files.items():
                    z.writestr(name, data)
        else:
            for name, data in files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
    return root


def no_cache_left(cache: Path) -> bool:
    return not cache.exists() or not any(cache.iterdir())


def test_omniglot_fixture_preparation(tmp_path, monkeypatch):
    root = write_fixture(tmp_path / "omniglot")
    images, names, num_background = omniglot.prepare(root, tmp_path / "cache", progress=False)
    assert names == ["Alpha/character01", "Alpha/character02", "Alpha/character10", "Zeta/character01",
                     "Zeta/character02", "Omega/character01", "Omega/character03"]
    assert num_background == 5 and images.shape == (7, DRAWINGS, 1, 28, 28)
    assert images[:, :, :, 0, 0].max() == 0  # white paper became black
    # The square of "Alpha/character10" (written as the 4th character: c=3) drawing 2 is bright.
    y, x = (8 + 8 * 1 + 6) * 28 // 105, (8 + 8 * 3 + 6) * 28 // 105
    assert images[2, 1, 0, y, x] > 200
    assert len(list((tmp_path / "cache").glob("omniglot-28px-*.npz"))) == 1
    # The extracted folders give the same arrays.
    folders = write_fixture(tmp_path / "extracted", as_zip=False)
    images2, names2, _ = omniglot.prepare(folders, tmp_path / "cache2", progress=False)
    assert names2 == names and np.array_equal(images2, images)
    # A data root holding an omniglot/ folder works too, through the environment variable.
    monkeypatch.setenv("REPSIM_DATA_ROOT", str(tmp_path))
    assert omniglot.prepare(None, tmp_path / "cache", progress=False)[1] == names
    with pytest.raises(RepsimError) as err:
        load_splits("omniglot", root, cache_dir=tmp_path / "cache")
    assert "1200" in one_line(err)


def test_omniglot_cache_rebuilt_when_source_changes(tmp_path, monkeypatch):
    root = write_fixture(tmp_path / "omniglot")
    cache = tmp_path / "cache"
    decoded = []
    real_decode = omniglot._decode
    monkeypatch.setattr(omniglot, "_decode", lambda *args: decoded.append(1) or real_decode(*args))
    omniglot.prepare(root, cache, progress=False)
    assert len(decoded) == 7 * DRAWINGS
    omniglot.prepare(root, cache, progress=False)
    assert len(decoded) == 7 * DRAWINGS  # reused
    st_ = (root / "images_evaluation.zip").stat()
    os.utime(root / "images_evaluation.zip", ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    omniglot.prepare(root, cache, progress=False)
    assert len(decoded) == 2 * 7 * DRAWINGS  # rebuilt
    assert len(list(cache.glob("*.npz"))) == 2


def test_omniglot_missing_folder(tmp_path, monkeypatch):
    with pytest.raises(RepsimError) as err:
        load_splits("omniglot", tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    msg = one_line(err)
    assert "Omniglot not found at" in msg and "images_background.zip" in msg
    assert "--data-root" in msg and "REPSIM_DATA_ROOT" in msg
    monkeypatch.delenv("REPSIM_DATA_ROOT", raising=False)
    with pytest.raises(RepsimError) as err:
        load_splits("omniglot", None, cache_dir=tmp_path / "cache")
    assert "REPSIM_DATA_ROOT" in one_line(err)
    assert no_cache_left(tmp_path / "cache")
    # a relative folder (as reference checkpoints record it) is read from the current folder
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RepsimError) as err:
        load_splits("omniglot", "../data/omniglot", cache_dir=tmp_path / "cache")
    assert f"../data/omniglot (from {tmp_path})" in one_line(err)


def test_omniglot_truncated_zip(tmp_path):
    root = write_fixture(tmp_path / "omniglot")
    zip_path = root / "images_background.zip"
    zip_path.write_bytes(zip_path.read_bytes()[: zip_path.stat().st_size // 2])
    with pytest.raises(RepsimError) as err:
        omniglot.prepare(root, tmp_path / "cache", progress=False)
    msg = one_line(err)
    assert "images_background.zip" in msg and "corrupt or truncated" in msg and "download" in msg
    assert no_cache_left(tmp_path / "cache")


def test_omniglot_damaged_member(tmp_path):
    root = write_fixture(tmp_path / "omniglot", compression=zipfile.ZIP_STORED)
    zip_path = root / "images_evaluation.zip"
    data = bytearray(zip_path.read_bytes())
    at = data.index(b"IDAT") + 8  # inside the first image's pixel data: the CRC no longer matches
    data[at] ^= 0xFF
    zip_path.write_bytes(bytes(data))
    with pytest.raises(RepsimError) as err:
        omniglot.prepare(root, tmp_path / "cache", progress=False)
    assert "images_evaluation.zip" in one_line(err) and "download" in one_line(err)
    assert no_cache_left(tmp_path / "cache")


def test_omniglot_corrupt_png(tmp_path):
    root = write_fixture(tmp_path / "omniglot")
    bad = "images_background/Zeta/character02/0001_02.png"
    with zipfile.ZipFile(root / "images_background.zip", "a") as z:
        z.writestr(bad.replace("0001_02", "0001_99"), b"\x89PNG\r\n\x1a\n not really an image")
    # Keep the drawing count equal: drop one good drawing of that character first.
    files = {}
    with zipfile.ZipFile(root / "images_background.zip") as z:
        for name in z.namelist():
            if name != bad:
                files[name] = z.read(name)
    with zipfile.ZipFile(root / "images_background.zip", "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with pytest.raises(RepsimError) as err:
        omniglot.prepare(root, tmp_path / "cache", progress=False)
    msg = one_line(err)
    assert "0001_99.png" in msg and "cannot read the Omniglot image" in msg
    assert no_cache_left(tmp_path / "cache")


def test_omniglot_incomplete_character(tmp_path):
    root = write_fixture(tmp_path / "omniglot", as_zip=False)
    (root / "images_evaluation/Omega/character03").iterdir().__next__().unlink()
    with pytest.raises(RepsimError) as err:
        omniglot.prepare(root, tmp_path / "cache", progress=False)
    assert "Omega/character03" in one_line(err)


def test_cache_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("REPSIM_CACHE_DIR", str(tmp_path / "env-cache"))
    assert _cache.cache_dir(None) == tmp_path / "env-cache"
    assert _cache.cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("REPSIM_CACHE_DIR")
    assert _cache.cache_dir(None) == Path.home() / ".cache" / "repsim"


# --------------------------------------------------------------------------------------------
# MiniImageNet fixtures
# --------------------------------------------------------------------------------------------

MINI_CLASSES = {"train": 5, "val": 3, "test": 3}
MINI_IMAGES = 20


def write_mini_pickles(root: Path, protocol: int) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in MINI_CLASSES.items():
        data = rng.integers(0, 256, size=(k * MINI_IMAGES, 84, 84, 3), dtype=np.uint8)
        order = rng.permutation(k * MINI_IMAGES)
        class_dict = {f"n{split}{c:02d}": order[c::k].tolist() for c in reversed(range(k))}
        class_dict[f"n{split}00"] = [np.int64(i) for i in class_dict[f"n{split}00"]]  # numpy scalars, too
        with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": data, "class_dict": class_dict}, f, protocol=protocol)
        arrays[split] = (data, class_dict)
    return arrays


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_miniimagenet_pickles(tmp_path, protocol):
    arrays = write_mini_pickles(tmp_path / "miniimagenet", protocol)
    splits = load_splits("miniimagenet", tmp_path, cache_dir=tmp_path / "cache")  # finds the subfolder
    for split, k in MINI_CLASSES.items():
        s = splits[split]
        assert s.images.shape == (k, MINI_IMAGES, 3, 84, 84) and s.image_shape == (3, 84, 84)
        assert not s.rotate and s.name == f"miniimagenet/{split}"
        data, class_dict = arrays[split]
        assert s.class_names == sorted(class_dict)
        name = s.class_names[1]
        assert np.array_equal(s.images[1, 7].numpy(), data[class_dict[name][7]].transpose(2, 0, 1))
    task = sample_task(splits["train"], 5, 1, 15, task_generator(0, 0))
    assert task.query_x.shape == (75, 3, 84, 84)


def test_miniimagenet_malicious_pickle_is_refused(tmp_path):
    root = tmp_path
    write_mini_pickles(root, pickle.HIGHEST_PROTOCOL)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(root / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump({"image_data": np.zeros((1, 84, 84, 3), np.uint8), "class_dict": {"a": [0]}, "x": Evil()}, f)
    with pytest.raises(RepsimError) as err:
        load_splits("miniimagenet", root)
    msg = one_line(err)
    assert "refusing to unpickle" in msg and "system" in msg and "mini-imagenet-cache-val.pkl" in msg
    assert not marker.exists()
    # Other callables are refused just the same.
    (root / "evil.pkl").write_bytes(pickle.dumps(eval))
    with pytest.raises(RepsimError, match="builtins.eval"):
        miniimagenet.safe_load_pickle(root / "evil.pkl")
    (root / "broken.pkl").write_bytes(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(RepsimError, match="download it again"):
        miniimagenet.safe_load_pickle(root / "broken.pkl")


def write_mini_csv(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, k in MINI_CLASSES.items():
        lines = ["filename,label"]
        for e in range(MINI_IMAGES):
            for c in range(k):
                name = f"n{split}{c:02d}{e:08d}.jpg"
                size = (84, 84) if e % 2 else (100, 75)  # some originals need resizing
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "images" / name)
                lines.append(f"{name},n{split}{c:02d}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")


def test_miniimagenet_csv_and_images(tmp_path, monkeypatch):
    root = tmp_path / "mini"
    write_mini_csv(root)
    cache = tmp_path / "cache"
    splits = load_splits("miniimagenet", root, cache_dir=cache, progress=False)
    for split, k in MINI_CLASSES.items():
        s = splits[split]
        assert s.images.shape == (k, MINI_IMAGES, 3, 84, 84) and s.images.dtype == torch.uint8
        assert s.class_names == [f"n{split}{c:02d}" for c in range(k)]
    # The 84x84 originals survive (up to JPEG decoding), in CSV order.
    with Image.open(root / "images" / "ntrain0200000001.jpg") as im:
        assert np.array_equal(splits["train"].images[2, 1].numpy(), np.asarray(im.convert("RGB")).transpose(2, 0, 1))
    assert len(list(cache.glob("miniimagenet-*.npz"))) == 3

    def no_decoding(path):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(miniimagenet, "_decode", no_decoding)
    again = load_splits("miniimagenet", root, cache_dir=cache, progress=False)
    assert torch.equal(again["val"].images, splits["val"].images)
    monkeypatch.undo()

    (root / "images" / "ntest0100000005.jpg").unlink()
    with pytest.raises(RepsimError) as err:
        load_splits("miniimagenet", root, cache_dir=cache, progress=False)
    assert "ntest0100000005.jpg" in one_line(err) and "missing" in one_line(err)


def test_miniimagenet_errors(tmp_path):
    with pytest.raises(RepsimError) as err:
        load_splits("miniimagenet", tmp_path)
    msg = one_line(err)
    assert "MiniImageNet not found" in msg and "train.csv" in msg and ".pkl" in msg and "--data-root" in msg
    with pytest.raises(RepsimError):
        load_splits("miniimagenet", tmp_path, split_scheme="official")
    root = tmp_path / "mini"
    write_mini_csv(root)
    (root / "val.csv").write_text("file,class\nx.jpg,a\n")
    with pytest.raises(RepsimError, match="filename,label"):
        load_splits("miniimagenet", root, cache_dir=tmp_path / "cache", progress=False)
