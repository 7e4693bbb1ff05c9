"""How concentrated a map is, whatever the model does with it: Gini sparseness and
entropy complexity of the map's positive evidence (the part the site shows and scores).
A concise explanation puts its relevance on few pixels; neither number says whether
those pixels matter to the model (the faithfulness metrics do)."""

from __future__ import annotations

import numpy as np


def _positive(saliency: np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(saliency, dtype=np.float64), 0.0).ravel()


def sparseness(saliency: np.ndarray) -> float:
    """Gini index of the rectified map (Chalasani et al. 2020, as Quantus computes it):
    with the n values sorted ascending, ``Σ_i (2i − n − 1) a_i / (n Σ_i a_i)``. 0 when every
    pixel carries the same relevance (an all-zero map too), towards 1 when one pixel
    carries it all."""
    a = np.sort(_positive(saliency))
    total = a.sum()
    if total <= 0:
        return 0.0
    n = a.size
    rank = np.arange(1, n + 1)
    return float(((2 * rank - n - 1) * a).sum() / (n * total))


def complexity(saliency: np.ndarray) -> float:
    """Entropy of the rectified map as a distribution over pixels (Bhatt et al. 2020):
    ``−Σ p_i ln p_i`` with ``p = a / Σ a``. 0 when one pixel carries all the relevance;
    ln(n) when every pixel carries the same, which is also the value of an all-zero map
    (no pixel singled out)."""
    a = _positive(saliency)
    total = a.sum()
    if total <= 0:
        return float(np.log(a.size))
    p = a[a > 0] / total
    return float(-(p * np.log(p)).sum())
