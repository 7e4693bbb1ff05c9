"""Average Drop, Increase in Confidence, win rate and the explanation images they score:
the confidence-based faithfulness metrics of Grad-CAM++ and Score-CAM (one model call per
image on the map-masked image, compared with the full image's confidence)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

ExplanationMode = Literal["grad-cam++", "score-cam"]

#: Score-CAM's variant of the explanation image keeps this share of the map's pixels.
SCORE_CAM_KEEP = 0.5


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
    if k == 0:
        return np.zeros_like(m)
    # the k-th largest value by partition (a sort of every pixel took 10x as long); every
    # pixel above it is kept, and as many of those equal to it as fill k, earliest first
    cut = np.partition(flat, h * w - k, axis=-1)[..., h * w - k, None]
    above, at = flat > cut, flat == cut
    room = k - above.sum(-1, keepdims=True)
    keep = above | (at & (np.cumsum(at, axis=-1) <= room))
    return np.where(keep, flat, 0.0).reshape(m.shape)


def explanation_images(
    images: np.ndarray, saliency: np.ndarray, mode: ExplanationMode = "grad-cam++"
) -> np.ndarray:
    """The explanation image ``E`` whose confidence ``O`` Average Drop compares with ``Y``.

    ``mode="grad-cam++"`` (default; Chattopadhay et al. 2018, sec. 4.1):
    ``E = L ∘ I``, the map L (ReLU, min-max normalised to [0, 1]) times the image.
    ``mode="score-cam"`` (Wang et al. 2020, Score-CAM's faithfulness evaluation):
    the same, but only the top 50 % of L's pixels are kept (the rest set to 0, see
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
