"""View models: the stored tables shaped for the templates (no statistics here: those
are ``evaluation.leaderboard``'s)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation import catalogue
from evaluation.leaderboard import Entry

from ..store import COLUMNS, Store, map_data_path, overlay_path
from .site import thumb


def bench_results(out: Path) -> list[dict]:
    """This site's benchmark JSON (``reportgen bench``), then the ones shipped with
    reportgen (``evaluation/bench/results``, e.g. a GPU run), each file once."""
    from evaluation.bench.report import results

    shipped = Path(str(resources.files("evaluation.bench").joinpath("results")))
    found, seen = [], set()
    for result in results(out / "data" / "bench", shipped):
        if result["file"] not in seen:
            seen.add(result["file"])
            found.append(result)
    return found


PHASE_COLOURS = 10  # the stacked bar's segments: the largest phases, then "other"


def phase_view(phases: pd.DataFrame) -> list[dict]:
    """The phase table as the performance page shows it: largest first, each with its
    place in the stacked bar (the smallest ones merged into "other" there)."""
    rows = [dict(r._asdict()) for r in phases.itertuples(index=False)]
    for n, row in enumerate(rows):
        row["colour"] = n if n < PHASE_COLOURS - 1 else PHASE_COLOURS - 1
    return rows


def optional_table(store: Store, name: str) -> pd.DataFrame:
    """A table the run may not have made (its techniques were not selected): empty then."""
    if store.table_path(name).is_file():
        return store.read_table(name)
    return pd.DataFrame(columns=COLUMNS[name])


class ViewData:
    """What the views of what the network learned stored (``synthesis.csv`` and their own
    tables), as the section templates (``templates/sections/``) read it. The templates
    name their technique; nothing here does."""

    def __init__(self, store: Store, class_names: dict[int, str]):
        self.store, self.class_names = store, class_names
        self.tables: dict[str, pd.DataFrame] = {}
        # (technique, layer, item, variant) -> {metric: value}
        self.values: dict[tuple[str, str, str, str], dict[str, float]] = {}
        for r in self.table("synthesis").itertuples(index=False):
            variant = "" if pd.isna(r.variant) else str(r.variant)
            self.values.setdefault((r.technique, r.layer, str(r.item), variant), {})[r.metric] = (
                r.value
            )
        # a unit's highest activation on any photo, beside what optimisation reached
        self.natural = {
            (lay, i): v["natural"] for (_, lay, i, _), v in self.values.items() if "natural" in v
        }

    def table(self, name: str) -> pd.DataFrame:
        if name not in self.tables:
            self.tables[name] = optional_table(self.store, name)
        return self.tables[name]

    def items(self, technique: str, variant: str = "") -> dict[str, list[str]]:
        """``{layer: [item, ...]}`` of one technique (and variant), in stored order."""
        found: dict[str, list[str]] = {}
        for t, layer, item, v in self.values:
            if t == technique and v == variant:
                found.setdefault(layer, []).append(item)
        return found

    def grid(self, technique: str, variant: str = "") -> dict[str, dict[str, dict]]:
        """``{item: {layer: {metric: value}}}`` of one technique (and variant)."""
        found: dict[str, dict[str, dict]] = {}
        for layer, items in self.items(technique, variant).items():
            for item in items:
                found.setdefault(item, {})[layer] = self.values[technique, layer, item, variant]
        return found

    def layers(self) -> set[str]:
        """Every layer some view has a result at."""
        found = {layer for _, layer, _, _ in self.values}
        for name in ("patches", "dead"):
            found |= set(self.table(name).layer)
        return found

    def context(self) -> dict:
        """What a section template sees of the views."""
        return {
            "values": self.values,
            "natural": self.natural,
            "items": self.items,
            "grid": self.grid,
            "table": self.table,
            "class_names": self.class_names,
            "atlas": self.atlas,
        }

    def atlas(self, layer: str) -> dict | None:
        """What a layer page's atlas script reads (embedded in the page, so it works from
        disk): per channel its top images as ``[image index, activation, top, left, bottom,
        right]`` (the field of the peak, in input pixels), and the images' ids."""
        rows = self.table("atlas")
        rows = rows[rows.layer == layer] if len(rows) else rows
        if not len(rows):
            return None
        images = list(dict.fromkeys(rows.image))
        index = {name: i for i, name in enumerate(images)}
        top: list[list] = [[] for _ in range(int(rows.channel.max()) + 1)]
        for r in rows.sort_values(["channel", "rank"]).itertuples():
            box = [int(r.top), int(r.left), int(r.bottom), int(r.right)]
            top[int(r.channel)].append([index[r.image], float(f"{r.activation:.3g}"), *box])
        silent = [c for c, found in enumerate(top) if not found or found[0][1] <= 0]
        return {"images": images, "top": top, "silent": silent}


CLASS_BLIND = 0.9  # mean Spearman from which a method's maps hardly depend on the class


def labelled_classes(classes) -> set[int]:
    """An image's labelled class ids, from the images table's space-separated cell."""
    return {int(float(c)) for c in str(classes).split() if c != "nan"}


def prediction_marks(
    images: pd.DataFrame, predictions: pd.DataFrame, metrics: pd.DataFrame, names: dict
) -> dict[str, dict]:
    """Per image: its top-1 class and probability, whether that class is one of its
    labelled classes (``None`` without a label), and the class its maps explain, so a
    misclassified image is marked wherever it is shown and no map hides what it explains."""
    top = predictions[predictions["rank"] == 1].set_index("image")
    targets = metrics[metrics.metric == "target"] if not metrics.empty else metrics
    explained = targets.groupby("image").value.first() if not targets.empty else {}
    marks = {}
    for row in images.itertuples(index=False):
        if row.image not in top.index:
            continue
        best, labelled = top.loc[row.image], labelled_classes(row.classes)
        target = explained.get(row.image) if len(explained) else None
        target = None if target is None or pd.isna(target) else int(target)
        marks[row.image] = {
            "class_id": int(best.class_id),
            "class_name": best.class_name,
            "probability": float(best.probability),
            "correct": int(best.class_id) in labelled if labelled else None,
            "explains": None if target is None else names.get(target, f"class {target}"),
            "explains_id": target,
        }
    return marks


def target_rule(target: str) -> str:
    """What every map of a run explains, from its ``--target`` setting, in words."""
    if target == "predicted":
        return "the image's top-1 prediction"
    if target == "label":
        return "the image's first labelled class (its top-1 prediction when it has no label)"
    if target == "labels":
        return (
            "each annotated class of the image in turn (one row per image and class, its "
            "most probable class id, scored on that class's boxes: TorchRay's pointing-game "
            "protocol; the top-1 prediction for an image without labels)"
        )
    if str(target).startswith("topk:"):
        k = str(target).split(":")[1]
        return (
            f"each of the image's {k} most probable classes in turn (one row per image and "
            "rank: <id>.top2 ... explain the 2nd ... most probable class, each scored on the "
            "image's labelled boxes, and marked where that class is not one of its labels)"
        )
    return f"class {target}"


def random_logit_view(table: pd.DataFrame) -> list[dict]:
    """The random-logit test per method: mean Spearman and SSIM between each image's map
    for its target and for a random other class, most similar (most class-blind) first."""
    if table.empty:
        return []
    means = table.groupby("method")[["spearman", "ssim"]].mean()
    return [
        {
            "method": method,
            "spearman": r.spearman,
            "ssim": r.ssim,
            "blind": r.spearman >= CLASS_BLIND,
        }
        for method, r in means.sort_values("spearman", ascending=False).iterrows()
    ]


def cell_scores(metrics: pd.DataFrame) -> dict[tuple[str, str], dict[str, float]]:
    """Per-image scores: ``(image, "method@layer") -> {metric: value}``."""
    scores: dict[tuple[str, str], dict[str, float]] = {}
    for row in metrics.itertuples(index=False):
        scores.setdefault((row.image, f"{row.method}@{row.layer}"), {})[row.metric] = row.value
    return scores


def compact(value) -> float | None:
    """A score for the comparison page's JSON: 4 significant digits, ``None`` for NaN."""
    return None if value is None or not np.isfinite(value) else float(f"{value:.4g}")


def compare_data(
    entries: list[Entry], ids: list[str], shape: dict, scores: dict, methods: dict, scales: dict
) -> dict:
    """What compare.html draws its grid from (embedded in the page, so it works from disk):
    path patterns with ``{image}``, ``{method}``, ``{layer}``, and per-image scores."""
    keys = [f"{e.method}@{e.layer}" for e in entries]
    holes = ("{image}", "{method}", "{layer}")
    own = "img/" + overlay_path(*holes)
    family = {
        k: methods.get(e.method, {}).get("family") for k, e in zip(keys, entries, strict=True)
    }
    cells = [m for m in catalogue.CATALOGUE if m.cell]  # the scores under each map
    return {
        "paths": {
            "own": thumb(own),
            "full_own": own,
            "map": "img/" + map_data_path(*holes),
            "plain_photo": thumb("img/photos/{image}.jpg"),
            "photo": thumb("img/photos/{image}.boxes.jpg"),
            "image_page": "images/{image}.html",
            "method_page": "methods/{method}.html#at-{layer}",
        },
        "titles": {
            k: methods.get(e.method, {}).get("title", e.method)
            for k, e in zip(keys, entries, strict=True)
        },
        "scales": {k: compact(scales.get(k)) for k in keys},
        "shapes": {image: shape[image] for image in ids},
        "metrics": [
            {"id": m.id, "short": m.short, "digits": m.digits, "percent": m.percent} for m in cells
        ],
        "scores": {
            image: {
                k: [compact(scores[image, k].get(m.id)) for m in cells]
                for k in keys
                if (image, k) in scores
            }
            for image in ids
        },
        "default": {"m": ([k for k in keys if family[k] != "baseline"] or keys)[:4], "i": ids[:4]},
    }
