"""Faithfulness and localisation metrics, exactly as their papers define them (README: Metrics).

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
import pandas as pd
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


def group_mean(values: Sequence[float], groups: Sequence[object]) -> float:
    """The mean over groups of each group's mean: the pointing game's "accuracy per class,
    then mean over classes" (Zhang et al. 2016), so a class with many images weighs no more."""
    frame = pd.DataFrame({"v": np.asarray(values, dtype=np.float64), "g": list(groups)})
    return float(frame.groupby("g").v.mean().mean())


def bootstrap_ci(
    values: Sequence[float],
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    groups: Sequence[object] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (deterministic for a seed); with
    ``groups``, of :func:`group_mean`, recomputed in each resample of the images (so it stays
    within the values' range, which weighting the values would not)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, v.size, size=(resamples, v.size))
    if groups is None:
        means = v[picks].mean(axis=1)
    else:
        codes = pd.factorize(pd.Series(list(groups)))[0]
        k = codes.max() + 1
        means = np.empty(resamples)
        for r, pick in enumerate(picks):
            counts = np.bincount(codes[pick], minlength=k)
            sums = np.bincount(codes[pick], weights=v[pick], minlength=k)
            means[r] = (sums[counts > 0] / counts[counts > 0]).mean()
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- localisation


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


# --------------------------------------------------------------------------- deletion / insertion


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


def curve_plan(
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    mode: Literal["deletion", "insertion"],
    step: int | None = None,
    substrate: str | float | np.ndarray | None = None,
) -> CurvePlan:
    """The points of :func:`insertion_deletion`'s curve, without running the model."""
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
    rank = np.empty(pixels, dtype=np.int64)
    rank[salience_order(saliency)] = np.arange(pixels)
    changed = np.minimum(np.arange(math.ceil(pixels / step) + 1) * step, pixels)
    return CurvePlan(start, finish, rank.reshape(h, w), changed)


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
    when given (to bound memory). :func:`curve_plan` gives the same points without a
    model, for callers that batch many curves together.
    """
    plan = curve_plan(image, saliency, mode=mode, step=step, substrate=substrate)
    points = len(plan.changed)
    chunk = points if batch_size is None else int(batch_size)
    if chunk < 1:
        raise ValueError("batch_size must be at least 1")
    values = []
    for lo in range(0, points, chunk):
        hi = min(lo + chunk, points)
        values.append(_target_column(probabilities(plan.images(lo, hi)), hi - lo, target))
    return plan.curve(np.concatenate(values))


# --------------------------------------------------------------------------- ROAD


class RoadCurve(NamedTuple):
    """ROAD at each removal fraction: the target's probability and whether it is top-1."""

    values: np.ndarray  # target probability per fraction
    correct: np.ndarray  # argmax == target per fraction (ROAD's accuracy, per image)
    fractions: np.ndarray  # share of pixels removed
    mean: float  # mean probability over the fractions (rectangle-rule area per unit x)


def noisy_linear_impute(
    image: np.ndarray,
    removed: np.ndarray,
    *,
    noise: float = ROAD_NOISE,
    seed: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """ROAD's noisy linear imputation (Rong et al. 2022, ``NoisyLinearImputer``).

    Every removed pixel is the weighted mean of its in-image 8 neighbours (1/6 for
    sides, 1/12 for diagonals, divided by the weights of the neighbours that exist,
    so borders renormalise), removed neighbours being unknowns too: one sparse
    linear system for all removed pixels and channels, solved with
    ``scipy.sparse.linalg.spsolve``. Then ``noise · N(0, 1)`` is added to the
    imputed values only (0.01 on [0, 1] images; no clipping, as ROAD). Kept pixels
    are returned unchanged. Removing every pixel leaves nothing to impute from and
    is an error.
    """
    img = np.asarray(image, dtype=np.float64)
    flat_image = img.reshape(img.shape[0] * img.shape[1], -1)
    gone = np.asarray(removed, dtype=bool)
    if gone.shape != img.shape[:2]:
        raise ValueError(f"removed {gone.shape} and image {img.shape[:2]} differ in size")
    h, w = gone.shape
    flat_gone = gone.ravel()
    unknown = np.flatnonzero(flat_gone)
    n = unknown.size
    if n == 0:
        return img.copy()
    if n == h * w:
        raise ValueError("cannot impute an image whose every pixel is removed")
    variable = np.full(h * w, -1, dtype=np.int64)
    variable[unknown] = np.arange(n)
    ys, xs = np.divmod(unknown, w)
    diagonal = np.zeros(n)
    rhs = np.zeros((n, flat_image.shape[1]))
    rows, cols, vals = [], [], []
    for (dy, dx), weight in ROAD_NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        neighbour = np.where(inside, ny * w + nx, 0)
        diagonal[inside] += weight
        known = inside & ~flat_gone[neighbour]
        rhs[known] += weight * flat_image[neighbour[known]]
        coupled = inside & flat_gone[neighbour]
        rows.append(np.flatnonzero(coupled))
        cols.append(variable[neighbour[coupled]])
        vals.append(np.full(int(coupled.sum()), -weight))
    # diag(Σ w) x_u − Σ_{removed v} w_v x_v = Σ_{kept v} w_v I_v
    system = sparse.coo_matrix(
        (np.concatenate([diagonal, *vals]),
         (np.concatenate([np.arange(n), *rows]), np.concatenate([np.arange(n), *cols]))),
        shape=(n, n),
    ).tocsc()  # fmt: skip
    solved = np.asarray(spsolve(system, rhs)).reshape(n, -1)
    rng = np.random.default_rng(seed)
    out = flat_image.copy()
    out[unknown] = solved + noise * rng.standard_normal(solved.shape)
    return out.reshape(img.shape)


def road_order(saliency: np.ndarray, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """ROAD's pixel order, most relevant first: the map summed over channels (when
    ``[H, W, C]``), min-max normalised (ROAD's ``normalize_map``, ε = 1e-5), plus
    ``1e-4 · N(0, 1)`` to break ties (seeded)."""
    m = np.asarray(saliency, dtype=np.float64)
    if m.ndim == 3:
        m = m.sum(axis=-1)
    m = _finite_map(m)
    m = (m - m.min()) / (m.max() - m.min() + 1e-5)
    m = m + ROAD_TIE_NOISE * np.random.default_rng(seed).standard_normal(m.shape)
    return np.argsort(-m.ravel(), kind="stable")


def road(
    probabilities: Probabilities,
    image: np.ndarray,
    saliency: np.ndarray,
    target: int,
    *,
    order: Literal["morf", "lerf"] = "morf",
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = ROAD_NOISE,
    seed: int = 0,
) -> RoadCurve:
    """ROAD, "Remove And Debias" (Rong et al. 2022, "A Consistent and Efficient
    Evaluation Strategy for Attribution Methods"), without retraining.

    At each removal fraction p the ``floor(p · H·W)`` pixels are removed, the most
    relevant ones (``order="morf"``, lower is better) or the least relevant ones
    (``"lerf"``, higher is better) by :func:`road_order`, and imputed by
    :func:`noisy_linear_impute`. ``fractions`` are always shares *removed* (ROAD's
    code passes LeRF the share kept, ``th_p = 1 − p``). All fractions of the image
    go to ``probabilities`` in one call. ``seed`` fixes the tie-breaking noise and
    the imputation noise (each fraction draws its own).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise ValueError(f"an image must be [H, W, C], got shape {img.shape}")
    if order not in ("morf", "lerf"):
        raise ValueError(f"unknown order {order!r}: use 'morf' or 'lerf'")
    h, w = img.shape[:2]
    if np.shape(saliency)[:2] != (h, w):
        raise ValueError(f"map {np.shape(saliency)} and image {img.shape[:2]} differ in size")
    shares = np.asarray(fractions, dtype=np.float64)
    if shares.ndim != 1 or shares.size == 0 or (shares < 0).any() or (shares >= 1).any():
        raise ValueError("ROAD fractions must be a non-empty list of shares in [0, 1)")
    rng = np.random.default_rng(seed)
    ranked = road_order(saliency, rng)
    if order == "lerf":
        ranked = ranked[::-1]
    batch = []
    for p in shares:
        removed = np.zeros(h * w, dtype=bool)
        removed[ranked[: int(math.floor(p * h * w + 1e-9))]] = True
        batch.append(noisy_linear_impute(img, removed.reshape(h, w), noise=noise, seed=rng))
    probs = np.asarray(probabilities(np.stack(batch)))
    values = _target_column(probs, len(batch), target)
    correct = probs.argmax(axis=1) == target
    return RoadCurve(values, correct, shares, float(values.mean()))


# --------------------------------------------------------------------------- statistics

#: Below 6 pairs the exact two-sided Wilcoxon p-value cannot reach 0.05 (n = 5: 2/2⁵).
WILCOXON_MIN_PAIRS = 6


def _finite_pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values need two equal 1-D arrays, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def wilcoxon(a: Sequence[float], b: Sequence[float], min_pairs: int = WILCOXON_MIN_PAIRS) -> float:
    """Two-sided p-value of the paired Wilcoxon signed-rank test of ``a − b``
    (``scipy.stats.wilcoxon``: zero differences dropped; exact distribution without
    ties or zeros, else the normal approximation with tie correction).

    Pairs with a NaN or inf on either side are dropped. With fewer than
    ``min_pairs`` pairs left (default 6: below that the exact p can never fall
    under 0.05) the test is not run and the result is NaN. When every difference
    is zero there is no evidence of a difference: p = 1.0.
    """
    x, y = _finite_pairs(a, b)
    if x.size < min_pairs:
        return float("nan")
    if np.all(x == y):
        return 1.0
    d = np.abs(x - y)
    # scipy's default falls back to a permutation test when differences tie or are zero
    # (0.2 s a pair: minutes for a leaderboard); the normal approximation with its tie
    # correction is the textbook answer there and for large samples, the exact one otherwise
    exact = d.size <= 50 and np.unique(d).size == d.size and d.min() > 0
    return float(stats.wilcoxon(x, y, method="exact" if exact else "approx").pvalue)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the input's order.

    With the m finite p-values sorted, ``p_(1) ≤ … ≤ p_(m)``, the adjusted value is
    ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``; rejecting where it is below α
    controls the family-wise error rate at α. NaN p-values (tests not run) stay
    NaN and do not count in m.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def pairwise(
    values: Mapping[str, np.ndarray],
    lower_is_better: bool = False,
    min_pairs: int = WILCOXON_MIN_PAIRS,
) -> list[dict]:
    """Every pair of methods (A, B), in the mapping's order, compared image by image.

    ``values[name]`` holds one metric's per-image values, the same images in the
    same order for every method. Each row: ``a``, ``b``, ``n`` (images with finite
    values for both), ``win_rate`` (% of those images where A is strictly better:
    smaller when ``lower_is_better``, else larger), ``loss_rate`` (where B is),
    ``mean_difference`` (mean of A − B), ``p_value`` (:func:`wilcoxon`) and ``p_holm``
    (Holm-corrected over all pairs, :func:`holm`).
    """
    rows = []
    for name_a, name_b in itertools.combinations(values, 2):
        x, y = _finite_pairs(values[name_a], values[name_b])
        better, worse = (x < y, x > y) if lower_is_better else (x > y, x < y)
        rows.append(
            {
                "a": name_a,
                "b": name_b,
                "n": int(x.size),
                "win_rate": float(100.0 * better.mean()) if x.size else float("nan"),
                "loss_rate": float(100.0 * worse.mean()) if x.size else float("nan"),
                "mean_difference": float((x - y).mean()) if x.size else float("nan"),
                "p_value": wilcoxon(x, y, min_pairs),
            }
        )
    for row, adjusted in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        row["p_holm"] = float(adjusted)
    return rows
