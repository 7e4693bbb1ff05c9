"""Localisation metrics: how well a map points at the ground-truth boxes or mask (Loc_delta,
the pointing games, relevance mass / rank, box localisation, mask IoU), with the box
rasterisation and map checks they share (the perturbation curves reuse the latter)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage

from .faithfulness import normalise_map

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), covering [y0:y1, x0:x1]

#: Binarisation threshold, as a fraction of the map's maximum (Grad-CAM's 15 %).
LOCALISATION_FRACTION = 0.15


def box_mask(shape: tuple[int, int], boxes: Sequence[Box]) -> np.ndarray:
    """Boolean ``[H, W]`` mask of the union of the boxes (clipped to the map)."""
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask[_box_slices(shape, box)] = True
    return mask


def _box_slices(shape: tuple[int, int], box: Box) -> tuple[slice, slice]:
    """The rows and columns of the map a box covers (rounded, clipped; possibly empty)."""
    h, w = shape
    x0, y0, x1, y1 = box
    # ends clamped at 0 too: a negative slice end would count from the far side
    ys = slice(max(0, int(round(y0))), min(h, max(0, int(round(y1)))))
    xs = slice(max(0, int(round(x0))), min(w, max(0, int(round(x1)))))
    return ys, xs


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


def _finite_map(saliency: np.ndarray) -> np.ndarray:
    """The map as a 2-D float array; NaN or inf is an error, never a silent score."""
    m = np.asarray(saliency, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"a saliency map must be [H, W], got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("the saliency map holds NaN or inf")
    return m


def _class_region(shape: tuple[int, int], boxes: Sequence[Box]) -> np.ndarray:
    """The union of the class's boxes, which must cover at least one pixel of the map."""
    region = box_mask(shape, boxes)
    if not region.any():
        raise ValueError("needs at least one box with a non-zero area inside the map")
    return region


def pointing_game_hit(
    saliency: np.ndarray,
    boxes: Sequence[Box],
    tolerance: float = 15,
    ties: Literal["all", "first"] = "all",
) -> bool:
    """Pointing game (Zhang et al. 2016, "Top-down Neural Attention by Excitation
    Backprop"; TorchRay's ``PointingGame.evaluate``): a hit when the map's maximum
    lies within ``tolerance`` px of a box of the class.

    "Within" is TorchRay's rule: some box pixel lies at a Euclidean distance
    strictly below ``tolerance`` from the maximum (``(du² + dv²) < tolerance²``),
    so a point exactly ``tolerance`` px away is a miss. Boxes are rasterised
    with :func:`box_mask` (their union).

    Ties (neither paper defines them): with ``ties="all"`` (default) every pixel
    holding the maximum value must be within tolerance, so the answer does not
    depend on pixel order and a flat map cannot score by luck. A constant map
    (an all-zero map included) has every pixel as a maximum: it hits only when
    the whole image is within tolerance of a box (a box covering the image, or
    an image smaller than the tolerance), where any point would hit.
    ``ties="first"`` takes the first maximum in raster order (``np.argmax``, what
    a plain argmax-based TorchRay run does). The map is not rectified: only the
    position of its maximum matters.
    """
    m = _finite_map(saliency)
    if ties == "all":
        points = np.argwhere(m == m.max())
    elif ties == "first":
        points = np.argwhere(np.arange(m.size).reshape(m.shape) == np.argmax(m))
    else:
        raise ValueError(f"unknown ties rule {ties!r}: use 'all' or 'first'")
    # the distance from each maximum to the nearest pixel of the boxes' raster (box_mask's),
    # box by box: what a distance transform of the whole map gives there, without one
    nearest = np.full(len(points), np.inf)
    for box in boxes:
        ys, xs = _box_slices(m.shape, box)
        if ys.stop <= ys.start or xs.stop <= xs.start:
            continue  # no pixel inside the map
        top, bottom, left, right = ys.start, ys.stop - 1, xs.start, xs.stop - 1
        dy = np.maximum(np.maximum(top - points[:, 0], points[:, 0] - bottom), 0)
        dx = np.maximum(np.maximum(left - points[:, 1], points[:, 1] - right), 0)
        nearest = np.minimum(nearest, np.sqrt((dy * dy + dx * dx).astype(np.float64)))
    if np.isinf(nearest).all():
        raise ValueError("needs at least one box with a non-zero area inside the map")
    return bool((nearest < tolerance).all())


def pointing_game(hits: Sequence[bool], classes: Sequence[int | str]) -> float:
    """Pointing-game accuracy % (Zhang et al. 2016; TorchRay): the hit rate of each
    class (over its image-class pairs), then the mean over the classes present.

    ``hits[i]`` and ``classes[i]`` describe one image-class pair. Percent, like
    the published numbers (e.g. TorchRay VOC07 VGG16 Grad-CAM 86.6).
    """
    h = np.asarray(hits, dtype=bool)
    c = np.asarray(classes)
    if h.shape != c.shape or h.size == 0:
        raise ValueError(
            f"pointing_game needs equal, non-empty hits and classes: {h.shape}, {c.shape}"
        )
    per_class = [h[c == k].mean() for k in np.unique(c)]
    return float(100.0 * np.mean(per_class))


def energy_pointing_game(saliency: np.ndarray, boxes: Sequence[Box]) -> float:
    """Energy-based pointing game (Wang et al. 2020, Score-CAM): the share
    ``Σ_{in boxes} L / Σ L`` of the rectified map ``L = max(0, saliency)`` that
    falls inside the union of the class's boxes, in [0, 1].

    The map is only rectified, not min-max normalised (scaling does not change the
    share; subtracting the minimum would). A map with no positive value (all zero)
    has no energy to place: its share is defined as 0.0, the worst score, rather
    than NaN. A box covering the image gives 1.0 for any non-zero map.
    """
    m = _finite_map(saliency)
    return _positive_share(m, _class_region(m.shape, boxes))


def _positive_share(m: np.ndarray, region: np.ndarray) -> float:
    """``Σ_region max(0, m) / Σ max(0, m)``; 0.0 (the worst) for a map with no positive value."""
    m = np.maximum(m, 0.0)
    total = m.sum()
    return float(m[region].sum() / total) if total > 0 else 0.0


def _truth(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    truth = np.asarray(mask, dtype=bool)
    if truth.shape != shape:
        raise ValueError(f"mask {truth.shape} and map {shape} differ in shape")
    if not truth.any():
        raise ValueError("needs a non-empty ground-truth mask")
    return truth


def relevance_mass(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Relevance mass accuracy (Arras et al. 2022, CLEVR-XAI): the share of the map's
    positive sum inside the exact ground-truth mask, in [0, 1] (the energy pointing game
    with a mask for the boxes). No positive value: 0.0."""
    m = _finite_map(saliency)
    return _positive_share(m, _truth(mask, m.shape))


def relevance_rank(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Relevance rank accuracy (Arras et al. 2022): of the K highest pixels of the map
    (K = the mask's size), the share inside the mask.

    Pixels tied with the K-th value share the remaining places equally, so the score never
    depends on an arbitrary order: a constant map scores K / N, what a random map expects.
    """
    m = _finite_map(saliency)
    truth = _truth(mask, m.shape)
    k = int(truth.sum())
    kth = np.partition(m.ravel(), m.size - k)[m.size - k]
    above, tied = m > kth, m == kth
    share = (k - int(above.sum())) / int(tied.sum())  # of each tied pixel
    return float((above & truth).sum() + share * (tied & truth).sum()) / k


def binarise(saliency: np.ndarray, fraction: float = LOCALISATION_FRACTION) -> np.ndarray:
    """Pixels of the rectified map strictly above ``fraction`` of its maximum.

    A map with no positive value selects nothing; a constant positive map selects
    everything.
    """
    m = np.maximum(_finite_map(saliency), 0.0)
    top = m.max()
    return m > fraction * top if top > 0 else np.zeros(m.shape, dtype=bool)


def largest_component_box(
    saliency: np.ndarray, fraction: float = LOCALISATION_FRACTION
) -> Box | None:
    """The box ``(x0, y0, x1, y1)`` (end exclusive) around the largest 8-connected
    component of :func:`binarise`'s mask; ``None`` when nothing is selected.

    8-connectivity as MATLAB's ``bwlabel`` in CAM's code; equal sizes go to the
    component met first in raster order.
    """
    labels, count = ndimage.label(binarise(saliency, fraction), structure=np.ones((3, 3)))
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    ys, xs = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


def box_localisation(
    saliency: np.ndarray, boxes: Sequence[Box], fraction: float = LOCALISATION_FRACTION
) -> tuple[float, bool]:
    """Box localisation, CAM / Grad-CAM protocol (Zhou et al. 2016; Selvaraju et al.
    2017): binarise at ``fraction`` of the map's maximum (default 0.15, Grad-CAM's
    15 %; CAM used 0.2), box the largest connected component, and return the best
    IoU with a ground-truth box and whether it is a hit (IoU ≥ 0.5).

    IoU is counted in pixels, boxes rasterised as in :func:`box_mask`. A map that
    selects nothing (all zero or all negative) has no box: ``(0.0, False)``. A
    constant positive map selects the whole image, so its box is the image.
    Top-1 localisation also needs the class to be right: that is the caller's.
    """
    m = _finite_map(saliency)
    _class_region(m.shape, boxes)
    found = largest_component_box(m, fraction)
    if found is None:
        return 0.0, False
    predicted = box_mask(m.shape, [found])
    best = max(_iou(predicted, box_mask(m.shape, [box])) for box in boxes)
    return best, best >= 0.5


def mask_iou(
    saliency: np.ndarray, mask: np.ndarray, threshold: float = LOCALISATION_FRACTION
) -> float:
    """Mask IoU: ``|B ∩ M| / |B ∪ M|`` of the binarised map B with an exact
    ground-truth mask M (reportgen's addition to the CAM / Grad-CAM protocol for
    synthetic data with pixel-exact masks; README: Metrics).

    The map is binarised as in box localisation (:func:`binarise`: above
    ``threshold`` of its maximum, default 0.15), so both localisation numbers see
    the same region. An empty binarisation scores 0.0; an empty mask is an error.
    """
    m = _finite_map(saliency)
    return _iou(binarise(m, threshold), _truth(mask, m.shape))
