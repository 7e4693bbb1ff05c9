"""Every score reportgen records per (image, map), declared once.

The scoring loop, ``--metrics`` help, the leaderboard, the image pages and the method
pages all read this list; a metric missing here is neither computed nor shown. Adding a
metric whose value needs only the map (``needs="map"``) or the map and an exact object
mask (``"mask"``) takes its function (``evaluation/metrics/``), one entry here with
``score`` set, and its test: the run computes it wherever its inputs exist (and its group
is selected) and every page shows it. Metrics that need model passes or boxes are
computed by their group's code in the run engine (``reportgen/scoring.py``), batched.

Torch-free: the renderer imports it without torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from . import metrics as M
from .metrics.complexity import complexity, sparseness

# --metrics groups: what each adds, in a sentence (its metrics are listed after it)
GROUPS = {
    "faithfulness": "Grad-CAM++'s Average Drop and Increase in Confidence, Score-CAM's "
    "variant that keeps the top 50 % of the map, Bhatt et al.'s faithfulness correlation "
    "and Yeh et al.'s infidelity",
    "insertion_deletion": "RISE's insertion and deletion games (curves in run.json)",
    "localisation": "against the boxes of the explained class (and exact object masks "
    "where the data set has them)",
    "road": "ROAD: noisy linear imputation of the most / least relevant pixels",
    "robustness": "Yeh et al.'s max-sensitivity of the methods of a pass or two per image, "
    "re-explained under uniform input noise (Quantus' default radius 0.2; 10 draws in the "
    "fast preset, 200 in paper)",
    "settings": "the insertion / deletion games again with other settings (blurred or "
    "mean-colour substrate, half the steps), to see how their rankings move: compared in "
    "the metrics' agreement view, not leaderboard columns",
    "complexity": "how concentrated each map is: Gini sparseness and entropy of its "
    "positive part (no model pass)",
    "sanity": "cascading and independent randomisation (Adebayo et al. 2018) of the gradient "
    "CAMs and cheap gradient methods on the first images (the other methods on the first "
    "image, after the cascade's last step; with --quality paper its first too): Spearman "
    "and SSIM to the trained model's maps per step, in sanity.csv and "
    "sanity_independent.csv; and the random-logit test",
}
DEFAULT_GROUPS = ("faithfulness", "insertion_deletion", "localisation", "complexity", "sanity")

# what a metric needs; ``score`` is called as ``score(map)`` ("map") or ``score(map, mask)``
# ("mask"), the map at the model's input size; the others are computed by their group's
# code in the run engine (batched model passes; boxes at each image's own resolution)
NEEDS = {
    "model": "model passes",
    "boxes": "the boxes of the explained class",
    "map": "the map alone",
    "mask": "the exact object mask",
    "record": "nothing: a per-image record kept beside the scores",
}


@dataclass(frozen=True)
class Metric:
    """One score of an (image, map) pair.

    ``heading``: the leaderboard column; ``short``: its label under a map; ``better``:
    "higher" or "lower" (empty for records that rank nothing); ``paper``: where the
    definition comes from; ``digits``: decimals shown; ``percent``: shown with a % sign;
    ``ranked``: a leaderboard column (records such as the probabilities behind Average
    Drop are not); ``per_class``: the leaderboard averages per-class means (the pointing
    game's protocol); ``split``: also shown apart for images with one and with several
    instances of the class; ``cell``: shown under each map of the comparison grid;
    ``shown_from``: the smallest value listed under a map (a record worth reading only
    when it says something: two instances or more, a non-finite value; ``inf``: never);
    ``headline``: the index draws its critical-difference diagram;
    ``score``: for ``needs`` "map" and "mask", the function the run calls;
    ``variant_of``: the metric this one recomputes with ``change`` (setting, value) made,
    compared with it in the agreement view and not a leaderboard column."""

    id: str
    group: str
    heading: str
    short: str
    better: str
    paper: str
    needs: str = "model"
    digits: int = 2
    percent: bool = False
    ranked: bool = True
    per_class: bool = False
    split: bool = False
    cell: bool = False
    shown_from: float = -math.inf
    headline: bool = False
    score: Callable[..., float] | None = None
    variant_of: str = ""
    change: tuple[str, object] | None = None

    @property
    def name(self) -> str:
        """The heading without its unit, for prose ("Average Drop")."""
        return self.heading.removesuffix(" %")


def _percent(fn: Callable[..., float]) -> Callable[..., float]:
    """A share in [0, 1] shown in percent."""
    return lambda saliency, *where: 100.0 * float(fn(saliency, *where))


CHATTOPADHAY = "Chattopadhay et al. 2018 (Grad-CAM++), sec. 4.1"
SCORECAM = "Wang et al. 2020 (Score-CAM), sec. 5.2"
RISE = "Petsiuk et al. 2018 (RISE), sec. 4.1"
ROAD = "Rong et al. 2022 (ROAD)"
LOC = "Chattopadhay et al. 2018, eq. 26"
EXACT = "Arras et al. 2022 (CLEVR-XAI), exact masks"

CATALOGUE: tuple[Metric, ...] = (
    Metric("average_drop", "faithfulness", "Average Drop %", "Drop", "lower", CHATTOPADHAY,
           digits=1, percent=True, cell=True, headline=True),
    Metric("increase_in_confidence", "faithfulness", "Increase in Confidence %", "Increase",
           "higher", CHATTOPADHAY, digits=1, percent=True, headline=True),
    Metric("average_drop_top50", "faithfulness", "AD % (top 50 %)", "Drop (top 50 %)", "lower",
           SCORECAM, digits=1, percent=True),
    Metric("increase_top50", "faithfulness", "IC % (top 50 %)", "Increase (top 50 %)",
           "higher", SCORECAM, digits=1, percent=True),
    Metric("faithfulness_correlation", "faithfulness", "Faithfulness correlation",
           "Faith. corr.", "higher",
           "Bhatt et al. 2020: Pearson r, map sum on random 5 % pixel subsets vs probability "
           "drop when they turn black", digits=3),
    Metric("infidelity", "faithfulness", "Infidelity (relative)", "Infidelity", "lower",
           "Yeh et al. 2019: random black squares (1/7 of the side), optimal map scale; "
           "share of the probability drops' energy the map does not predict", digits=3),
    Metric("prob_full", "faithfulness", "Probability, full image", "Y (full image)", "",
           CHATTOPADHAY, digits=3, ranked=False, cell=True),
    Metric("prob_masked", "faithfulness", "Probability, explanation image", "O (explanation)",
           "", CHATTOPADHAY, digits=3, ranked=False, cell=True),
    Metric("insertion_auc", "insertion_deletion", "Insertion AUC", "Insertion AUC", "higher",
           RISE, digits=3, headline=True),
    Metric("deletion_auc", "insertion_deletion", "Deletion AUC", "Deletion AUC", "lower", RISE,
           digits=3, headline=True),
    Metric("deletion_auc_blur", "settings", "Deletion AUC (to blur)", "Deletion (blur)",
           "lower", RISE, digits=3, variant_of="deletion_auc", change=("substrate", "blur"),
           shown_from=math.inf),
    Metric("deletion_auc_mean", "settings", "Deletion AUC (to mean colour)",
           "Deletion (mean)", "lower", RISE, digits=3, variant_of="deletion_auc",
           change=("substrate", "mean"), shown_from=math.inf),
    Metric("insertion_auc_mean", "settings", "Insertion AUC (from mean colour)",
           "Insertion (mean)", "higher", RISE, digits=3, variant_of="insertion_auc",
           change=("substrate", "mean"), shown_from=math.inf),
    Metric("deletion_auc_half", "settings", "Deletion AUC (half the steps)",
           "Deletion (half)", "lower", RISE, digits=3, variant_of="deletion_auc",
           change=("steps", 0.5), shown_from=math.inf),
    Metric("insertion_auc_half", "settings", "Insertion AUC (half the steps)",
           "Insertion (half)", "higher", RISE, digits=3, variant_of="insertion_auc",
           change=("steps", 0.5), shown_from=math.inf),
    Metric("road_morf", "road", "ROAD MoRF", "ROAD MoRF", "lower", ROAD, digits=3),
    Metric("road_lerf", "road", "ROAD LeRF", "ROAD LeRF", "higher", ROAD, digits=3),
    # Loc(delta) at the default deltas; --loc-deltas may add others (``get`` names them)
    Metric("loc_0", "localisation", "Loc(0)", "Loc(0)", "higher", LOC, needs="boxes",
           cell=True),
    Metric("loc_0.25", "localisation", "Loc(0.25)", "Loc(0.25)", "higher", LOC, needs="boxes",
           cell=True),
    Metric("loc_0.5", "localisation", "Loc(0.5)", "Loc(0.5)", "higher", LOC, needs="boxes",
           split=True, cell=True),
    Metric("pointing_game", "localisation", "Pointing game %", "Pointing game", "higher",
           "Zhang et al. 2016 (excitation backprop), 15 px; mean of per-class accuracies",
           needs="boxes", digits=0, percent=True, per_class=True, split=True, headline=True),
    Metric("energy_pointing_game", "localisation", "Energy PG %", "Energy pointing game",
           "higher", "Wang et al. 2020 (Score-CAM), sec. 5.1", needs="boxes", digits=0,
           percent=True, split=True, headline=True),
    Metric("box_iou", "localisation", "Box IoU", "Box IoU", "higher",
           "Selvaraju et al. 2017 (Grad-CAM): 15 % of max", needs="boxes", ranked=False),
    Metric("box_loc", "localisation", "Box loc %", "Box loc", "higher",
           "Selvaraju et al. 2017 (Grad-CAM): 15 % of max, IoU ≥ 0.5", needs="boxes",
           digits=0, percent=True, split=True),
    Metric("mask_iou", "localisation", "Mask IoU %", "Mask IoU", "higher",
           "CAM / Grad-CAM protocol with exact masks: 15 % of max", needs="mask", digits=0,
           percent=True, split=True, score=_percent(M.mask_iou)),
    Metric("relevance_mass", "localisation", "Relevance mass %", "Relevance mass", "higher",
           EXACT, needs="mask", digits=0, percent=True, score=_percent(M.relevance_mass),
           headline=True),
    Metric("relevance_rank", "localisation", "Relevance rank %", "Relevance rank", "higher",
           EXACT, needs="mask", digits=0, percent=True, score=_percent(M.relevance_rank)),
    Metric("max_sensitivity", "robustness", "Max-sensitivity", "Max-sens.", "lower",
           "Yeh et al. 2019: the largest ‖Φ(x + ε) − Φ(x)‖ / ‖Φ(x)‖ over draws of uniform "
           "noise ε in [−0.2, 0.2] (the model's input space), the class held", digits=3),
    Metric("sparseness", "complexity", "Sparseness (Gini)", "Gini", "higher",
           "Chalasani et al. 2020 (Gini index)", needs="map", digits=3, score=sparseness),
    Metric("complexity", "complexity", "Complexity (entropy)", "Entropy", "lower",
           "Bhatt et al. 2020 (entropy)", needs="map", digits=2, score=complexity),
    Metric("instances", "localisation", "Instances", "Instances", "",
           "boxes of the explained class in the image", needs="record", digits=0,
           ranked=False, shown_from=2),
    Metric("target", "", "Explained class", "Class", "", "the class each map explains",
           needs="record", digits=0, ranked=False, shown_from=math.inf),
    Metric("negative_share", "", "Negative activations %", "Negative", "",
           "share of the layer's activations below zero on the image: a signed layer",
           needs="record", digits=0, percent=True, ranked=False, shown_from=1),
    Metric("nonfinite", "", "Non-finite values", "Non-finite", "",
           "NaN or Inf values of the map, set to 0", needs="record", digits=0, ranked=False,
           shown_from=1),
)  # fmt: skip

BY_ID = {m.id: m for m in CATALOGUE}
# The leaderboard's order: rows sorted by this metric's mean, Win % and "p vs top" on it,
# its per-image spread plotted. Grad-CAM++'s headline faithfulness score.
PRIMARY = BY_ID["average_drop"]
# The record the gradient CAMs' capture makes of each layer: its share of negative
# activations (a signed layer, where some CAM formulas are ill-posed)
NEGATIVE = BY_ID["negative_share"]


def ranked() -> list[Metric]:
    """The leaderboard's columns, in order."""
    return [m for m in CATALOGUE if m.ranked and not m.variant_of]


def compared() -> list[Metric]:
    """The metrics whose rankings the agreement view compares: the leaderboard's and their
    variants under other settings."""
    return [m for m in CATALOGUE if m.ranked]


def of_group(group: str) -> list[Metric]:
    return [m for m in CATALOGUE if m.group == group]


def scored_by(needs: str, groups) -> list[Metric]:
    """The metrics a run computes with ``score`` from ``needs`` ("map" or "mask"), among
    the selected ``--metrics`` groups."""
    return [m for m in CATALOGUE if m.needs == needs and m.group in groups]


def group_help(group: str) -> str:
    """``--metrics`` help for a group: its sentence and the metric ids it adds."""
    ids = ", ".join(m.id for m in of_group(group))
    return f"{GROUPS[group]}" + (f": {ids}" if ids else "")


def get(metric_id: str) -> Metric:
    """The entry of a metric id; ``loc_D`` for any delta D follows the ``loc_0`` rule."""
    if metric_id in BY_ID:
        return BY_ID[metric_id]
    if metric_id.startswith("loc_"):
        delta = metric_id[4:]
        base = BY_ID["loc_0"]
        return Metric(metric_id, base.group, f"Loc({delta})", f"Loc({delta})", "higher",
                      base.paper, needs="boxes")  # fmt: skip
    raise KeyError(f"metric '{metric_id}' is not in evaluation/catalogue.py")
