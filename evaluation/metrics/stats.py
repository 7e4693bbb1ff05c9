"""Statistics over per-image values: class-balanced means, bootstrap intervals and paired
Wilcoxon tests with Holm correction, for the confidence intervals and the leaderboard."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats


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
    if not exact:
        return _approx_p(x - y)
    ranks = np.empty(d.size, dtype=np.int64)
    ranks[np.argsort(d)] = np.arange(1, d.size + 1)
    return _exact_p(d.size, int(ranks[x > y].sum()))


_APPROX: dict[tuple, float] = {}


def _approx_p(d: np.ndarray) -> float:
    """scipy's two-sided normal-approximation p (tie-corrected, no continuity correction,
    zero differences dropped) of the differences ``d``. It depends only on how many are
    non-zero, the rank sum of the positive ones and the sizes of the groups of tied
    ranks, so scipy is called once per such triple (a tied metric, such as the pointing
    game's hits, repeats a few triples over thousands of pairs: the default site's 16
    pairwise tables took 0.91 s this way, 1.50 s with a scipy call per pair)."""
    nonzero = d[d != 0]
    ranks = stats.rankdata(np.abs(nonzero))
    _, tied = np.unique(ranks, return_counts=True)
    key = (nonzero.size, float(ranks[nonzero > 0].sum()), tuple(sorted(tied[tied > 1])))
    if key not in _APPROX:
        _APPROX[key] = float(stats.wilcoxon(d, method="approx").pvalue)
    return _APPROX[key]


@functools.lru_cache(maxsize=4096)
def _exact_p(n: int, rank_sum: int) -> float:
    """scipy's exact two-sided p for ``n`` untied, non-zero differences whose positive ones
    have ranks summing to ``rank_sum``: it depends on nothing else, so a leaderboard's
    thousands of pairs need one scipy call per value (scipy's call costs ~1 ms)."""
    signs, left = -np.ones(n), rank_sum
    for rank in range(n, 0, -1):  # a set of ranks with that sum, greedily from the largest
        if rank <= left:
            signs[rank - 1], left = 1.0, left - rank
    return float(stats.wilcoxon(signs * np.arange(1, n + 1), method="exact").pvalue)


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
