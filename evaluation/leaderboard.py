"""The leaderboard's statistics, from the metrics table alone (no torch, no pages): per
(method, layer) means with bootstrap confidence intervals, each row against each
metric's best (``rankings``), pairwise Win % and Wilcoxon tests Holm-corrected over every
pair, the split by number of instances, and our
figures beside the published ones. The renderer shows what these return."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import catalogue
from .metrics import bootstrap_ci, group_mean, pairwise
from .published import PUBLISHED
from .rankings import ALPHA, Ranking, rankings

SIGNIFICANCE = ALPHA  # Holm-corrected Wilcoxon p below this: a real difference
SIGNED_SHARE = 1.0  # % of a layer's activations below zero from which it counts as signed
FEW_IMAGES = 5  # a cell resting on fewer images is greyed with its count: a mean of 1-4 says little


@dataclass
class Entry:
    """One leaderboard row: a method at a layer."""

    method: str
    layer: str
    images: int
    stats: dict[str, tuple[float, float, float]]  # metric -> (mean, lo, hi)
    win: float  # mean Win % (the primary metric) against every other entry
    # metric -> Holm-corrected Wilcoxon p against that metric's best row (k - 1 tests)
    versus: dict[str, float] = field(default_factory=dict)
    best: set[str] = field(default_factory=set)  # the metrics this row has the best mean rank of
    ranks: dict[str, float] = field(default_factory=dict)  # metric -> mean rank (1 = best)
    counts: dict[str, int] = field(default_factory=dict)  # metric -> images it rests on

    @property
    def versus_best(self) -> float:
        """Holm-corrected Wilcoxon p of the primary metric against the top row (rows are
        sorted by its mean rank, so the top row is that column's best)."""
        return self.versus.get(catalogue.PRIMARY.id, float("nan"))


Pairwise = tuple[pd.DataFrame, pd.DataFrame]  # Win % of row over column, Holm-corrected p


def pairwise_tables(
    metrics: pd.DataFrame, only: Collection[str] | None = None
) -> dict[str, Pairwise]:
    """Per metric (those in ``only``, if given), every pair of rows compared image by image:
    the share of images where the row is strictly better than the column, and the
    Holm-corrected (over that metric's pairs) Wilcoxon signed-rank p-value. Images a row
    has no value for are left out of its pairs."""
    tables = {}
    for m in catalogue.ranked():
        if only is not None and m.id not in only:
            continue
        metric, better = m.id, m.better
        values = metrics[metrics.metric == metric].pivot_table(
            index="image", columns=["method", "layer"], values="value"
        )
        if values.shape[1] < 2:
            continue
        keys = [f"{m}@{lay}" for m, lay in values.columns]
        per_key = {k: values[c].to_numpy() for k, c in zip(keys, values.columns, strict=True)}
        # filled as arrays: a pandas .loc per cell made the default site's tables 2.6 s, not 1.5
        at = {k: i for i, k in enumerate(keys)}
        wins, pvalues = np.full((len(keys),) * 2, np.nan), np.full((len(keys),) * 2, np.nan)
        for row in pairwise(per_key, lower_is_better=better == "lower"):
            a, b = at[row["a"]], at[row["b"]]
            wins[a, b], wins[b, a] = row["win_rate"], row["loss_rate"]
            pvalues[a, b] = pvalues[b, a] = row["p_holm"]
        tables[metric] = tuple(pd.DataFrame(t, index=keys, columns=keys) for t in (wins, pvalues))
    return tables


def leaderboard(
    metrics: pd.DataFrame,
    classes: pd.Series | None = None,
    found: dict[str, Ranking] | None = None,
    pairs: bool = True,
) -> tuple[list[Entry], dict[str, Pairwise]]:
    """Means with bootstrap 95 % CIs per (method, layer), the best mean rank on the primary
    metric first, each row marked with the metrics it ranks best at and its p-value
    against each metric's best row (``rankings``: k - 1 tests, Holm-corrected); and
    the pairwise tables of every metric. ``classes`` maps an image to its class (the
    pointing game is averaged per class); ``found``: the rankings, if already made.
    ``pairs=False``: only the primary metric's table (the win rates need it), for a caller
    that shows no pairs (on the default site's metrics 0.76 s instead of 2.29 s)."""
    if metrics.empty:
        return [], {}
    tables = pairwise_tables(metrics, None if pairs else [catalogue.PRIMARY.id])
    found = rankings(metrics) if found is None else found
    wins = tables.get(catalogue.PRIMARY.id, (pd.DataFrame(),))[0]
    entries = []
    for (method, layer), group in metrics.groupby(["method", "layer"], sort=False):
        stats, counts = {}, {}
        for m in catalogue.ranked():
            metric = m.id
            rows = group[group.metric == metric]
            values = rows.value.to_numpy(dtype=float)
            if not values.size:
                continue
            counts[metric] = int(rows.image.nunique())
            if m.per_class and classes is not None:  # mean of per-class means
                groups = rows.image.map(classes).fillna(rows.image).tolist()
                stats[metric] = (group_mean(values, groups), *bootstrap_ci(values, groups=groups))
            else:
                stats[metric] = (float(values.mean()), *bootstrap_ci(values))
        key = f"{method}@{layer}"
        win = float(wins.loc[key].drop(key).mean()) if key in wins.index else float("nan")
        entries.append(Entry(method, layer, int(group.image.nunique()), stats, win, counts=counts))
    by_key = {(e.method, e.layer): e for e in entries}
    for metric, ranked in found.items():  # the best mean rank, and each row against it
        for i, key in enumerate(ranked.keys):
            by_key[key].ranks[metric] = float(ranked.mean_ranks[i])
            if ranked.mean_ranks[i] == ranked.mean_ranks[0]:  # a tie for the best is a tie
                by_key[key].best.add(metric)
            else:
                by_key[key].versus[metric] = float(ranked.p_vs_best[i])
    primary = catalogue.PRIMARY.id
    entries.sort(key=lambda e: (e.ranks.get(primary, np.inf), e.stats.get(primary, (np.inf,))[0]))
    return entries, tables


def negative_shares(metrics: pd.DataFrame) -> dict[str, float]:
    """``{layer: mean % of its activations below zero}`` over the images, for every layer
    the gradient CAMs' capture measured (its ``negative_share`` records); a layer is
    signed from ``SIGNED_SHARE``."""
    rows = metrics[metrics.metric == catalogue.NEGATIVE.id]
    if rows.empty:
        return {}
    shares = rows.drop_duplicates(["image", "layer"]).groupby("layer").value.mean()
    return {layer: float(v) for layer, v in shares.items()}


def image_classes(images: pd.DataFrame) -> pd.Series:
    """Image -> its class for per-class means: the annotated class ids (``281 282`` for a
    cat, whatever the label's wording, e.g. ``cat ×3 on china``), else the label, else the
    image itself (a class of its own)."""
    table = images.set_index("image")
    keys = pd.Series(table.index, index=table.index, dtype=object)
    for column in ("label", "classes"):  # later columns win
        if column in table:
            text = table[column].astype(object).where(table[column].notna(), "").astype(str)
            keys = text.where(text.str.strip() != "", keys)
    return keys


def instance_split(metrics: pd.DataFrame, entries: list[Entry]) -> dict:
    """Localisation means with bootstrap CIs per entry on the images with one instance of the
    explained class and on those with several: ``{"counts", "metrics", "rows"}``, or ``{}``
    when no image has several (nothing to split)."""
    if metrics.empty:
        return {}
    instances = metrics[metrics.metric == "instances"].groupby("image").value.first()
    if not (instances >= 2).any():
        return {}
    groups = {
        "single": set(instances.index[instances < 2]),
        "multi": set(instances.index[instances >= 2]),
    }
    present = [m.id for m in catalogue.ranked() if m.split and m.id in set(metrics.metric)]
    rows = []
    for e in entries:
        mine = metrics[(metrics.method == e.method) & (metrics.layer == e.layer)]
        stats, counts = {}, {}
        for metric in present:
            values = mine[mine.metric == metric]
            for group, ids in groups.items():
                v = values[values.image.isin(ids)].value.to_numpy(dtype=float)
                if v.size:
                    stats[metric, group] = (float(v.mean()), *bootstrap_ci(v))
                    counts[metric, group] = int(v.size)
        rows.append({"method": e.method, "layer": e.layer, "stats": stats, "counts": counts})
    return {
        "counts": {group: len(ids) for group, ids in groups.items()},
        "metrics": [m for m in catalogue.ranked() if m.id in present],
        "rows": rows,
    }


def published_rows(entries: list[Entry], cam_layer: str) -> list[dict]:
    """Our mean [CI] beside each published figure of the same metric and method (the CAM
    methods at the run's first CAM layer, pixel methods at the input); rows we did not
    compute show a dash."""
    ours = {
        (e.method, metric): (stat, e.images)
        for e in entries
        if e.layer in (cam_layer, "input")
        for metric, stat in e.stats.items()
    }
    heading = {m.id: m.heading for m in catalogue.ranked()}
    return [
        {
            "metric": heading.get(p.metric, p.metric),
            "method": p.method,
            "published": p.value,
            "model": p.model,
            "data": p.data,
            "source": p.source,
            "ours": ours.get((p.method, p.metric), (None, 0))[0],
            "images": ours.get((p.method, p.metric), (None, 0))[1],
        }
        for p in PUBLISHED
    ]


SAME_MAP = 1e-6  # 1 - cosine similarity under which two rectified maps are the same


def _same_map(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Equal up to a positive scale (both empty counts as equal)."""
    if a is None or b is None or a.shape != b.shape:
        return False
    norms = float(np.sqrt((a @ a) * (b @ b)))
    if norms == 0:
        return not a.any() and not b.any()
    return 1 - float(a @ b) / norms <= SAME_MAP


def same_map_groups(
    load: Callable[[str, str], np.ndarray | None],
    keys: Sequence[tuple[str, str]],
    images: Sequence[str],
) -> list[list[tuple[str, str]]]:
    """Rows at one layer whose rectified maps (what every score reads) are the same up to a
    positive scale on every image, each group in ``keys`` order: their scores can differ
    only by the rounding of the metric passes, so the leaderboard says so instead of
    ranking them apart. ``load(image, "method@layer")``: a stored map. Pairs are checked
    image by image, so only the maps of pairs still equal are read."""
    by_layer: dict[str, list[tuple[str, str]]] = {}
    for key in keys:
        by_layer.setdefault(key[1], []).append(key)
    groups = []
    for rows in by_layer.values():
        pairs = set(itertools.combinations(rows, 2))
        for image in images:
            if not pairs:
                break
            maps = {}
            for key in {k for pair in pairs for k in pair}:
                found = load(image, f"{key[0]}@{key[1]}")
                maps[key] = None if found is None else np.maximum(found, 0).ravel().astype(float)
            pairs = {(a, b) for a, b in pairs if _same_map(maps[a], maps[b])}
        first: dict[tuple[str, str], tuple[str, str]] = {}
        for a, b in sorted(pairs, key=lambda p: (rows.index(p[0]), rows.index(p[1]))):
            first.setdefault(b, first.get(a, a))
        for head in dict.fromkeys(first.values()):
            groups.append([head, *(k for k in rows if first.get(k) == head)])
    return groups
