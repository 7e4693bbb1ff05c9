"""RISE's deletion / insertion curves: the blur substrate, the pixel order and the curve plans
that let a caller batch many curves into few model calls."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
from scipy import ndimage

from .localisation import _finite_map

Probabilities = Callable[[np.ndarray], np.ndarray]

#: RISE's blur for the insertion substrate: ``gkern(klen=11, nsig=5)``.
RISE_KERNEL_SIZE = 11
RISE_SIGMA = 5.0


class Curve(NamedTuple):
    """A perturbation curve: the target's probability at each removed/inserted share."""

    values: np.ndarray  # target probability per step, start and end included
    fractions: np.ndarray  # share of pixels changed at each step, 0 ... 1
    auc: float  # trapezoid rule over ``fractions``


def rise_kernel(size: int = RISE_KERNEL_SIZE, sigma: float = RISE_SIGMA) -> np.ndarray:
    """RISE's ``gkern(klen, nsig)``: a ``size × size`` Dirac smoothed by
    ``scipy.ndimage.gaussian_filter(·, sigma)`` (its default reflect border, so the
    tails fold back in and the kernel sums to 1)."""
    dirac = np.zeros((size, size))
    dirac[size // 2, size // 2] = 1.0
    return ndimage.gaussian_filter(dirac, sigma)


def rise_blur(
    image: np.ndarray, size: int = RISE_KERNEL_SIZE, sigma: float = RISE_SIGMA
) -> np.ndarray:
    """RISE's insertion substrate: each channel convolved with :func:`rise_kernel`
    (11 × 11, σ = 5), zero padding as RISE's ``conv2d(padding=klen // 2)``.

    RISE pads in the normalised input space; here the image is in pixel space, so
    the padding is black and the border darkens a little.
    """
    img = np.asarray(image, dtype=np.float64)
    kernel = rise_kernel(size, sigma)
    return np.stack(
        [
            ndimage.correlate(img[..., c], kernel, mode="constant", cval=0.0)
            for c in range(img.shape[-1])
        ],
        axis=-1,
    )


def salience_order(saliency: np.ndarray) -> np.ndarray:
    """Flat pixel indices, most salient first; ties in raster order (a stable sort)."""
    return np.argsort(-_finite_map(saliency).ravel(), kind="stable")


def salience_rank(saliency: np.ndarray) -> np.ndarray:
    """Each pixel's place in :func:`salience_order`, ``[H, W]``: what a curve plan needs of
    the map (both curves of a map share it)."""
    pixels = np.size(saliency)
    rank = np.empty(pixels, dtype=np.int64)
    rank[salience_order(saliency)] = np.arange(pixels)
    return rank.reshape(np.shape(saliency))


def substrate_image(image: np.ndarray, substrate, mode: str) -> np.ndarray:
    """What a curve changes pixels to: by default black (deletion) or RISE's blur of the
    image (insertion)."""
    if substrate is None:
        substrate = "zero" if mode == "deletion" else "blur"
    if isinstance(substrate, str):
        if substrate == "zero":
            return np.zeros_like(image)
        if substrate == "blur":
            return rise_blur(image).astype(image.dtype)
        raise ValueError(f"unknown substrate {substrate!r}: use 'zero', 'blur' or values")
    return np.broadcast_to(np.asarray(substrate, dtype=image.dtype), image.shape)


def _target_column(probs: np.ndarray, rows: int, target: int) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] != rows:
        raise ValueError(f"probabilities returned {probs.shape} for {rows} images")
    return probs[:, target].astype(np.float64)


class CurvePlan(NamedTuple):
    """The images of one insertion / deletion curve, built on demand: point ``i`` has the
    ``changed[i]`` most salient pixels taken from ``finish``, the rest from ``start``.
    Point 0 is ``start`` and the last is ``finish``, the same for every map of an image,
    so a caller scoring many maps can compute those two once."""

    start: np.ndarray  # [H, W, C]
    finish: np.ndarray  # [H, W, C]
    rank: np.ndarray  # [H, W]: each pixel's place in the salience order
    changed: np.ndarray  # pixels changed at each point, 0 ... H·W

    def images(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Points ``lo`` .. ``hi - 1`` of the curve as ``[n, H, W, C]``."""
        counts = self.changed[lo:hi]
        swap = self.rank[None] < counts[:, None, None]  # [n, H, W]: pixels changed by then
        return np.where(swap[..., None], self.finish[None], self.start[None])

    def curve(self, values: np.ndarray) -> Curve:
        """The curve from the target's probability at every point."""
        values = np.asarray(values, dtype=np.float64)
        fractions = self.changed / self.rank.size
        return Curve(values, fractions, float(np.trapezoid(values, fractions)))


def curve_step(shape: tuple[int, int], steps: int) -> int:
    """Pixels per step for ``steps`` steps over an ``H × W`` map (rounded up, so the curve
    has ``steps`` steps, the last possibly partial)."""
    return -(-shape[0] * shape[1] // steps)


def curve_plan(
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    mode: Literal["deletion", "insertion"],
    step: int | None = None,
    substrate: str | float | np.ndarray | None = None,
    spacing: float = 1.0,
    rank: np.ndarray | None = None,
) -> CurvePlan:
    """The points of :func:`insertion_deletion`'s curve, without running the model.

    ``spacing`` places the curve's ``n`` steps: point ``i`` has changed ``n · step ·
    (i / n) ** spacing`` pixels (rounded up, at most all of them). 1: every step
    changes ``step`` pixels (RISE's curve); above 1 the points crowd where the curves move
    most, the first pixels, so a curve of few steps follows them more closely. ``rank``:
    the map's :func:`salience_rank` when the caller has it (both curves of a map share it;
    made here otherwise)."""
    img = np.asarray(image)
    if not np.issubdtype(img.dtype, np.floating):
        # float32 holds every 8- and 16-bit value exactly, and a curve's images take half
        # the memory traffic of float64 (thousands of them per run)
        img = img.astype(np.float32)
    if img.ndim != 3:
        raise ValueError(f"an image must be [H, W, C], got shape {img.shape}")
    h, w = img.shape[:2]
    if np.shape(saliency) != (h, w):
        raise ValueError(f"map {np.shape(saliency)} and image {img.shape[:2]} differ in size")
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"unknown mode {mode!r}: use 'deletion' or 'insertion'")
    pixels = h * w
    step = math.ceil(pixels / 100) if step is None else int(step)
    if step < 1:
        raise ValueError("step must be at least one pixel")
    base = substrate_image(img, substrate, mode)
    start, finish = (img, base) if mode == "deletion" else (base, img)
    rank = salience_rank(saliency) if rank is None else rank
    if not spacing > 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    n = math.ceil(pixels / step)
    i = np.arange(n + 1)
    if spacing == 1:  # integers throughout: the 100-step curve is exactly RISE's
        changed = np.minimum(i * step, pixels)
    else:
        changed = np.minimum(np.ceil(step * n * (i / n) ** spacing).astype(np.int64), pixels)
    return CurvePlan(start, finish, rank, changed)


def insertion_deletion(
    probabilities: Probabilities,
    image: np.ndarray,
    saliency: np.ndarray,
    target: int,
    *,
    mode: Literal["deletion", "insertion"],
    step: int | None = None,
    substrate: str | float | np.ndarray | None = None,
    batch_size: int | None = None,
    spacing: float = 1.0,
) -> Curve:
    """RISE's deletion / insertion game (Petsiuk et al. 2018, ``CausalMetric``).

    Pixels are ordered by saliency, most salient first (:func:`salience_order`).
    Deletion starts from the image and replaces ``step`` pixels per step, in that
    order, by the substrate (default ``"zero"``: 0 in pixel space, black; RISE's own
    zero is in normalised space, i.e. the dataset mean colour: pass that as
    ``substrate`` to match it). Insertion starts from the substrate
    (default ``"blur"``, :func:`rise_blur`, 11 × 11, σ = 5) and puts the original
    pixels back in the same order. ``substrate`` may also be a number or an array
    broadcastable to the image. The curve holds the target's probability at the
    start, after each step and at the end (``ceil(H·W / step) + 1`` values; the
    last step may be partial); AUC is the trapezoid rule over the share of pixels
    changed, ``x = min(i · step, H·W) / (H·W)`` (equal to RISE's ``auc`` when
    ``step`` divides H·W). Deletion: lower is better; insertion: higher.

    ``step`` defaults to 1 % of the pixels (rounded up). All steps of the image go
    to ``probabilities`` in one call, or in calls of at most ``batch_size`` images
    when given (to bound memory). ``spacing`` above 1 crowds the steps at the start
    (:func:`curve_plan`), which gives the same points without a model, for callers that
    batch many curves together.
    """
    plan = curve_plan(image, saliency, mode=mode, step=step, substrate=substrate, spacing=spacing)
    points = len(plan.changed)
    chunk = points if batch_size is None else int(batch_size)
    if chunk < 1:
        raise ValueError("batch_size must be at least 1")
    values = []
    for lo in range(0, points, chunk):
        hi = min(lo + chunk, points)
        values.append(_target_column(probabilities(plan.images(lo, hi)), hi - lo, target))
    return plan.curve(np.concatenate(values))
