"""Rankings: Friedman over images as blocks, each row against the best (Holm over k - 1),
Nemenyi's critical difference, bootstrap rank intervals, and the metrics' agreement."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluation import catalogue
from evaluation.leaderboard import leaderboard
from evaluation.rankings import (
    AGREEMENT_COLUMNS,
    RANKING_COLUMNS,
    agreement_rows,
    images_for_cd,
    images_for_wilcoxon,
    nemenyi_cd,
    rank_metric,
    ranking_rows,
    rankings,
)
from reportgen.render.plots import cliques

DROP = catalogue.BY_ID["average_drop"]


def long(values: dict[str, np.ndarray], metric: str = "average_drop") -> pd.DataFrame:
    """A metrics table: one row per (image, method) of ``values[method][image]``."""
    return pd.DataFrame(
        [
            {"image": f"i{i}", "model": "m", "layer": "input", "method": method,
             "metric": metric, "value": float(v)}
            for method, column in values.items()
            for i, v in enumerate(column)
        ]
    )  # fmt: skip


def test_nemenyi_critical_difference_matches_demsar_table():
    """Demšar 2006, Table 5a: q_0.05 for k = 2..10 (CD = q sqrt(k(k+1)/6N))."""
    published = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
    for k, q in zip(range(2, 11), published, strict=True):
        assert nemenyi_cd(k, 6) == pytest.approx(q * math.sqrt(k * (k + 1) / 36), abs=2e-3)
    # the figure: about 12 mean ranks at k = 28, n = 12
    assert 11.5 < nemenyi_cd(28, 12) < 13.0


def test_friedman_ranks_and_statistic_by_hand():
    # 4 images, 3 rows; lower is better: A always best, B and C swap
    values = {"A": np.array([1, 2, 3, 4.0]), "B": np.array([5, 6, 9, 9.0]),
              "C": np.array([6, 5, 10, 10.5])}  # fmt: skip
    g = rank_metric(long(values), DROP)
    assert [key[0] for key in g.keys] == ["A", "B", "C"]
    assert g.mean_ranks.tolist() == [1.0, 2.25, 2.75]
    n, k = 4, 3
    r = np.array([1.0, 2.25, 2.75])
    chi2 = 12 * n / (k * (k + 1)) * ((r**2).sum() - k * (k + 1) ** 2 / 4)
    assert g.friedman_p == pytest.approx(stats.chi2.sf(chi2, k - 1))
    assert g.n == 4 and np.isnan(g.p_vs_best[0])


def test_a_difference_is_reachable_at_12_images_among_28_rows():
    """Holm over every pair (378 tests) could never reach 0.05 with 12 images; against
    the best row only (27 tests) a row worse on every image is found."""
    rng = np.random.default_rng(0)
    base = rng.uniform(20, 60, 12)
    values = {f"m{j:02d}": base + rng.normal(0, 3, 12) for j in range(26)}
    values["best"] = base - 30
    values["worst"] = base + 30
    assert images_for_wilcoxon(27) == 11 <= 12
    g = rank_metric(long(values), DROP)
    assert g.keys[0][0] == "best" and g.can_differ()
    by = dict(zip([key[0] for key in g.keys], g.p_vs_best, strict=True))
    assert by["worst"] < 0.05
    assert g.differs().sum() >= 1
    # every rank interval holds its mean rank; the best row is first in most resamples
    assert np.all((g.rank_ci[:, 0] <= g.mean_ranks) & (g.mean_ranks <= g.rank_ci[:, 1]))
    assert g.p_first[0] > 0.9 and g.p_top3[0] >= g.p_first[0]


def test_too_few_images_is_said_with_the_number_needed():
    rng = np.random.default_rng(1)
    values = {f"m{j}": rng.uniform(0, 1, 5) for j in range(10)}
    g = rank_metric(long(values), DROP)
    assert not g.can_differ()
    assert g.verdict() == (
        "With 5 images no row can be shown to differ from the best one: "
        f"9 Holm-corrected comparisons need at least {images_for_wilcoxon(9)} images."
    )
    # n = images_for_wilcoxon(t) is the first n where t * 2 / 2^n < 0.05
    for t in (1, 9, 27, 377):
        n = images_for_wilcoxon(t)
        assert t * 2 / 2**n < 0.05 <= t * 2 / 2 ** (n - 1)


def test_images_for_cd_is_where_the_critical_difference_falls_below_the_gap():
    for k, gap in ((28, 1.8), (5, 0.5), (3, 1.0)):
        n = images_for_cd(k, gap)
        assert nemenyi_cd(k, n) < gap <= nemenyi_cd(k, n - 1)


def test_a_higher_is_better_metric_ranks_the_other_way():
    values = {"low": np.arange(6.0), "high": np.arange(6.0) + 1, "mid": np.arange(6.0) + 0.5}
    g = rank_metric(long(values, "insertion_auc"), catalogue.BY_ID["insertion_auc"])
    assert [key[0] for key in g.keys] == ["high", "mid", "low"]


def test_images_missing_a_row_are_left_out_of_the_blocks():
    values = {"a": np.array([1, 2, 3, np.nan]), "b": np.array([2, 3, 4, 5.0]),
              "c": np.array([3, 4, 5, 6.0])}  # fmt: skip
    assert rank_metric(long(values), DROP).n == 3


def test_tables_have_the_documented_columns_and_the_leaderboard_marks_follow_them():
    rng = np.random.default_rng(2)
    base = rng.uniform(20, 60, 12)
    values = {"good": base - 20, "bad": base + 20, "close": base - 20 + rng.normal(0, 0.1, 12)}
    metrics = pd.concat([long(values), long({k: -v for k, v in values.items()},
                                            "insertion_auc")])  # fmt: skip
    found = rankings(metrics)
    rows = pd.DataFrame(ranking_rows(found, "toy"))
    assert list(rows.columns) == RANKING_COLUMNS
    assert set(rows.metric) == {"average_drop", "insertion_auc"}
    bad = rows[(rows.method == "bad") & (rows.metric == "average_drop")].iloc[0]
    assert bad.differs_from_best and bad.mean_rank == 3.0
    entries, _ = leaderboard(metrics, found=found)
    assert entries[-1].method == "bad" and entries[-1].versus_best == bad.p_vs_best_holm
    assert "average_drop" in entries[0].best
    agreement = pd.DataFrame(agreement_rows(metrics, "toy"))
    assert list(agreement.columns) == AGREEMENT_COLUMNS
    # insertion here is minus the drop: higher insertion is better, lower drop is better,
    # so both metrics order the rows alike
    assert agreement.kendall_tau.iloc[0] == pytest.approx(1.0)
    assert agreement.n_methods.iloc[0] == 3


def test_cliques_are_maximal_runs_within_the_critical_difference():
    ranks = np.array([1.0, 1.5, 2.6, 4.0, 4.2])
    assert cliques(ranks, 1.6) == [(0, 2), (2, 4)]
    assert cliques(ranks, 0.1) == []


def test_stability_shares_ties_fairly():
    """Rows that never differ split "first" evenly; the issue's artefact was a stable sort
    that always crowned the first row."""
    same = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    g = rank_metric(long({"a": same, "b": same, "c": same, "d": same + 1}), DROP)
    assert g.p_first[:3] == pytest.approx([1 / 3] * 3) and g.p_first[3] == 0.0
    assert g.p_top3.tolist() == [1.0, 1.0, 1.0, 0.0]


def test_the_headline_names_the_best_row_its_ties_and_what_can_be_told_apart():
    rng = np.random.default_rng(0)
    base = rng.uniform(20, 60, 12)
    values = {f"m{j:02d}": base + rng.normal(0, 3, 12) for j in range(26)}
    values["best"] = base - 30
    values["worst"] = base + 30
    g = rank_metric(long(values), DROP)
    worse = int(g.differs().sum())
    assert g.headline() == (
        f"best@input (mean rank {g.mean_ranks[0]:.1f} of 28 rows, 12 images): {worse} of "
        f"the other 27 are significantly worse; {27 - worse} cannot be told apart from it "
        "on these images."
    )
    same = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    tied = rank_metric(long({"a": same, "b": same, "d": same + 1}), DROP)
    assert tied.headline().startswith("a@input and b@input, but with 6 images no other row")
    assert tied.headline({"a": "Method A"}).startswith("Method A at input and b@input, but")
