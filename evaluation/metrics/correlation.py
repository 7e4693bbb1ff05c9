"""Faithfulness correlation (Bhatt et al. 2020): does the relevance a map gives a set of
pixels predict how much removing them lowers the class probability? Random pixel subsets
are set to black; over the subsets, the Pearson correlation between the map's sum on the
subset and the probability's drop. The perturbed images do not depend on the map, so one
set of passes per image serves every map of it."""

from __future__ import annotations

import numpy as np

#: Share of the image's pixels set to black in each subset (5 % of 224 x 224: 2509 pixels).
SUBSET_SHARE = 0.05


def random_subsets(
    pixels: int, runs: int, rng: np.random.Generator, share: float = SUBSET_SHARE
) -> np.ndarray:
    """``[runs, size]`` pixel indices, each row drawn without replacement."""
    size = max(1, round(share * pixels))
    return np.stack([rng.choice(pixels, size, replace=False) for _ in range(runs)])


def without(image: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """``[runs, H, W, C]``: the image ``[H, W, C]`` (pixel space) with each subset's pixels
    set to black (0 in every channel)."""
    h, w, c = image.shape
    out = np.repeat(image.reshape(1, h * w, c), len(subsets), axis=0)
    out[np.arange(len(subsets))[:, None], subsets] = 0
    return out.reshape(len(subsets), h, w, c)


def faithfulness_correlation(saliency: np.ndarray, subsets: np.ndarray, drops: np.ndarray) -> float:
    """Pearson correlation over the subsets between the map's sum on each subset (the map
    as computed, signed where it is) and ``drops``: the class probability on the image
    minus on the image without that subset. 0 where either side does not vary (a flat
    map predicts nothing)."""
    sums = np.asarray(saliency, dtype=np.float64).ravel()[subsets].sum(axis=1)
    drops = np.asarray(drops, dtype=np.float64)
    if np.ptp(sums) == 0 or np.ptp(drops) == 0:
        return 0.0
    return float(np.corrcoef(sums, drops)[0, 1])
