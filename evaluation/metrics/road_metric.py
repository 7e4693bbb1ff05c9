"""ROAD, "Remove And Debias": pixels removed by relevance and refilled by noisy linear
imputation, so the removal itself leaks no shape for the model to read."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve

from .curves import Probabilities, _target_column
from .localisation import _finite_map

#: ROAD's neighbour weights ((dy, dx), weight): 1/6 for sides, 1/12 for diagonals.
ROAD_NEIGHBOURS: tuple[tuple[tuple[int, int], float], ...] = (
    ((-1, 0), 1 / 6), ((1, 0), 1 / 6), ((0, -1), 1 / 6), ((0, 1), 1 / 6),
    ((-1, -1), 1 / 12), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((1, 1), 1 / 12),
)  # fmt: skip
ROAD_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ROAD_NOISE = 0.01
ROAD_TIE_NOISE = 1e-4


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
