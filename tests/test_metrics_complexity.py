"""Sparseness (Gini) and complexity (entropy) of a map: by hand, and against Quantus."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics.complexity import complexity, sparseness


def test_by_hand():
    one = np.zeros((4, 4))
    one[1, 2] = 3.0
    flat = np.ones((4, 4))
    assert sparseness(one) == pytest.approx(1 - 1 / 16)  # (2n - n - 1) a / (n a) = (n-1)/n
    assert sparseness(flat) == pytest.approx(0.0)
    assert complexity(one) == pytest.approx(0.0)
    assert complexity(flat) == pytest.approx(math.log(16))
    # two pixels of 1 and 3 among 4: sorted 0, 0, 1, 3 -> (1*1 + 3*3) / (4 * 4)
    two = np.array([[0.0, 1.0], [3.0, 0.0]])
    assert sparseness(two) == pytest.approx(10 / 16)
    assert complexity(two) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    # negative evidence is not relevance here (the site shows and scores the positive part)
    assert sparseness(two - 5 * (two == 0)) == sparseness(two)
    # an all-zero map singles out no pixel: as flat as a constant one
    assert sparseness(np.zeros((4, 4))) == 0.0
    assert complexity(np.zeros((4, 4))) == pytest.approx(math.log(16))
    # both ignore the map's scale
    assert sparseness(7 * two) == pytest.approx(sparseness(two))
    assert complexity(7 * two) == pytest.approx(complexity(two))


def test_agree_with_quantus():
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(0)
    maps = np.maximum(rng.normal(0, 1, (5, 1, 28, 28)), 0) ** 2  # rectified, as we score them
    maps[0, 0, :14] = 0  # half empty
    x = rng.uniform(0, 1, (5, 1, 28, 28))
    for ours, theirs in ((sparseness, quantus.Sparseness), (complexity, quantus.Complexity)):
        metric = theirs(disable_warnings=True, normalise=False, abs=True)
        expected = metric.evaluate_batch(x_batch=x, a_batch=maps.copy())
        got = [ours(m[0]) for m in maps]
        np.testing.assert_allclose(got, expected, rtol=1e-4)
