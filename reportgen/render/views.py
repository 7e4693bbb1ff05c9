"""View models: the stored tables shaped for the templates (no statistics here: those
are ``evaluation.leaderboard``'s)."""

from __future__ import annotations

import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation import catalogue
from evaluation.leaderboard import Entry

from ..store import COLUMNS, Store, overlay_path, raw_path
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


def hue(text: str) -> int:
    """A stable colour (hue in degrees) for a class name or id."""
    return zlib.crc32(text.encode()) % 360


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


def learned_context(store: Store, class_names: dict[int, str]) -> dict:
    """What learned.html, the layer pages and the channel pages show of the synthesis and
    dataset views, from ``synthesis``, ``patches``, ``dead`` and ``embedding``."""
    table = optional_table(store, "synthesis")
    values: dict[tuple[str, str, str, str], dict[str, float]] = {}
    for r in table.itertuples(index=False):
        variant = "" if pd.isna(r.variant) else str(r.variant)
        values.setdefault((r.technique, r.layer, str(r.item), variant), {})[r.metric] = r.value

    def items(technique: str, variant: str = "") -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for t, layer, item, v in values:
            if t == technique and v == variant:
                found.setdefault(layer, []).append(item)
        return found

    natural = {(lay, i): v["natural"] for (t, lay, i, _), v in values.items() if "natural" in v}
    fooling = [
        {"image": item, **v, "goal_name": class_names.get(int(v["goal"]), "")}
        for (t, _, item, _), v in values.items()
        if t == "fooling"
    ]
    points = optional_table(store, "embedding")
    if not points.empty:  # positions in % of the plot, 4 % margins
        for axis in ("x", "y"):
            lo, hi = points[axis].min(), points[axis].max()
            points[axis] = 4 + 92 * (points[axis] - lo) / (hi - lo if hi > lo else 1)
        points["pred_hue"] = [hue(str(c)) for c in points.predicted]
        points["label_hue"] = [hue(str(c)) for c in points.label]
    inversion_layers = list(items("inversion"))
    inversions = {}
    for layer, images in items("inversion").items():
        for image in images:
            inversions.setdefault(image, {})[layer] = values["inversion", layer, image, ""]
    return {
        "inversion_means": {
            layer: float(
                np.mean([v[layer]["relative_error"] for v in inversions.values() if layer in v])
            )
            for layer in inversion_layers
        },
        "values": values,
        "filter_units": items("filter_vis", "fourier"),
        "pixel_units": items("filter_vis", "pixel"),
        "natural": natural,
        "class_items": [
            {"id": int(item), "name": class_names.get(int(item), item), **values[t, lay, item, ""]}
            for t, lay, item, _ in values
            if t == "class_model"
        ],
        "dreams": items("deepdream"),
        "inversion_layers": inversion_layers,
        "inversions": inversions,
        "fooling": fooling,
        "patches": optional_table(store, "patches"),
        "dead": optional_table(store, "dead"),
        "points": points,
    }


def unit_views(learned: dict, layer: str, channel: int) -> dict:
    """A channel page's filter visualisations and top patches (absent: not computed)."""
    key = str(int(channel))
    patches = learned["patches"]
    return {
        "vis": {
            variant: learned["values"][("filter_vis", layer, key, variant)]
            for variant in ("fourier", "pixel")
            if ("filter_vis", layer, key, variant) in learned["values"]
        },
        "natural": learned["natural"].get((layer, key)),
        "patches": patches[
            (patches.layer == layer) & (patches.channel == int(channel))
        ].sort_values("rank"),
    }


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
    own, shared = "img/" + overlay_path(*holes), "img/" + overlay_path(*holes, shared=True)
    family = {
        k: methods.get(e.method, {}).get("family") for k, e in zip(keys, entries, strict=True)
    }
    cells = [m for m in catalogue.CATALOGUE if m.cell]  # the scores under each map
    return {
        "paths": {
            "own": thumb(own),
            "shared": thumb(shared),
            "raw": "img/" + raw_path(*holes),
            "full_own": own,
            "full_shared": shared,
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
