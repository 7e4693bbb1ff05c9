"""Rankings that can declare a difference: per metric, the Friedman test over the
method rows with images as blocks, then each row against the best one only (k − 1
Wilcoxon tests, Holm-corrected) and the Nemenyi critical difference (Demšar 2006); mean
ranks with bootstrap intervals; and how far the metrics agree on the order they induce.

Correcting over every pair of k rows (k(k − 1)/2 tests) makes a difference unreachable on
a dozen images; comparing with the best row only needs k − 1 tests, and the page says how
many images a test would need when the data set is too small for it. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from . import catalogue
from .metrics.stats import holm, wilcoxon

ALPHA = 0.05
RESAMPLES = 1000  # bootstrap resamples of the images, for the rank intervals and stability
RANKING_COLUMNS = [
    "dataset", "metric", "method", "layer", "n_images", "mean", "mean_rank", "rank_ci_low",
    "rank_ci_high", "friedman_p", "p_vs_best_holm", "differs_from_best", "p_first", "p_top3",
]  # fmt: skip
AGREEMENT_COLUMNS = ["dataset", "metric_a", "metric_b", "kendall_tau", "n_methods"]


def _q(k: int, alpha: float) -> float:
    """Nemenyi's q_α for k rows: the studentized range quantile (infinite degrees of
    freedom) divided by √2 (Demšar 2006, Table 5)."""
    return stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)


def nemenyi_cd(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of mean ranks for k rows over n blocks:
    ``q_α · sqrt(k (k + 1) / (6 n))`` (Demšar 2006, eq. 5)."""
    if k < 2 or n < 1:
        return float("nan")
    return float(_q(k, alpha) * math.sqrt(k * (k + 1) / (6 * n)))


def images_for_cd(k: int, gap: float, alpha: float = ALPHA) -> int:
    """The fewest images at which Nemenyi's critical difference falls below a mean-rank
    ``gap`` (how many a data set would need to separate two rows that far apart)."""
    if gap <= 0:
        return -1  # no number of images separates equal ranks
    return math.floor(_q(k, alpha) ** 2 * k * (k + 1) / (6 * gap * gap)) + 1


def images_for_wilcoxon(tests: int, alpha: float = ALPHA) -> int:
    """The fewest paired images at which one of ``tests`` Holm-corrected two-sided exact
    Wilcoxon tests can reach ``alpha``: its smallest p, 2 / 2ⁿ (every difference of one
    sign), times the number of tests, must fall below alpha."""
    return max(1, math.floor(math.log2(2 * max(tests, 1) / alpha)) + 1)


def ranks(values: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """Per block (row of ``values``, images × methods), each method's rank, 1 = best, ties
    averaged."""
    oriented = values if lower_is_better else -values
    return stats.rankdata(oriented, axis=1)


@dataclass
class Ranking:
    """One metric's ranking on one data set (rows in the mean-rank order)."""

    metric: catalogue.Metric
    keys: list[tuple[str, str]]  # (method, layer), best mean rank first
    n: int  # images with a value for every row (the Friedman blocks)
    means: np.ndarray
    mean_ranks: np.ndarray
    rank_ci: np.ndarray  # [k, 2]
    p_first: np.ndarray  # share of image resamples where the row ranks first (ties split it)
    p_top3: np.ndarray  # share where it is among the first three (ties at third included)
    friedman_p: float
    p_vs_best: np.ndarray  # Holm-corrected over the k − 1 rows; NaN for the best row
    cd: float

    @property
    def k(self) -> int:
        return len(self.keys)

    def differs(self) -> np.ndarray:
        return self.p_vs_best < ALPHA

    def can_differ(self) -> bool:
        """Whether the post-hoc test against the best row could reach significance at
        this many images at all."""
        return self.n >= images_for_wilcoxon(self.k - 1)

    def headline(self, titles: Mapping[str, str] | None = None) -> str:
        """The answer first, in a sentence: the best row (and any tied with it), how many
        rows are significantly worse and how many cannot be told apart from it. ``titles``:
        a method's name as people write it ("Grad-CAM at bn2"), else its key."""
        tied = [
            f"{titles[m]} at {lay}" if titles and m in titles else f"{m}@{lay}"
            for (m, lay), r in zip(self.keys, self.mean_ranks, strict=True)
            if r == self.mean_ranks[0]
        ]
        best = (
            " and ".join(tied)
            if len(tied) < 4
            else f"{tied[0]} and {len(tied) - 1} rows tied with it"
        )
        others = self.k - len(tied)
        if not self.can_differ():
            return (
                f"{best}, but with {self.n} images no other row can be shown to differ from "
                f"it (that takes at least {images_for_wilcoxon(self.k - 1)} images)."
            )
        worse = int(np.nansum(self.differs()))
        same = others - worse
        return (
            f"{best} (mean rank {self.mean_ranks[0]:.1f} of {self.k} rows, {self.n} images): "
            f"{worse} of the other {others} are significantly worse; {same} cannot be told "
            f"apart from it on these images."
        )

    def verdict(self) -> str:
        """What these images can and cannot decide, in a sentence."""
        if not self.can_differ():
            return (
                f"With {self.n} images no row can be shown to differ from the best one: "
                f"{self.k - 1} Holm-corrected comparisons need at least "
                f"{images_for_wilcoxon(self.k - 1)} images."
            )
        worse = int(np.nansum(self.differs()))
        gap = self.mean_ranks[1] - self.mean_ranks[0]
        runner = images_for_cd(self.k, gap)
        p = f"= {self.friedman_p:.2g}" if self.friedman_p > 0 else "< 1e-300"  # underflow
        friedman = f"Friedman p {p}; " if self.k > 2 else ""
        method, layer = self.keys[0]
        text = (
            f"Best: {method}@{layer} (mean rank {self.mean_ranks[0]:.1f}; first in "
            f"{100 * self.p_first[0]:.0f} % of image resamples). "
            f"{worse} of {self.k - 1} rows differ significantly from it "
            f"({friedman}Nemenyi critical difference {self.cd:.1f} mean ranks at "
            f"{self.n} images)."
        )
        if gap > 0 and runner > self.n:
            need = f"about {runner:,} images" if runner <= 10_000 else "over 10,000 images"
            text += (
                f" Separating it from the second (mean rank {self.mean_ranks[1]:.1f}) by "
                f"Nemenyi's test would take {need}."
            )
        return text


def rank_metric(metrics: pd.DataFrame, metric: catalogue.Metric, seed: int = 0) -> Ranking | None:
    """The ranking of every (method, layer) row on one metric; ``None`` when fewer than
    two rows or two complete images are left (with two rows the Friedman p is NaN: the
    Wilcoxon test against the best is the test then). Images missing a
    value for any row are left out (a block must rank every row)."""
    values = metrics[metrics.metric == metric.id].pivot_table(
        index="image", columns=["method", "layer"], values="value", sort=False
    )
    values = values.replace([np.inf, -np.inf], np.nan).dropna(axis=0, how="any")
    if values.shape[1] < 2 or values.shape[0] < 2:
        return None
    table = values.to_numpy(dtype=np.float64)
    lower = metric.better == "lower"
    r = ranks(table, lower)
    mean_ranks = r.mean(axis=0)
    order = np.argsort(mean_ranks, kind="stable")
    table, r, mean_ranks = table[:, order], r[:, order], mean_ranks[order]
    keys = [tuple(values.columns[i]) for i in order]
    n, k = table.shape
    rng = np.random.default_rng(seed)
    boot = r[rng.integers(0, n, size=(RESAMPLES, n))].mean(axis=1)  # [resamples, k]
    first = boot == boot.min(axis=1, keepdims=True)  # ties for first share the credit
    top3 = stats.rankdata(boot, axis=1, method="min") <= 3  # ties at third all count
    if k < 3:
        friedman_p = float("nan")
    elif np.ptp(table, axis=1).max() == 0:  # every row equal on every image
        friedman_p = 1.0
    else:
        friedman_p = float(stats.friedmanchisquare(*table.T).pvalue)
    raw = [np.nan] + [wilcoxon(table[:, 0], table[:, j]) for j in range(1, k)]
    return Ranking(
        metric=metric,
        keys=keys,
        n=n,
        means=table.mean(axis=0),
        mean_ranks=mean_ranks,
        rank_ci=np.percentile(boot, [2.5, 97.5], axis=0).T,
        p_first=(first / first.sum(axis=1, keepdims=True)).mean(axis=0),
        p_top3=top3.mean(axis=0),
        friedman_p=friedman_p,
        p_vs_best=holm(raw),
        cd=nemenyi_cd(k, n),
    )


def rankings(metrics: pd.DataFrame) -> dict[str, Ranking]:
    """The ranking of every leaderboard metric the run has values for."""
    found = {}
    for metric in catalogue.ranked():
        ranking = rank_metric(metrics, metric)
        if ranking is not None:
            found[metric.id] = ranking
    return found


def ranking_rows(found: dict[str, Ranking], dataset: str) -> list[dict]:
    """``rankings.csv``: a row per (metric, method, layer)."""
    rows = []
    for metric, g in found.items():
        differs = g.differs()
        for i, (method, layer) in enumerate(g.keys):
            rows.append(
                {
                    "dataset": dataset,
                    "metric": metric,
                    "method": method,
                    "layer": layer,
                    "n_images": g.n,
                    "mean": float(g.means[i]),
                    "mean_rank": float(g.mean_ranks[i]),
                    "rank_ci_low": float(g.rank_ci[i, 0]),
                    "rank_ci_high": float(g.rank_ci[i, 1]),
                    "friedman_p": g.friedman_p,
                    "p_vs_best_holm": float(g.p_vs_best[i]),
                    "differs_from_best": bool(differs[i]),
                    "p_first": float(g.p_first[i]),
                    "p_top3": float(g.p_top3[i]),
                }
            )
    return rows


def agreement_rows(metrics: pd.DataFrame, dataset: str) -> list[dict]:
    """``metric_agreement.csv``: Kendall's tau between the orders two metrics give the
    rows (each oriented so that better comes first), over the rows both score."""
    means = {}
    for m in catalogue.compared():
        rows = metrics[metrics.metric == m.id]
        if rows.empty:
            continue
        mean = rows.groupby(["method", "layer"]).value.mean()
        means[m.id] = mean if m.better == "higher" else -mean
    rows = []
    ids = list(means)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            both = pd.concat([means[a], means[b]], axis=1, join="inner").dropna()
            enough = len(both) >= 3
            tau = stats.kendalltau(both.iloc[:, 0], both.iloc[:, 1]).statistic if enough else None
            rows.append(
                {
                    "dataset": dataset,
                    "metric_a": a,
                    "metric_b": b,
                    "kendall_tau": float(tau) if enough else float("nan"),
                    "n_methods": len(both),
                }
            )
    return rows


def setting_moves(metrics: pd.DataFrame, agreement: pd.DataFrame) -> list[dict]:
    """Per metric variant the run scored (another substrate, fewer steps): Kendall's tau
    with the metric it varies, and the best row under each. ``agreement``: the rows of
    :func:`agreement_rows`."""
    found, scored = [], set(metrics.metric)
    for m in catalogue.CATALOGUE:
        if not m.variant_of or m.id not in scored or m.variant_of not in scored:
            continue
        base = catalogue.BY_ID[m.variant_of]
        pair = agreement[
            ((agreement.metric_a == base.id) & (agreement.metric_b == m.id))
            | ((agreement.metric_a == m.id) & (agreement.metric_b == base.id))
        ]
        best = {}
        for metric in (base, m):
            means = metrics[metrics.metric == metric.id].groupby(["method", "layer"]).value.mean()
            best[metric.id] = "@".join(
                means.idxmin() if metric.better == "lower" else means.idxmax()
            )
        found.append(
            {
                "metric": m,
                "base": base,
                "tau": float(pair.kendall_tau.iloc[0]) if len(pair) else float("nan"),
                "n_methods": int(pair.n_methods.iloc[0]) if len(pair) else 0,
                "best_base": best[base.id],
                "best": best[m.id],
            }
        )
    return found


def agreement_verdict(rows: pd.DataFrame, headings: dict[str, str]) -> str:
    """Which metrics order the rows most and least alike, in a sentence (a metric and its
    variants under other settings are the settings table's business, not this one's)."""
    variants = {m.id for m in catalogue.CATALOGUE if m.variant_of}
    rows = rows[~rows.metric_a.isin(variants) & ~rows.metric_b.isin(variants)]
    rows = rows.dropna(subset=["kendall_tau"]).sort_values("kendall_tau")
    if rows.empty:
        return ""

    def pair(r) -> str:
        a, b = headings.get(r.metric_a, r.metric_a), headings.get(r.metric_b, r.metric_b)
        return f"{a} and {b} (τ = {r.kendall_tau:.2f})"

    low, high = rows.iloc[0], rows.iloc[-1]
    return (
        f"Over {int(high.n_methods)} rows the metrics agree most on {pair(high)} and least "
        f"on {pair(low)}; the median τ over the {len(rows)} pairs is "
        f"{rows.kendall_tau.median():.2f}. A method that leads on one metric need not lead "
        "on one that orders the rows differently."
    )
