"""``reportgen render``: the site from the stored tables and images (never imports torch)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from evaluation.metrics import bootstrap_ci, win_rate

from .store import Store, atomic_write, feature_grid_path, overlay_path

# Metric columns of the leaderboard: (metric id, heading, better, paper)
METRICS = [
    ("average_drop", "Average Drop %", "lower", "Chattopadhay et al. 2018, sec. 4.1"),
    (
        "increase_in_confidence",
        "Increase in Confidence %",
        "higher",
        "Chattopadhay et al. 2018, sec. 4.1",
    ),
    ("loc_0", "Loc(0)", "higher", "Chattopadhay et al. 2018, eq. 26"),
    ("loc_0.25", "Loc(0.25)", "higher", "Chattopadhay et al. 2018, eq. 26"),
    ("loc_0.5", "Loc(0.5)", "higher", "Chattopadhay et al. 2018, eq. 26"),
]


@dataclass
class Entry:
    """One leaderboard row: a method at a layer."""

    method: str
    layer: str
    images: int
    stats: dict[str, tuple[float, float, float]]  # metric -> (mean, lo, hi)
    win: float  # mean Win % against every other entry


def leaderboard(metrics: pd.DataFrame) -> tuple[list[Entry], pd.DataFrame]:
    """Means with bootstrap 95 % CIs per (method, layer), and the pairwise Win % matrix."""
    if metrics.empty:
        return [], pd.DataFrame()
    drops = metrics[metrics.metric == "average_drop"].pivot_table(
        index="image", columns=["method", "layer"], values="value"
    )
    drops = drops.dropna()  # Win % compares methods on the same images
    keys = [f"{m}@{lay}" for m, lay in drops.columns]
    matrix = pd.DataFrame(np.nan, index=keys, columns=keys)
    for a, col_a in zip(keys, drops.columns, strict=True):
        for b, col_b in zip(keys, drops.columns, strict=True):
            if a != b and len(drops):
                matrix.loc[a, b] = win_rate(drops[col_a], drops[col_b])
    entries = []
    for (method, layer), group in metrics.groupby(["method", "layer"], sort=False):
        stats = {}
        for metric, *_ in METRICS:
            values = group.loc[group.metric == metric, "value"].to_numpy(dtype=float)
            if values.size:
                stats[metric] = (float(values.mean()), *bootstrap_ci(values))
        key = f"{method}@{layer}"
        win = (
            float(matrix.loc[key].drop(key).mean())
            if key in matrix.index and len(keys) > 1
            else float("nan")
        )
        entries.append(Entry(method, layer, int(group.image.nunique()), stats, win))
    entries.sort(key=lambda e: e.stats.get("average_drop", (np.inf,))[0])
    return entries, matrix


def number(value, digits: int = 2) -> str:
    """Jinja filter: a number for a table cell, an en dash when missing."""
    try:
        if value is None or np.isnan(value):
            return "–"
    except TypeError:
        return str(value)
    return f"{value:.{digits}f}"


def environment() -> Environment:
    folder = resources.files("reportgen.templates")
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = number
    env.globals["overlay"] = lambda image, method, layer, shared=False: (
        "img/" + overlay_path(image, method, layer, shared)
    )
    env.globals["feature_grid"] = lambda image, layer: "img/" + feature_grid_path(image, layer)
    return env


def sparsity_plot(layers: pd.DataFrame, path: Path) -> None:
    """Sparsity (fraction of zero activations) against depth: each image, and the mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = layers.drop_duplicates("layer").sort_values("depth")
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    for _, group in layers.groupby("image"):
        group = group.sort_values("depth")
        ax.plot(group.depth, group.sparsity, color="#9aa5b1", lw=0.8, alpha=0.7)
    mean = layers.groupby("depth").sparsity.mean()
    ax.plot(mean.index, mean.values, color="#d1495b", lw=2.5, marker="o", label="mean over images")
    ax.set_xticks(order.depth, order.layer, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("fraction of zeros")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="svg"))
    plt.close(fig)


class SiteWriter:
    """Writes pages and files only when their content changed, like coverage.py's report.

    A status file keeps a hash of each output, so an unchanged re-render writes
    nothing and says so.
    """

    STATUS = ".reportgen-status.json"

    def __init__(self, out: Path, env: Environment):
        self.out, self.env = out, env
        path = out / self.STATUS
        self.status: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
        self.written = 0
        self.pages = 0

    def _changed(self, rel: str, digest: str) -> bool:
        if self.status.get(rel) == digest and (self.out / rel).is_file():
            return False
        self.status[rel] = digest
        self.written += rel.endswith(".html")
        return True

    def page(self, rel: str, template: str, **context) -> None:
        self.pages += 1
        html = self.env.get_template(template).render(
            root="../" * rel.count("/"), page=rel, **context
        )
        if self._changed(rel, hashlib.sha256(html.encode()).hexdigest()):
            atomic_write(self.out / rel, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))

    def file(self, rel: str, source: bytes, make) -> None:
        """``make(path)`` writes ``rel`` when ``source`` (its input) changed."""
        if self._changed(rel, hashlib.sha256(source).hexdigest()):
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            make(self.out / rel)

    def save(self) -> None:
        text = json.dumps(self.status, indent=0, sort_keys=True)
        atomic_write(self.out / self.STATUS, lambda tmp: Path(tmp).write_text(text))


def render(out: str | Path) -> tuple[int, int]:
    """Render the site under ``out``: ``(pages written, pages in the site)``."""
    store = Store(out)
    run = store.read_json("run")
    images = store.read_table("images")
    predictions = store.read_table("predictions")
    metrics = store.read_table("metrics")
    timings = store.read_table("timings")
    layers = store.read_table("layers")
    entries, matrix = leaderboard(metrics)
    out = Path(out)
    site = SiteWriter(out, environment())

    static = resources.files("reportgen.templates").joinpath("static")
    for item in static.iterdir():
        if item.is_file():
            content = item.read_bytes()
            site.file(f"assets/{item.name}", content, lambda path, c=content: path.write_bytes(c))
    site.file(".nojekyll", b"", lambda path: path.touch())  # Pages: serve every file as is
    if not layers.empty:
        site.file(
            "img/sparsity.svg",
            store.table_path("layers").read_bytes(),
            lambda path: sparsity_plot(layers, path),
        )

    ok = images[images.status == "ok"]
    converted = ok[ok.note.notna()] if "note" in ok else ok.iloc[:0]  # "" reads as NaN
    methods = run["techniques"]  # the registry's text, stored by the run
    scored = (
        [
            (m, lay)
            for m, lay in metrics[["method", "layer"]].drop_duplicates().itertuples(index=False)
        ]
        if not metrics.empty
        else []
    )
    per_image = {img: g for img, g in metrics.groupby("image")} if not metrics.empty else {}
    feature_layers = (
        list(layers.drop_duplicates("layer").sort_values("depth").layer) if not layers.empty else []
    )
    common = {
        "run": run,
        "methods": methods,
        "feature_layers": feature_layers,
        "image_ids": list(ok.image),
        "metric_defs": METRICS,
    }

    site.page(
        "index.html",
        "index.html",
        entries=entries,
        matrix=matrix,
        images=images,
        converted=converted,
        timings=timings,
        layers=layers,
        **common,
    )
    ids = list(ok.image)
    for i, row in enumerate(ok.itertuples(index=False)):
        values = per_image.get(row.image, pd.DataFrame(columns=metrics.columns))
        cards = []
        for method, layer in scored:
            sel = values[(values.method == method) & (values.layer == layer)]
            cards.append(
                {
                    "method": method,
                    "layer": layer,
                    "values": dict(zip(sel.metric, sel.value, strict=True)),
                }
            )
        site.page(
            f"images/{row.image}.html",
            "image.html",
            image=row,
            predictions=predictions[predictions.image == row.image],
            classes={int(float(c)) for c in str(row.classes).split() if c != "nan"},
            cards=cards,
            prev=ids[i - 1] if i else None,
            next=ids[i + 1] if i + 1 < len(ids) else None,
            **common,
        )
    for name, technique in methods.items():
        mine = [e for e in entries if e.method == name]
        site.page(
            f"methods/{name}.html",
            "method.html",
            technique=technique,
            mine=mine,
            layers_of=[e.layer for e in mine],
            **common,
        )
    for layer in feature_layers:
        site.page(
            f"layers/{layer}.html",
            "layer.html",
            layer=layer,
            stats=layers[layers.layer == layer],
            **common,
        )
    site.save()
    return site.written, site.pages
