"""Wilcoxon signed-rank p-values, Holm correction and the pairwise table, by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from evaluation.metrics import holm, pairwise, wilcoxon


def test_wilcoxon_exact_p_values_by_hand():
    base = np.zeros(6)
    # all six differences positive: W- = 0, exact two-sided p = 2 / 2^6
    assert wilcoxon(np.arange(1.0, 7), base) == pytest.approx(2 / 64)
    # one negative difference of rank 2: W- = 2; subsets of 1..6 summing to <= 2 are
    # {}, {1}, {2}, so p = 2 * 3 / 64
    assert wilcoxon([1.0, -2, 3, 4, 5, 6], base) == pytest.approx(6 / 64)


def test_wilcoxon_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.random(30), rng.random(30) + 0.1
    assert wilcoxon(a, b) == pytest.approx(stats.wilcoxon(a, b).pvalue)


def test_wilcoxon_ties_too_few_pairs_and_nan():
    assert wilcoxon([0.3] * 8, [0.3] * 8) == 1.0  # every difference zero
    assert math.isnan(wilcoxon([1.0, 2, 3, 4, 5], [0.0] * 5))  # 5 < 6 pairs
    assert wilcoxon([1.0, 2, 3, 4, 5], [0.0] * 5, min_pairs=5) == pytest.approx(2 / 32)
    # a NaN on either side drops that pair: 6 pairs left
    a = [1.0, 2, 3, 4, 5, 6, np.nan]
    assert wilcoxon(a, [0.0] * 6 + [1.0]) == pytest.approx(2 / 64)
    with pytest.raises(ValueError):
        wilcoxon([1.0, 2], [1.0])


def test_wilcoxon_with_ties_and_zeros_matches_scipy():
    """The tied path reuses scipy's p for equal (pairs, positive rank sum, tie sizes):
    every draw agrees with a fresh scipy call, including draws that hit the reuse."""
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(6, 60))
        a = rng.integers(0, 4, n).astype(float)  # few values: ties and zeros in most draws
        b = rng.integers(0, 4, n).astype(float)
        if trial % 3 == 0:
            b = a + rng.normal(size=n).round(1)  # rounded: ties without zeros
        d = np.abs(a - b)
        if np.all(d == 0) or (np.unique(d).size == n and d.min() > 0):
            continue  # no difference, or the exact path (test_wilcoxon_matches_scipy)
        expected = stats.wilcoxon(a, b, method="approx").pvalue
        assert wilcoxon(a, b) == pytest.approx(expected, rel=1e-12, abs=1e-15), trial


def test_holm_by_hand():
    # sorted: .01*4 = .04, .03*3 = .09, .04*2 = .08 -> raised to .09, .5*1 = .5
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.02, np.nan, 0.04])  # the NaN is not a test: m = 2
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([]).size == 0


def test_pairwise_table_by_hand():
    a = np.arange(1.0, 7)
    values = {"A": a, "B": a + np.arange(1.0, 7), "C": a.copy()}
    rows = pairwise(values, lower_is_better=True)
    assert [(r["a"], r["b"]) for r in rows] == [("A", "B"), ("A", "C"), ("B", "C")]
    ab, ac, bc = rows
    assert ab["n"] == 6 and ab["win_rate"] == 100.0 and ab["mean_difference"] == -3.5
    assert ab["p_value"] == pytest.approx(2 / 64)
    assert ac["win_rate"] == 0.0 and ac["mean_difference"] == 0.0 and ac["p_value"] == 1.0
    assert bc["win_rate"] == 0.0 and bc["mean_difference"] == 3.5
    # Holm over three tests: .03125 * 3, max(.03125 * 2, previous), 1.0 * 1
    assert [r["p_holm"] for r in rows] == pytest.approx([3 / 32, 1.0, 3 / 32])
    higher = pairwise(values)  # higher is better: B now beats both
    assert higher[0]["win_rate"] == 0.0 and higher[2]["win_rate"] == 100.0


def test_pairwise_drops_non_finite_pairs_and_reports_untestable_ones():
    rows = pairwise({"A": [1.0, np.nan, 3.0], "B": [0.0, 1.0, 4.0]})
    assert rows[0]["n"] == 2 and rows[0]["win_rate"] == 50.0
    assert rows[0]["mean_difference"] == pytest.approx(0.0)
    assert math.isnan(rows[0]["p_value"]) and math.isnan(rows[0]["p_holm"])


def test_wilcoxon_exact_p_equals_scipys_on_random_samples():
    """The exact p is looked up by (n, sum of the positive ranks): the same as scipy's."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(6, 40))
        a = rng.normal(size=n)
        b = a + rng.normal(0.5 * rng.normal(), 1, size=n)
        assert wilcoxon(a, b) == stats.wilcoxon(a, b, method="exact").pvalue
