"""Faithfulness and localisation metrics, exactly as shared/METRICS.md defines them.

Pure functions over NumPy arrays. The only model access is a callable
``probabilities(images) -> [N, classes]`` handed in by the caller; images are
``[N, H, W, 3]`` in pixel space ([0, 1], before the model's normalisation).
Every function works on one image (or one stack of per-image values) so the
caller keeps each per-image value for bootstrap confidence intervals.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np
from scipy import ndimage, sparse, stats
from scipy.sparse.linalg import spsolve

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), covering [y0:y1, x0:x1]
Probabilities = Callable[[np.ndarray], np.ndarray]
ExplanationMode = Literal["grad-cam++", "score-cam"]

#: Score-CAM's variant of the explanation image keeps this share of the map's pixels.
SCORE_CAM_KEEP = 0.5
#: Binarisation threshold, as a fraction of the map's maximum (Grad-CAM's 15 %).
LOCALISATION_FRACTION = 0.15
#: RISE's blur for the insertion substrate: ``gkern(klen=11, nsig=5)``.
RISE_KERNEL_SIZE = 11
RISE_SIGMA = 5.0
#: ROAD's neighbour weights ((dy, dx), weight): 1/6 for sides, 1/12 for diagonals.
ROAD_NEIGHBOURS: tuple[tuple[tuple[int, int], float], ...] = (
    ((-1, 0), 1 / 6), ((1, 0), 1 / 6), ((0, -1), 1 / 6), ((0, 1), 1 / 6),
    ((-1, -1), 1 / 12), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((1, 1), 1 / 12),
)  # fmt: skip
ROAD_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ROAD_NOISE = 0.01
ROAD_TIE_NOISE = 1e-4


def normalise_map(saliency: np.ndarray) -> np.ndarray:
    """ReLU, then min-max to [0, 1] per map (over the last two axes); a flat map gives 0."""
    m = np.maximum(np.asarray(saliency, dtype=np.float64), 0.0)
    lo = m.min(axis=(-2, -1), keepdims=True)
    span = m.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(span > 0, (m - lo) / np.where(span > 0, span, 1.0), 0.0)


def keep_top(saliency: np.ndarray, share: float = SCORE_CAM_KEEP) -> np.ndarray:
    """The map with everything outside its top ``share`` of pixels set to 0 (per map).

    Exactly ``ceil(share · H · W)`` pixels are kept, so the share is a share of
    pixels even when values tie; ties at the cut are broken in raster order
    (row-major, earlier pixel kept), which makes the result deterministic.
    """
    m = np.asarray(saliency, dtype=np.float64)
    h, w = m.shape[-2:]
    flat = m.reshape(*m.shape[:-2], h * w)
    k = math.ceil(share * h * w)
    order = np.argsort(-flat, axis=-1, kind="stable")
    keep = np.zeros(flat.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :k], True, axis=-1)
    return np.where(keep, flat, 0.0).reshape(m.shape)


def explanation_images(
    images: np.ndarray, saliency: np.ndarray, mode: ExplanationMode = "grad-cam++"
) -> np.ndarray:
    """The explanation image ``E`` whose confidence ``O`` Average Drop compares with ``Y``.

    ``mode="grad-cam++"`` (default; Chattopadhay et al. 2018, sec. 4.1):
    ``E = L ∘ I``, the map L (ReLU, min-max normalised to [0, 1]) times the image.
    ``mode="score-cam"`` (Wang et al. 2020, Score-CAM, sec. 5.1): the same, but
    only the top 50 % of L's pixels are kept (the rest set to 0, see
    :func:`keep_top`) before masking, so a diffuse map cannot keep the whole image.

    ``images`` are ``[N, H, W, 3]`` in pixel space ([0, 1], before the model's
    normalisation); ``saliency`` is ``[N, H, W]`` at the same resolution.
    """
    weights = normalise_map(saliency)
    if mode == "score-cam":
        weights = keep_top(weights, SCORE_CAM_KEEP)
    elif mode != "grad-cam++":
        raise ValueError(f"unknown explanation mode {mode!r}: use 'grad-cam++' or 'score-cam'")
    return images * weights[..., None]


def drop_per_image(full: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """``100 · max(0, Y − O) / Y`` for each image (the summand of Average Drop).

    ``Y = 0`` (a class the model gives no probability at all) has nothing to drop:
    its summand is defined as 0 rather than the NaN of ``0 / 0``.
    """
    full = np.asarray(full, dtype=np.float64)
    masked = np.asarray(masked, dtype=np.float64)
    lost = np.maximum(0.0, full - masked)
    return 100.0 * np.divide(lost, full, out=np.zeros_like(lost), where=full > 0)


def increase_per_image(full: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """``100 · 1[O > Y]`` for each image (the summand of Increase in Confidence)."""
    return 100.0 * (np.asarray(masked) > np.asarray(full)).astype(np.float64)


def average_drop(full: Sequence[float], masked: Sequence[float]) -> float:
    """Average Drop % = ``100/N Σ max(0, Y_i − O_i) / Y_i`` (lower is better)."""
    return float(drop_per_image(full, masked).mean())


def increase_in_confidence(full: Sequence[float], masked: Sequence[float]) -> float:
    """Increase in Confidence % = ``100/N Σ 1[O_i > Y_i]`` (higher is better)."""
    return float(increase_per_image(full, masked).mean())


def win_rate(drops_a: Sequence[float], drops_b: Sequence[float]) -> float:
    """Win % of A over B: share of images where A's drop is strictly smaller than B's."""
    a, b = np.asarray(drops_a, dtype=np.float64), np.asarray(drops_b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"win_rate needs two equal, non-empty arrays, got {a.shape} and {b.shape}")
    return float(100.0 * (a < b).mean())


def box_mask(shape: tuple[int, int], boxes: Sequence[Box]) -> np.ndarray:
    """Boolean ``[H, W]`` mask of the union of the boxes (clipped to the map)."""
    mask = np.zeros(shape, dtype=bool)
    h, w = shape
    for x0, y0, x1, y1 in boxes:
        ys = slice(max(0, int(round(y0))), min(h, int(round(y1))))
        xs = slice(max(0, int(round(x0))), min(w, int(round(x1))))
        mask[ys, xs] = True
    return mask


def loc_delta(saliency: np.ndarray, boxes: Sequence[Box], delta: float) -> float:
    """Grad-CAM++ eq. 26: ``Loc = #internal / (#box + #external)``.

    The map is normalised to [0, 1] and thresholded at ``delta`` (values above
    become 1). ``#internal`` / ``#external`` count the non-zero pixels inside /
    outside the union of the class's boxes, ``#box`` is that union's area.
    """
    on = normalise_map(saliency) > delta
    inside = box_mask(on.shape, boxes)
    area = int(inside.sum())
    if area == 0:
        raise ValueError("loc_delta needs at least one box with a non-zero area inside the map")
    internal = int((on & inside).sum())
    external = int((on & ~inside).sum())
    return internal / (area + external)


def masked_confidence(
    probabilities: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    saliency: np.ndarray,
    targets: Sequence[int],
    mode: ExplanationMode = "grad-cam++",
) -> np.ndarray:
    """``O_i``: the probability of each item's target on its explanation image
    (``mode`` as in :func:`explanation_images`; one call to ``probabilities``)."""
    probs = probabilities(explanation_images(images, saliency, mode))
    return probs[np.arange(len(targets)), np.asarray(targets)]


def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (deterministic for a seed)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)
