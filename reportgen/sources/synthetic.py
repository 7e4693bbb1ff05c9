"""A synthetic data set with exact ground truth (the small CNN trained on it, ``SmallCNN``, is
in ``reportgen/synthetic_model.py``, beside the other models).

Localisation metrics (pointing game, energy in mask, mask IoU) need images where the class
evidence is known to the pixel. Each image holds one or two objects of one class (a shape or a
textured patch, random colours) on a cluttered background that carries no class evidence;
``sample(seed, index)`` returns the image with its exact mask and boxes, the same on any machine.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..data import GENERATORS, ImageRecord, safe_id

SIZE = 112
CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "stripes", "checker")
PREFIX = "synthetic:"
EVAL_SEED = 1
EVAL_IMAGES = 120

TWO_INSTANCES = 0.25  # share of images with two objects of the same class
MIN_CONTRAST = 90.0  # RGB distance between an object's colour and the background under it
GAP_PX = 3  # free pixels between the boxes of two instances, so their masks never touch

Grid = tuple[np.ndarray, np.ndarray]  # pixel-centre coordinates (y, x), [SIZE, SIZE] each
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5


@dataclass
class Sample:
    """One image with the exact pixels and boxes of its class's object(s)."""

    rgb: np.ndarray  # uint8 [SIZE, SIZE, 3]
    mask: np.ndarray  # bool [SIZE, SIZE]
    label: int  # index into CLASSES
    boxes: list[list[int]]  # [x0, y0, x1, y1] per instance, x1/y1 exclusive


# --- drawing ------------------------------------------------------------------------------


def _local(rng: np.random.Generator, cy: float, cx: float) -> Grid:
    """Coordinates relative to (cy, cx), rotated by a random angle: shapes come in any pose."""
    angle = rng.uniform(0, 2 * np.pi)
    dy, dx = _YY - cy, _XX - cx
    c, s = np.cos(angle), np.sin(angle)
    return c * dy - s * dx, s * dy + c * dx


def _disc(rng: np.random.Generator, v: np.ndarray, u: np.ndarray, r: float) -> np.ndarray:
    aspect = rng.uniform(0.85, 1.0)
    return (u / r) ** 2 + (v / (r * aspect)) ** 2 <= 1


def _square(rng: np.random.Generator, v: np.ndarray, u: np.ndarray, r: float) -> np.ndarray:
    half = r * 0.8
    return (np.abs(u) <= half) & (np.abs(v) <= half * rng.uniform(0.85, 1.0))


def _triangle(rng: np.random.Generator, v: np.ndarray, u: np.ndarray, r: float) -> np.ndarray:
    """Roughly equilateral: corners jittered, but never so thin that its tips break apart."""
    angles = np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.25, 0.25, 3)
    corners = np.stack([np.cos(angles), np.sin(angles)], axis=1) * r * 1.1
    inside = np.ones_like(u, dtype=bool)
    for (x0, y0), (x1, y1) in zip(corners, np.roll(corners, -1, axis=0), strict=True):
        inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0  # left of each edge
    return inside


def _cross(rng: np.random.Generator, v: np.ndarray, u: np.ndarray, r: float) -> np.ndarray:
    half, arm = r * 0.95, r * rng.uniform(0.28, 0.38)
    return ((np.abs(u) <= half) & (np.abs(v) <= arm)) | ((np.abs(u) <= arm) & (np.abs(v) <= half))


def _outline(rng: np.random.Generator, v: np.ndarray, u: np.ndarray, r: float) -> np.ndarray:
    """A texture patch is a disc or a square, so its outline never tells its class."""
    return _disc(rng, v, u, r) if rng.random() < 0.5 else _square(rng, v, u, r * 1.1)


def _stripes(rng: np.random.Generator, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    period = rng.uniform(5.0, 9.0)
    return (u / period + rng.random()) % 1 < 0.5


def _checker(rng: np.random.Generator, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    cell = rng.uniform(3.5, 6.5)
    return (np.floor(u / cell + rng.random()) + np.floor(v / cell + rng.random())) % 2 == 0


Shape = Callable[[np.random.Generator, np.ndarray, np.ndarray, float], np.ndarray]
SHAPES: dict[str, Shape] = {
    "disc": _disc,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "stripes": _outline,
    "checker": _outline,
}
TEXTURES = {"stripes": _stripes, "checker": _checker}


def _background(rng: np.random.Generator) -> np.ndarray:
    """A smooth gradient between two random colours: brightness varies, nothing is a cue."""
    c0, c1 = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * _XX + np.sin(angle) * _YY) / SIZE
    t = (t - t.min()) / (t.max() - t.min())
    return c0 + (c1 - c0) * t[..., None]


def _window(x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
    """The pixels a clutter item can touch: drawing there only keeps generation fast."""
    ys = slice(max(int(y0) - 1, 0), max(min(int(y1) + 2, SIZE), 0))
    xs = slice(max(int(x0) - 1, 0), max(min(int(x1) + 2, SIZE), 0))
    return ys, xs


def _line(rng: np.random.Generator, rgb: np.ndarray) -> None:
    (x0, y0), (x1, y1) = rng.uniform(0, SIZE, (2, 2))
    width, colour = rng.uniform(0.5, 1.2), rng.uniform(0, 255, 3)
    at = _window(min(x0, x1) - 2, min(y0, y1) - 2, max(x0, x1) + 2, max(y0, y1) + 2)
    yy, xx = _YY[at], _XX[at]
    length = max(np.hypot(x1 - x0, y1 - y0), 1.0)
    distance = np.abs((x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0)) / length
    along = ((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / length**2
    rgb[at][(distance <= width) & (along >= 0) & (along <= 1)] = colour


def _ring(rng: np.random.Generator, rgb: np.ndarray) -> None:
    cx, cy = rng.uniform(0, SIZE, 2)
    radius, width, colour = rng.uniform(3, 8), rng.uniform(0.6, 1.2), rng.uniform(0, 255, 3)
    at = _window(cx - radius - 2, cy - radius - 2, cx + radius + 2, cy + radius + 2)
    rgb[at][np.abs(np.hypot(_XX[at] - cx, _YY[at] - cy) - radius) <= width] = colour


def _blob(rng: np.random.Generator, rgb: np.ndarray, low: float, high: float) -> None:
    """A lumpy blob: its radius wobbles by 30-70 %, so it is never a disc."""
    cx, cy = rng.uniform(0, SIZE, 2)
    radius, colour = rng.uniform(low, high), rng.uniform(0, 255, 3)
    amplitudes, phases = rng.uniform(0.15, 0.35, 2), rng.uniform(0, 2 * np.pi, 2)
    reach = radius * 1.7 + 1
    at = _window(cx - reach, cy - reach, cx + reach, cy + reach)
    dy, dx = _YY[at] - cy, _XX[at] - cx
    theta = np.arctan2(dy, dx)
    wobble = sum(
        a * np.cos(k * theta + p) for a, p, k in zip(amplitudes, phases, (2, 3), strict=True)
    )
    rgb[at][np.hypot(dx, dy) <= radius * (1 + wobble)] = colour


def _clutter(rng: np.random.Generator, rgb: np.ndarray) -> None:
    """Thin lines, small rings and irregular blobs: edges, curves and corners that belong to
    no class, so a net must find the object rather than any contrast."""
    for _ in range(rng.integers(3, 8)):
        _line(rng, rgb)
    for _ in range(rng.integers(2, 6)):
        _ring(rng, rgb)
    for _ in range(rng.integers(2, 6)):
        _blob(rng, rgb, 3, 6)
    if rng.random() < 0.5:  # a medium-sized one, about a third of the smallest object
        _blob(rng, rgb, 7, 12)


def _colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour that stands out from the background under the object."""
    best, best_distance = under, -1.0
    for _ in range(30):
        colour = rng.uniform(0, 255, 3)
        distance = float(np.linalg.norm(colour - under))
        if distance >= MIN_CONTRAST:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def _box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _apart(a: list[int], b: list[int]) -> bool:
    """Boxes at least GAP_PX apart on one axis, so the two masks are separate components."""
    apart_x = a[2] + GAP_PX <= b[0] or b[2] + GAP_PX <= a[0]
    apart_y = a[3] + GAP_PX <= b[1] or b[3] + GAP_PX <= a[1]
    return apart_x or apart_y


def _shape(rng: np.random.Generator, name: str, size: float) -> tuple[np.ndarray, Grid]:
    """The object's mask drawn at the image centre, and its local coordinates for a texture."""
    middle = SIZE / 2 + rng.uniform(-0.5, 0.5, 2)
    v, u = _local(rng, *middle)
    return SHAPES[name](rng, v, u, size * SIZE / 2), (v, u)


def _place(
    rng: np.random.Generator, drawn: np.ndarray, taken: list[list[int]]
) -> tuple[int, int] | None:
    """A uniformly random whole-pixel shift that keeps the object inside the image (1 px
    margin) and apart from the instances already placed; None if none is found."""
    x0, y0, x1, y1 = _box(drawn)
    for _ in range(100):
        dx = int(rng.integers(1 - x0, SIZE - x1))
        dy = int(rng.integers(1 - y0, SIZE - y1))
        box = [x0 + dx, y0 + dy, x1 + dx, y1 + dy]
        if all(_apart(box, other) for other in taken):
            return dy, dx
    return None


def sample(seed: int, index: int) -> Sample:
    """Image ``index`` of the set ``seed``: the same arrays on any machine for the same args."""
    rng = np.random.default_rng([seed, index])
    label = index % len(CLASSES)  # balanced: every run of 6 indices holds each class once
    name = CLASSES[label]
    rgb = _background(rng)
    _clutter(rng, rgb)
    instances = 2 if rng.random() < TWO_INSTANCES else 1
    low, high = (0.18, 0.30) if instances == 2 else (0.20, 0.40)
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    boxes: list[list[int]] = []
    for _ in range(instances):
        drawn, (v, u) = _shape(rng, name, rng.uniform(low, high))
        shift = _place(rng, drawn, boxes)
        if shift is None:  # no room left for a second instance: keep one
            break
        dy, dx = shift
        moved = np.roll(drawn, (dy, dx), axis=(0, 1))  # no wrap: _place kept it inside
        under = rgb[moved].mean(axis=0)
        if name in TEXTURES:
            pattern = np.roll(TEXTURES[name](rng, v, u), (dy, dx), axis=(0, 1))
            first = _colour(rng, under)
            second = _colour(rng, first)  # the two texture colours differ as much as object/bg
            rgb[moved & pattern] = first
            rgb[moved & ~pattern] = second
        else:
            rgb[moved] = _colour(rng, under)
        mask |= moved
        boxes.append(_box(moved))
    rgb = rgb + rng.normal(0, 6, rgb.shape)  # sensor-like noise over everything
    return Sample(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mask, label, boxes)


def parse(source: str) -> tuple[int, int]:
    """``"synthetic:1:17"`` -> ``(1, 17)``."""
    parts = source[len(PREFIX) :].split(":") if source.startswith(PREFIX) else []
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(
            f"'{source}' is not a synthetic image source; expected '{PREFIX}<seed>:<index>' "
            f"with two non-negative integers, e.g. '{PREFIX}{EVAL_SEED}:0'"
        )
    return int(parts[0]), int(parts[1])


def render(source: str) -> np.ndarray:
    """The image of a ``synthetic:<seed>:<index>`` source."""
    return sample(*parse(source)).rgb


def mask(source: str) -> np.ndarray:
    """The exact class-evidence mask of a ``synthetic:<seed>:<index>`` source."""
    return sample(*parse(source)).mask


def records(seed: int = EVAL_SEED, count: int = EVAL_IMAGES) -> list[ImageRecord]:
    """One record per image (``--data synthetic``): its class, its boxes, and its own source
    as the mask's, so the run scores the exact mask."""
    taken: set[str] = set()
    out = []
    for i in range(count):
        source = f"{PREFIX}{seed}:{i}"
        drawn = sample(seed, i)
        name, instances = CLASSES[drawn.label], len(drawn.boxes)
        out.append(
            ImageRecord(
                id=safe_id(
                    f"synthetic-{i:03d}-{name}" + (f"-x{instances}" if instances > 1 else ""), taken
                ),
                source=source,
                label=name + (f" ×{instances}" if instances > 1 else ""),
                classes=[drawn.label],
                boxes=[list(map(float, box)) for box in drawn.boxes],
                mask=source,
                credit=f"drawn by reportgen.synthetic (seed {seed}, image {i}); "
                "see datasets/synthetic.md",
            )
        )
    return out


GENERATORS[PREFIX] = sys.modules[__name__]  # data.load_photo draws "synthetic:…" sources here
