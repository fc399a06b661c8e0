"""A built-in, Omniglot-like data set of procedurally drawn characters.

It exists so that the whole pipeline (training, evaluation, representation analysis) can run
and be tested anywhere, with no download, in seconds. Like Omniglot it has many classes with
few, genuinely varied examples each: a class is a "character" of 2-4 pen strokes (cubic Bezier
curves, later strokes often starting on earlier ones), and every example redraws those strokes
the way a different person would: control points moved a little, a different pen width, a
slightly rotated, sheared, scaled and shifted frame. Raw pixels therefore only partly identify
a class, while features that capture stroke shape do, which is what a meta-learned
representation has to discover. Measured difficulty: nearest neighbour on raw pixels gets ~51%
of 5-way 1-shot and ~29% of 20-way 1-shot test queries right (real Omniglot: ~45% and ~25%).

Everything is drawn from one seed, vectorised, in float32: the same seed gives the same bytes.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch

from repsim.errors import RepsimError

NUM_CLASSES = 1623
EXAMPLES_PER_CLASS = 20
SPLIT_SIZES = (1100, 100, 423)  # like Omniglot's MAML split
IMAGE_SIZE = 28
MAX_STROKES = 4
CHARACTER_BOX = 20.0  # px; the largest a character's strokes may span before jitter
POINTS_PER_STROKE = 28  # samples along each curve; ~1 px apart, so the sampled distance is smooth

# How much one drawing of a character differs from another; tuned so that raw-pixel 1-NN on
# 5-way 1-shot tasks lands in the middle of the 40-70% band (see tests/test_data.py).
CONTROL_JITTER = 1.6  # px, per control point
MAX_ROTATION = np.deg2rad(10.0)
SCALE_RANGE = (0.8, 1.15)
MAX_SHEAR = 0.15
MAX_SHIFT = 2.5  # px
HALF_WIDTH_RANGE = (0.7, 1.3)  # px; the pen's half width
assert HALF_WIDTH_RANGE[1] + 0.5 < 2, "_render only inks pixels within 2 px of a curve sample"


def _class_strokes(rng: np.random.Generator, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Control points (classes, MAX_STROKES, 4, 2) and a stroke mask (classes, MAX_STROKES)."""
    n_strokes = rng.choice([2, 3, 4], size=num_classes, p=[0.3, 0.4, 0.3])
    mask = np.arange(MAX_STROKES)[None, :] < n_strokes[:, None]
    lo, hi = 4.0, IMAGE_SIZE - 4.0
    ctrl = np.zeros((num_classes, MAX_STROKES, 4, 2))
    for s in range(MAX_STROKES):
        start = rng.uniform(lo, hi, size=(num_classes, 2))
        if s > 0:
            # Characters are connected: often start on an earlier stroke (at an end or inside it).
            prev = rng.integers(0, s, size=num_classes)
            t = rng.choice([0.0, 1.0, 0.5], size=num_classes, p=[0.35, 0.35, 0.3])
            on_prev = np.einsum("ck,ckd->cd", _bernstein(t), ctrl[np.arange(num_classes), prev])
            attach = rng.random(num_classes) < 0.6
            start = np.where(attach[:, None], on_prev, start)
        angle = rng.uniform(0, 2 * np.pi, size=num_classes)
        length = rng.uniform(7.0, 16.0, size=num_classes)
        chord = np.stack([np.cos(angle), np.sin(angle)], axis=-1) * length[:, None]
        end = start + chord  # may leave the frame: the whole character is fitted to it below
        normal = np.stack([-chord[:, 1], chord[:, 0]], axis=-1)
        bends = rng.normal(0.0, 0.45, size=(num_classes, 2))
        p1 = start + chord / 3 + normal * bends[:, :1]
        p2 = start + 2 * chord / 3 + normal * bends[:, 1:]
        ctrl[:, s] = np.stack([start, p1, p2, end], axis=1)

    # Like a scanned character, centre each one and fit it into a 20 px box, so that no class
    # is lost off the edge of the frame once examples are jittered and shifted.
    points = _bezier(ctrl, np.linspace(0.0, 1.0, POINTS_PER_STROKE))  # (C, S, P, 2)
    inside = mask[:, :, None, None]
    low = np.where(inside, points, np.inf).min(axis=(1, 2))
    high = np.where(inside, points, -np.inf).max(axis=(1, 2))
    scale = np.minimum(1.0, CHARACTER_BOX / (high - low).max(axis=1))
    ctrl = (ctrl - ((low + high) / 2)[:, None, None]) * scale[:, None, None, None] + IMAGE_SIZE / 2
    return ctrl, mask


def _bernstein(t: np.ndarray) -> np.ndarray:
    """Cubic Bernstein weights (T, 4) of the curve parameters t (T,)."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    return np.concatenate([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3], axis=1)


def _bezier(ctrl: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points of cubic Bezier curves: ctrl (..., 4, 2), t (T,) -> (..., T, 2)."""
    return _bernstein(t) @ ctrl


_PAD = 5  # canvas margin: every pixel a clamped curve sample can touch lies inside it


def _render(points: np.ndarray, valid: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """Antialiased strokes: a pixel's ink falls off linearly over one pixel at the pen's edge.

    points (B, P, 2) in pixel coordinates (x, y), valid (B, P), half_width (B,) -> uint8 (B, H, W).
    Ink reaches less than 2 px from the curve, so each curve sample only needs its distance to
    the 5x5 pixels around it; a scatter-min over those gives every pixel its distance to the
    nearest sample. That is ~30x less work than all-pairs distances. Samples are drawn on a
    padded canvas (invalid ones parked outside the frame), so no index ever needs masking.
    """
    size, canvas = IMAGE_SIZE, IMAGE_SIZE + 2 * _PAD
    pts = torch.from_numpy(points.astype(np.float32))
    pts = torch.where(torch.from_numpy(valid)[..., None], pts, torch.tensor(-3.0))
    pts = pts.clamp(-3.0, size + 2.999)  # far outside the frame: cannot ink it anyway
    b = pts.shape[0]
    offsets = torch.arange(-2, 3, dtype=torch.float32)
    cells = pts.floor()
    px = cells[..., 0:1] + offsets  # (B, P, 5) candidate pixel columns
    py = cells[..., 1:2] + offsets  # (B, P, 5) candidate pixel rows
    dx = (px + 0.5 - pts[..., 0:1])[..., None, :]
    dy = (py + 0.5 - pts[..., 1:2])[..., :, None]
    dist = (dx * dx + dy * dy).sqrt_()  # (B, P, 5, 5)
    flat = ((py + _PAD)[..., :, None] * canvas + (px + _PAD)[..., None, :]).long()
    nearest = torch.full((b, canvas * canvas), 1e3)
    nearest.scatter_reduce_(1, flat.reshape(b, -1), dist.reshape(b, -1), reduce="amin")
    nearest = nearest.reshape(b, canvas, canvas)[:, _PAD : _PAD + size, _PAD : _PAD + size]
    ink = (torch.from_numpy(half_width.astype(np.float32))[:, None, None] + 0.5 - nearest).clamp_(0, 1)
    return (ink * 255).round_().to(torch.uint8).numpy()


@contextlib.contextmanager
def _one_thread():
    """Run torch single-threaded: the ops here are small, and on a shared, busy machine extra
    intra-op threads spin-wait for each other (measured: 4x slower with 2 threads than with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=4)
def generate(seed: int = 0, num_classes: int = NUM_CLASSES, examples_per_class: int = EXAMPLES_PER_CLASS) -> np.ndarray:
    """All images, uint8 (num_classes, examples_per_class, 1, 28, 28), ink bright on black.

    Class shapes and per-example variation come from separate child seeds, so asking for more
    examples per class does not change what the classes look like.
    """
    if int(seed) < 0 or num_classes < 1 or examples_per_class < 1:
        raise RepsimError(
            f"synthetic data needs seed >= 0 and at least one class and example, got seed={seed}, "
            f"num_classes={num_classes}, examples_per_class={examples_per_class}; fix the arguments"
        )
    class_seq, example_seq = np.random.SeedSequence([int(seed), 0x5EED]).spawn(2)
    ctrl, mask = _class_strokes(np.random.default_rng(class_seq), num_classes)

    rng = np.random.default_rng(example_seq)
    n = num_classes * examples_per_class
    ctrl = np.repeat(ctrl, examples_per_class, axis=0) + rng.normal(0, CONTROL_JITTER, size=(n, MAX_STROKES, 4, 2))
    mask = np.repeat(mask, examples_per_class, axis=0)

    # A small random affine frame per drawing, about the image centre.
    theta = rng.uniform(-MAX_ROTATION, MAX_ROTATION, n)
    scale = rng.uniform(*SCALE_RANGE, size=(n, 2))
    shear = rng.uniform(-MAX_SHEAR, MAX_SHEAR, n)
    shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=(n, 2))
    half_width = rng.uniform(*HALF_WIDTH_RANGE, n)
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shr = np.zeros((n, 2, 2))
    shr[:, 0, 0] = shr[:, 1, 1] = 1
    shr[:, 0, 1] = shear
    affine = rot @ shr * scale[:, None, :]

    t = np.linspace(0.0, 1.0, POINTS_PER_STROKE)
    points = _bezier(ctrl, t)  # (n, S, P, 2)
    centre = IMAGE_SIZE / 2
    points = points.reshape(n, MAX_STROKES * POINTS_PER_STROKE, 2)
    points = (points - centre) @ affine.transpose(0, 2, 1) + centre + shift[:, None, :]
    valid = np.repeat(mask, POINTS_PER_STROKE, axis=1)

    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    chunk = 256  # keeps temporaries ~3 MB: cache-friendly, and no page faults from fresh large buffers
    with _one_thread():
        for start in range(0, n, chunk):
            sl = slice(start, start + chunk)
            images[sl] = _render(points[sl], valid[sl], half_width[sl])
    images = images.reshape(num_classes, examples_per_class, 1, IMAGE_SIZE, IMAGE_SIZE)
    images.setflags(write=False)  # shared by the lru_cache: nobody may change it in place
    return images


def load_splits(seed: int = 0, rotate: bool = True, *, num_classes: int = NUM_CLASSES,
                examples_per_class: int = EXAMPLES_PER_CLASS,
                split_sizes: tuple[int, int, int] | None = None) -> dict:
    """Train/val/test splits of the synthetic characters; classes are i.i.d., so no shuffling.

    Smaller sets (fewer classes or examples) are handy for quick tests of the training code;
    by default the split sizes keep Omniglot's proportions (1100/100/423 of 1623).
    """
    from repsim.data.episodes import Split

    if split_sizes is None:
        if num_classes == NUM_CLASSES:
            split_sizes = SPLIT_SIZES
        else:
            train = round(num_classes * SPLIT_SIZES[0] / NUM_CLASSES)
            val = round(num_classes * SPLIT_SIZES[1] / NUM_CLASSES)
            split_sizes = (train, val, num_classes - train - val)
    if sum(split_sizes) != num_classes or min(split_sizes) < 1:
        raise RepsimError(
            f"synthetic split sizes {tuple(split_sizes)} must be positive and add up to "
            f"num_classes={num_classes}; fix split_sizes"
        )
    images = generate(int(seed), int(num_classes), int(examples_per_class))
    splits, start = {}, 0
    for name, size in zip(("train", "val", "test"), split_sizes):
        idx = np.arange(start, start + size)
        start += size
        splits[name] = Split(
            images=torch.from_numpy(images[idx]),  # fancy indexing copies: a writable tensor
            class_names=[f"synthetic{seed}/class{i:04d}" for i in idx],
            rotate=rotate,
            name=f"synthetic/{name}",
        )
    return splits
