"""Sanity checks for saliency maps (Adebayo et al. 2018): the similarity statistics of
cascading model randomisation (torch-free). The randomisation itself, which needs the
model, is ``reportgen.randomisation``.

The weights are re-initialised block by block from the logits down to the input, the
maps are recomputed after each step, and each map is compared with the trained model's
map of the same method and image. A method whose maps stay the same while the model is
destroyed (an edge detector, guided backpropagation) is not explaining the model.

Choices (Adebayo et al. 2018; README: Metrics, "sanity"):

* Blocks: the modules that own parameters, in execution order, grouped into the
  elements of the model's sequence containers (``layer4.1``, ``blocks.5.3``); a stage
  that is a plain sequence of blocks is split into its blocks, so EfficientNet-Lite0
  gives 19 steps (16 blocks, head, stem, classifier) and ResNet-18 gives 10, close to
  the paper's Inception v3 cascade (one step per block). A run of adjacent top-level
  modules (stem conv + its norm) is one step, written ``conv1+bn1``; the output layer
  is always a step of its own.
* Re-initialisation: each sub-module's own ``reset_parameters()``, seeded per block
  (from the seed and the block's name), so step k's model is exactly step k-1's plus one
  more random block. BatchNorm's running statistics are reset too (``reset_parameters``
  does both): the paper re-initialises every variable of a block, and trained statistics
  kept behind random weights would both keep part of the trained model and describe
  activations that no longer exist.
* Similarity: of the maps' magnitudes (the paper's absolute-value variant; a sign flip
  does not change which pixels matter). Spearman with average ranks; SSIM of the two maps
  each min-max normalised to [0, 1] (``data_range=1``, uniform window of 7, or the
  largest odd size that fits a smaller map; a side under 3 is repeated up to 3).
* Constant maps: two identical maps have Spearman 1 (nothing changed, which is what the
  check looks for); otherwise a constant map has no ranking and gets Spearman 0. A
  constant map normalises to all zeros and its SSIM is computed as usual (finite).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

TRAINED = "none"  # the block name of step 0, the trained model
SSIM_WINDOW = 7  # skimage's default uniform window


# --- Similarity ----------------------------------------------------------------------------


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of ``|a|`` and ``|b|`` (average ranks for ties); 1 for
    identical maps, 0 when one is constant and they differ."""
    return float(similarities(np.ravel(a)[None, None], np.ravel(b)[None, None])[0][0])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the two magnitude maps each normalised to [0, 1] (``data_range=1``)."""
    return float(similarities(np.asarray(a)[None], np.asarray(b)[None])[1][0])


def similarities(now: np.ndarray, then: np.ndarray | Maps) -> tuple[np.ndarray, np.ndarray]:
    """Spearman and SSIM (as ``spearman`` and ``ssim`` define them) of every pair
    ``now[i]``, ``then[i]`` of ``[N, H, W]`` maps, all pairs at once. ``then`` may be
    ``Maps`` prepared once: the check compares every step's maps with the same trained
    ones, about a thousand pairs, which one at a time took half of its time."""
    a, b = Maps(now), then if isinstance(then, Maps) else Maps(then)
    rho = (a.ranks * b.ranks).sum(1) / np.maximum(a.spread * b.spread, 1e-300)
    rho = np.where(a.flat | b.flat, 0.0, rho)
    rho = np.where((a.magnitude == b.magnitude).all(1), 1.0, rho)
    ux, uy, uxx, uyy = a.mean, b.mean, a.square_mean, b.square_mean
    uxy = _window_mean(a.unit * b.unit, b.window)
    cov = b.window**2 / (b.window**2 - 1)
    vx, vy, vxy = cov * (uxx - ux * ux), cov * (uyy - uy * uy), cov * (uxy - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return rho, s.reshape(len(s), -1).mean(1)


class Maps:
    """What the similarities need of a stack of ``[N, H, W]`` maps, computed once: the
    magnitudes, their centred average ranks (ties share their mean rank, scipy's
    ``rankdata``), and the maps min-max normalised to [0, 1] (a flat map becomes zeros)
    with their window means for SSIM: skimage's default (uniform ``SSIM_WINDOW`` window,
    sample covariance, K1 0.01, K2 0.03, the border of half a window left out of the
    mean), the window shrunk to the largest odd size a smaller map fits and a side under
    3 repeated up to 3."""

    def __init__(self, maps: np.ndarray):
        m = np.abs(np.asarray(maps, np.float64))
        self.magnitude = m.reshape(len(m), -1)
        ranks = _ranks(self.magnitude)
        self.ranks = ranks - ranks.mean(1, keepdims=True)
        self.spread = np.sqrt(np.square(self.ranks).sum(1))
        low, high = self.magnitude.min(1), self.magnitude.max(1)
        self.flat = low == high
        span = np.where(self.flat, 1.0, high - low)[:, None, None]
        unit = np.where(self.flat[:, None, None], 0.0, (m - low[:, None, None]) / span)
        self.unit = _repeated(unit, unit.shape[1:])
        short = min(self.unit.shape[1:])
        self.window = min(SSIM_WINDOW, short if short % 2 else short - 1)
        self.mean = _window_mean(self.unit, self.window)
        self.square_mean = _window_mean(self.unit * self.unit, self.window)


def _repeated(maps: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Each pixel repeated k times on both axes when a side of ``shape`` is under 3 (no odd
    window >= 3 fits otherwise)."""
    k = -(-3 // min(shape)) if min(shape) < 3 else 1
    return maps.repeat(k, 1).repeat(k, 2) if k > 1 else maps


def _window_mean(maps: np.ndarray, w: int) -> np.ndarray:
    """The mean over each ``w`` x ``w`` window that fits inside the map: the region of
    skimage's filtered image that its SSIM averages over."""
    half = (w - 1) // 2
    out = ndimage.uniform_filter(maps, size=(1, w, w))
    return out[:, half : out.shape[1] - half, half : out.shape[2] - half]


def _ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks along each row of ``[N, P]``, ties sharing their mean rank: a tie group
    spanning sorted positions f..l gets (f + l) / 2 + 1."""
    order = np.argsort(v, axis=1)
    values = np.take_along_axis(v, order, 1)
    n, p = v.shape
    starts = np.ones((n, p), bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    ends = np.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    pos = np.arange(p)
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, p)[:, ::-1], axis=1)[:, ::-1]
    out = np.empty_like(v)
    np.put_along_axis(out, order, (first + last) / 2 + 1, 1)
    return out


def summary(rows: Sequence[dict]) -> dict[str, list[tuple[int, str, float, float]]]:
    """Per method, ``(step, block, mean spearman, mean ssim)`` over images, by step."""
    grouped: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for row in rows:
        grouped[(row["method"], row["step"], row["block"])].append(row)
    out: dict[str, list[tuple[int, str, float, float]]] = defaultdict(list)
    for (method, step, block), group in sorted(grouped.items(), key=lambda kv: kv[0][:2]):
        mean = [float(np.mean([r[k] for r in group])) for k in ("spearman", "ssim")]
        out[method].append((step, block, *mean))
    return dict(out)
