"""Faithfulness and localisation metrics, exactly as their papers define them (README: Metrics).

Pure functions over NumPy arrays. The only model access is a callable
``probabilities(images) -> [N, classes]`` handed in by the caller; images are
``[N, H, W, 3]`` in pixel space ([0, 1], before the model's normalisation).
Every function works on one image (or one stack of per-image values) so the
caller keeps each per-image value for bootstrap confidence intervals.

The package re-exports every name of the former single module ``evaluation/metrics.py``,
so ``from evaluation.metrics import x`` and ``metrics.x`` keep working; the code lives in
``faithfulness``, ``localisation``, ``curves`` (RISE), ``road_metric`` and ``stats``.
"""

from .curves import (
    RISE_KERNEL_SIZE,
    RISE_SIGMA,
    Curve,
    CurvePlan,
    Probabilities,
    curve_plan,
    curve_step,
    insertion_deletion,
    rise_blur,
    rise_kernel,
    salience_order,
    salience_rank,
    substrate_image,
)
from .faithfulness import (
    SCORE_CAM_KEEP,
    ExplanationMode,
    average_drop,
    drop_per_image,
    explanation_images,
    increase_in_confidence,
    increase_per_image,
    keep_top,
    masked_confidence,
    normalise_map,
    win_rate,
)
from .localisation import (
    LOCALISATION_FRACTION,
    Box,
    binarise,
    box_localisation,
    box_mask,
    energy_pointing_game,
    largest_component_box,
    loc_delta,
    mask_iou,
    pointing_game,
    pointing_game_hit,
    relevance_mass,
    relevance_rank,
)
from .road_metric import (
    ROAD_FRACTIONS,
    ROAD_NEIGHBOURS,
    ROAD_NOISE,
    ROAD_TIE_NOISE,
    RoadCurve,
    noisy_linear_impute,
    road,
    road_order,
)
from .stats import (
    WILCOXON_MIN_PAIRS,
    bootstrap_ci,
    group_mean,
    holm,
    pairwise,
    wilcoxon,
)

__all__ = [
    "Box",
    "Curve",
    "CurvePlan",
    "ExplanationMode",
    "LOCALISATION_FRACTION",
    "Probabilities",
    "RISE_KERNEL_SIZE",
    "RISE_SIGMA",
    "ROAD_FRACTIONS",
    "ROAD_NEIGHBOURS",
    "ROAD_NOISE",
    "ROAD_TIE_NOISE",
    "RoadCurve",
    "SCORE_CAM_KEEP",
    "WILCOXON_MIN_PAIRS",
    "average_drop",
    "binarise",
    "bootstrap_ci",
    "box_localisation",
    "box_mask",
    "curve_plan",
    "curve_step",
    "drop_per_image",
    "energy_pointing_game",
    "explanation_images",
    "group_mean",
    "holm",
    "increase_in_confidence",
    "increase_per_image",
    "insertion_deletion",
    "keep_top",
    "largest_component_box",
    "loc_delta",
    "mask_iou",
    "masked_confidence",
    "noisy_linear_impute",
    "normalise_map",
    "pairwise",
    "pointing_game",
    "pointing_game_hit",
    "relevance_mass",
    "relevance_rank",
    "rise_blur",
    "rise_kernel",
    "road",
    "road_order",
    "salience_order",
    "salience_rank",
    "substrate_image",
    "wilcoxon",
    "win_rate",
]
