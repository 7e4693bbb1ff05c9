"""Faithfulness correlation (Bhatt et al. 2020) and infidelity (Yeh et al. 2019): does
the relevance a map gives pixels predict how much perturbing them changes the class
probability? Random pixel subsets (correlation) or squares (infidelity) are set to black.
The perturbed images do not depend on the map, so one set of passes per image serves
every map of it."""

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


#: Side of infidelity's removed squares, as a share of the image's shorter side (32 px at
#: 224 px).
SQUARE_SIDE = 1 / 7


def square_removals(
    image: np.ndarray, runs: int, rng: np.random.Generator, share: float = SQUARE_SIDE
) -> tuple[np.ndarray, np.ndarray]:
    """Yeh et al.'s square perturbations of an ``[H, W, C]`` image: ``runs`` squares at
    uniform random places, each set to black. Returns the perturbed images ``[runs, H, W,
    C]`` and the perturbations ``I = image − perturbed`` summed over channels ``[runs, H,
    W]``."""
    h, w, _ = image.shape
    side = max(1, round(share * min(h, w)))
    perturbed = np.repeat(image[None], runs, axis=0)
    removed = np.zeros((runs, h, w), dtype=np.float64)
    for r, (y, x) in enumerate(zip(rng.integers(0, h - side + 1, runs),
                                   rng.integers(0, w - side + 1, runs), strict=True)):  # fmt: skip
        removed[r, y : y + side, x : x + side] = image[y : y + side, x : x + side].sum(-1)
        perturbed[r, y : y + side, x : x + side] = 0
    return perturbed, removed


def infidelity(saliency: np.ndarray, removed: np.ndarray, drops: np.ndarray) -> float:
    """Infidelity (Yeh et al. 2019) with the optimal scale of the map (captum's
    ``normalize=True``), relative to the drops' energy: with ``a_s = Σ_hw map · I_s``
    (``removed``: the perturbations ``I_s``, ``[S, H, W]``, summed over colour channels)
    and the probability's drops ``b_s = Y − Y(image − I_s)``, ``min_β mean((β a − b)²) /
    mean(b²)``. 0 when the map predicts every drop linearly, 1 when it predicts none
    (lower is better). The denominator does not depend on the map, so per image it ranks
    maps exactly as captum's value does."""
    removed = np.asarray(removed, dtype=np.float64)  # one product a perturbation (BLAS)
    a = removed.reshape(len(removed), -1) @ np.asarray(saliency, dtype=np.float64).ravel()
    b = np.asarray(drops, dtype=np.float64)
    energy = (b * b).mean()
    if energy == 0:
        return 0.0
    aa = (a * a).sum()
    beta = (a * b).sum() / aa if aa > 0 else 0.0
    return float(((beta * a - b) ** 2).mean() / energy)
