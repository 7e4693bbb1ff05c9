"""Faithfulness and localisation metrics, exactly as shared/METRICS.md defines them.

Pure functions over NumPy arrays. The only model access is a callable
``probabilities(images) -> [N, classes]`` handed in by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), covering [y0:y1, x0:x1]


def normalise_map(saliency: np.ndarray) -> np.ndarray:
    """ReLU, then min-max to [0, 1] per map (over the last two axes); a flat map gives 0."""
    m = np.maximum(np.asarray(saliency, dtype=np.float64), 0.0)
    lo = m.min(axis=(-2, -1), keepdims=True)
    span = m.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(span > 0, (m - lo) / np.where(span > 0, span, 1.0), 0.0)


def explanation_images(images: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """Grad-CAM++ sec. 4.1: ``E = L ∘ I``, the normalised map times the image.

    ``images`` are ``[N, H, W, 3]`` in pixel space ([0, 1], before the model's
    normalisation); ``saliency`` is ``[N, H, W]`` at the same resolution.
    """
    return images * normalise_map(saliency)[..., None]


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
) -> np.ndarray:
    """``O_i``: the probability of each item's target on its explanation image."""
    probs = probabilities(explanation_images(images, saliency))
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
