"""``reportgen render``: the site from the stored tables and images (never imports torch)."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from PIL import Image

from evaluation import catalogue
from evaluation.leaderboard import (
    SIGNIFICANCE,
    Entry,
    image_classes,
    instance_split,
    leaderboard,
    published_rows,
)
from evaluation.published import PUBLISHED_WIN

from .store import (
    COLUMNS,
    Store,
    atomic_write,
    channel_map_path,
    feature_grid_path,
    learned_path,
    overlay_path,
    raw_path,
)

THUMB_SIZE = 192  # long side of gallery thumbnails, px
RAW_DATA = ("data/maps", "data/parts")  # kept for notebooks and --resume, not published
# Size budget of the published site (README: Output layout): a fixed share for what every
# site has once (channel pages and their overlays, plots, assets, and since the synthesis
# views about 3.2 MB of filter visualisations, top patches, sanity strips and class models
# on the default run) and a share per image
BUDGET_FIXED = 5_000_000
BUDGET_PER_IMAGE = 2_500_000


def number(value, digits: int = 2) -> str:
    """Jinja filter: a number for a table cell, an en dash when missing."""
    try:
        if value is None or np.isnan(value):
            return "–"
    except TypeError:
        return str(value)
    return f"{value:.{digits}f}"


def significant(value, digits: int = 3) -> str:
    """Jinja filter: a number of any magnitude (a map's scale) in ``digits`` significant digits."""
    return number(value) if number(value) == "–" else f"{value:.{digits}g}"


def thumb(path: str) -> str:
    """The WebP gallery thumbnail of the site image ``img/<rel>``: ``img/thumbs/<rel>.webp``."""
    assert path.startswith("img/"), path
    return "img/thumbs/" + path[len("img/") :].rsplit(".", 1)[0] + ".webp"


def environment() -> Environment:
    folder = resources.files("reportgen.templates")
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = number
    env.globals["catalogue"] = catalogue.CATALOGUE  # the scores an image page lists, in order
    env.filters["sig"] = significant
    env.globals["overlay"] = lambda image, method, layer, shared=False: (
        "img/" + overlay_path(image, method, layer, shared)
    )
    env.globals["raw_map"] = lambda image, method, layer: "img/" + raw_path(image, method, layer)
    env.globals["thumb"] = thumb
    env.globals["channel_map"] = lambda layer, channel, image: (
        "img/" + channel_map_path(layer, int(channel), image)
    )
    env.globals["feature_grid"] = lambda image, layer: "img/" + feature_grid_path(image, layer)
    env.globals["learned"] = lambda technique, key, variant="": (
        "img/" + learned_path(technique, str(key), variant)
    )
    return env


@contextmanager
def svg_figure(path: Path, *args, **kwargs) -> Iterator[tuple]:
    """``(fig, axes)`` of ``plt.subplots(*args, **kwargs)`` at 100 dpi, laid out and written
    to ``path`` as SVG (atomically) when the block ends: every plot of the site."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, dpi=100, **kwargs)
    try:
        yield fig, axes
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="svg"))
    finally:
        plt.close(fig)


def curves_plot(curves: dict[str, dict[str, list[float]]], order: list[str], path: Path) -> None:
    """Mean insertion and deletion curves (RISE) of each method@layer, best AD first."""
    from matplotlib import colormaps

    with svg_figure(path, 1, 2, figsize=(9, 3.6), sharey=True) as (fig, axes):
        colours = colormaps["tab20"]
        keys = [k for k in order if k in curves]
        for panel, mode in zip(axes, ("insertion", "deletion"), strict=True):
            for i, key in enumerate(keys):
                values = curves[key].get(mode)
                if values:
                    x = np.linspace(0, 1, len(values))
                    panel.plot(x, values, lw=1.4, color=colours(i % 20), label=key)
            better = "higher" if mode == "insertion" else "lower"
            panel.set_title(f"{mode} (area: {better} is better)", fontsize=10)
            panel.set_xlabel(f"share of pixels {'inserted' if mode == 'insertion' else 'deleted'}")
            panel.grid(alpha=0.3)
        axes[0].set_ylabel("probability of the class")
        axes[1].legend(fontsize=6, loc="upper right", ncol=2)


def drop_plot(metrics: pd.DataFrame, order: list[str], path: Path) -> None:
    """Average Drop per image for each method@layer (a dot per image, the mean as a bar)."""
    drops = metrics[metrics.metric == "average_drop"]
    by_key = {
        f"{m}@{lay}": g.value.to_numpy() for (m, lay), g in drops.groupby(["method", "layer"])
    }
    keys = [k for k in order if k in by_key]
    with svg_figure(path, figsize=(7, 0.24 * len(keys) + 0.9)) as (fig, ax):
        rng = np.random.default_rng(0)
        for i, key in enumerate(keys):
            values = by_key[key]
            ax.scatter(
                values, i + rng.uniform(-0.15, 0.15, len(values)), s=9, color="#3d7ea6", alpha=0.7
            )
            ax.plot([values.mean()] * 2, [i - 0.3, i + 0.3], color="#d1495b", lw=2)
        ax.set_yticks(range(len(keys)), keys, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("drop % per image (red: mean; lower is better)")
        ax.grid(axis="x", alpha=0.3)


def timing_plot(timings: pd.DataFrame, path: Path) -> None:
    """Milliseconds per image per technique, log scale, slowest at the top."""
    rows = timings.sort_values("ms_per_image")
    labels = [
        m if lay in ("input", "all") else f"{m}@{lay}"
        for m, lay in zip(rows.method, rows.layer, strict=True)
    ]
    with svg_figure(path, figsize=(7, 0.22 * len(rows) + 0.8)) as (fig, ax):
        ax.barh(labels, rows.ms_per_image, color="#3d7ea6")
        ax.set_xscale("log")
        ax.set_xlabel("ms per image")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)


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


def sparsity_plot(layers: pd.DataFrame, path: Path) -> None:
    """Sparsity (fraction of zero activations) against depth: each image, and the mean."""
    order = layers.drop_duplicates("layer").sort_values("depth")
    with svg_figure(path, figsize=(7, 3.2)) as (fig, ax):
        for _, group in layers.groupby("image"):
            group = group.sort_values("depth")
            ax.plot(group.depth, group.sparsity, color="#9aa5b1", lw=0.8, alpha=0.7)
        mean = layers.groupby("depth").sparsity.mean()
        ax.plot(
            mean.index, mean.values, color="#d1495b", lw=2.5, marker="o", label="mean over images"
        )
        ax.set_xticks(order.depth, order.layer, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("fraction of zeros")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)


def silent_plot(dead: pd.DataFrame, path: Path) -> None:
    """Share of each layer's channels that never fire on the data set, against depth."""
    order = dead.sort_values("depth")
    with svg_figure(path, figsize=(7, 3.2)) as (fig, ax):
        ax.bar(order.depth, 100 * order.silent_share, color="#d1495b")
        for depth, silent, channels, share in zip(
            order.depth, order.silent, order.channels, order.silent_share, strict=True
        ):
            ax.annotate(
                f"{silent}/{channels}", (depth, 100 * share), ha="center", va="bottom", fontsize=7
            )
        ax.set_xticks(order.depth, order.layer, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("% channels never > 0")
        ax.grid(alpha=0.3, axis="y")


def sanity_plot(sanity: pd.DataFrame, path: Path) -> None:
    """Mean Spearman and SSIM to the trained model's maps, per method, as the weights are
    re-initialised from the logits down (Adebayo et al. 2018, fig. 2)."""
    steps = sanity.drop_duplicates("step").sort_values("step")
    means = sanity.groupby(["method", "step"])[["spearman", "ssim"]].mean()
    from matplotlib import colormaps

    with svg_figure(path, 1, 2, figsize=(13, 4), sharey=True) as (fig, axes):
        colours = colormaps["tab20"].colors  # one colour per method (up to 20)
        for ax, column, title in zip(
            axes, ("spearman", "ssim"), ("Spearman rank correlation", "SSIM"), strict=True
        ):
            for k, (method, group) in enumerate(means.groupby(level="method")):
                style = "--" if method.startswith("baseline") else "-"
                steps_of = group.index.get_level_values("step")
                ax.plot(steps_of, group[column], style, color=colours[k % 20], label=method)
            ax.set_xticks(steps.step, steps.block, rotation=60, ha="right", fontsize=7)
            ax.set_title(title, fontsize=10)
            ax.set_ylim(min(-0.1, float(means.min().min()) - 0.05), 1.05)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("similarity to the trained model's map")
        axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))


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


def write_thumbnail(source: Path, target: Path) -> None:
    """A WebP copy of ``source`` with a long side of ``THUMB_SIZE`` px."""

    def write(tmp: str) -> None:
        with Image.open(source) as image:
            small = image.convert("RGB")
            small.thumbnail((THUMB_SIZE, THUMB_SIZE))
            small.save(tmp, "WEBP", quality=75)

    atomic_write(target, write)


@dataclass
class SiteSize:
    """Bytes on disk: what a Pages deployment publishes, and the raw data it leaves out."""

    published: int  # everything but RAW_DATA: pages, assets, images, tables
    raw_data: int  # RAW_DATA: raw maps (npz) and parts
    images: int  # explained images

    @property
    def budget(self) -> float:
        return BUDGET_FIXED + BUDGET_PER_IMAGE * self.images

    @property
    def per_image(self) -> float:
        return self.published / max(self.images, 1)

    @classmethod
    def recorded(cls, out: str | Path) -> SiteSize:
        """The size the last ``render(out)`` measured (kept in its status file)."""
        status = json.loads((Path(out) / SiteWriter.STATUS).read_text())
        return cls(**status["size"])

    def __str__(self) -> str:
        return (
            f"site {self.published / 1e6:.1f} MB ({self.per_image / 1e6:.2f} MB per image; "
            f"budget {self.budget / 1e6:.1f} MB = {BUDGET_FIXED / 1e6:g} + "
            f"{BUDGET_PER_IMAGE / 1e6:g} per image), "
            f"plus {self.raw_data / 1e6:.1f} MB of raw maps and parts (not published)"
        )


def site_size(out: str | Path, images: int) -> SiteSize:
    """Measure the site under ``out`` that explains ``images`` images (the status file aside)."""
    out = Path(out)
    published = raw = 0
    for path in out.rglob("*"):
        if path.is_file() and path.name != SiteWriter.STATUS:
            rel = path.relative_to(out).as_posix()
            if rel.startswith(RAW_DATA):
                raw += path.stat().st_size
            else:
                published += path.stat().st_size
    return SiteSize(published, raw, images)


class SiteWriter:
    """Writes pages and files only when their content changed, like coverage.py's report.

    A status file keeps a hash of each output's input, so an unchanged re-render writes
    nothing and says so; outputs of an earlier render that this one did not make (an old
    hashed asset, the page of an image no longer in the run) are deleted.
    """

    STATUS = ".reportgen-status.json"
    OWNED = ("assets", "img/thumbs")  # folders that hold only what render writes

    def __init__(self, out: Path, env: Environment):
        self.out, self.env = out, env
        path = out / self.STATUS
        status = json.loads(path.read_text()) if path.is_file() else {}
        self.status: dict[str, str] = status.get("files", {})
        self.seen: set[str] = set()
        self.written = 0
        self.pages = 0

    def _changed(self, rel: str, digest: str) -> bool:
        self.seen.add(rel)
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

    def thumbnail(self, path: str) -> None:
        """The thumbnail of the site image ``path`` (see ``thumb``), when that image exists."""
        source = self.out / path
        if source.is_file():
            self.file(thumb(path), source.read_bytes(), lambda t: write_thumbnail(source, t))

    def assets(self, folder) -> dict[str, str]:
        """Copy the static files under content-hashed names; returns
        ``{"style.css": "assets/style.<hash8>.css", ...}``."""
        names = {}
        for item in sorted(folder.iterdir(), key=lambda item: item.name):
            if item.is_file():
                content = item.read_bytes()
                stem, _, suffix = item.name.partition(".")
                rel = f"assets/{stem}.{hashlib.sha256(content).hexdigest()[:8]}.{suffix}"
                self.file(rel, content, lambda path, c=content: path.write_bytes(c))
                names[item.name] = rel
        return names

    def prune(self) -> None:
        """Delete what an earlier render wrote and this one did not."""
        stale = set(self.status) - self.seen
        for folder in self.OWNED:
            if (self.out / folder).is_dir():
                files = (p for p in (self.out / folder).rglob("*") if p.is_file())
                stale |= {p.relative_to(self.out).as_posix() for p in files} - self.seen
        for rel in stale:
            (self.out / rel).unlink(missing_ok=True)
            self.status.pop(rel, None)
        for folder in self.OWNED:  # and the folders that emptied
            for path in sorted((self.out / folder).rglob("*"), reverse=True):
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()

    def save(self, size: SiteSize) -> None:
        text = json.dumps({"files": self.status, "size": asdict(size)}, indent=0, sort_keys=True)
        atomic_write(self.out / self.STATUS, lambda tmp: Path(tmp).write_text(text))


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


def render(out: str | Path, before_perf: Callable[[], None] | None = None) -> tuple[int, int]:
    """Render the site under ``out``: ``(pages written, pages in the site)``. The site's size
    is kept in the status file (``site_size`` measures it). ``before_perf`` runs just before
    the performance page is built (``reportgen run`` writes its phase table there, so the
    table covers the render too)."""
    store = Store(out)
    run = store.read_json("run")
    images = store.read_table("images")
    predictions = store.read_table("predictions")
    metrics = store.read_table("metrics")
    timings = store.read_table("timings")
    layers = store.read_table("layers")
    ok_rows = images[images.status == "ok"]
    entries, tables = leaderboard(metrics, image_classes(ok_rows))
    matrix = tables.get("average_drop", (None,))[0]  # Win % of Grad-CAM++ over Grad-CAM
    present = set(metrics.metric) if not metrics.empty else set()
    out = Path(out)
    env = environment()
    site = SiteWriter(out, env)
    env.globals["assets"] = site.assets(resources.files("reportgen.templates").joinpath("static"))
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
    scales = run.get("scales", {})
    scores = cell_scores(metrics)
    keys = [(e.method, e.layer) for e in entries]  # best Average Drop first
    ids = list(ok.image)
    shape = {r.image: f"{int(r.width)} / {int(r.height)}" for r in ok.itertuples(index=False)}
    learned = learned_context(store, dict(enumerate(run["model"].get("class_names", []))))
    sanity = optional_table(store, "sanity")
    feature_layers = (
        list(layers.drop_duplicates("layer").sort_values("depth").layer)
        if not layers.empty
        else [
            layer
            for layer in run["model"]["feature_layers"]
            if layer in learned["filter_units"] or (learned["patches"].layer == layer).any()
        ]
    )
    common = {
        "run": run,
        "methods": methods,
        "feature_layers": feature_layers,
        "metric_defs": [m for m in catalogue.ranked() if m.id in present],
        "significance": SIGNIFICANCE,
        "sanity_methods": list(dict.fromkeys(sanity.method)),
        "sanity_images": sanity.image.nunique(),
        "has_learned": any(
            learned[k] for k in ("filter_units", "class_items", "dreams", "inversions", "fooling")
        )
        or not learned["points"].empty,
    }

    def card(image: str, method: str, layer: str, title: str, link: str, anchor: str) -> dict:
        """One map with its scores, for the ``map_card`` macro."""
        key = f"{method}@{layer}"
        return {
            "anchor": anchor,
            "image": image,
            "method": method,
            "layer": layer,
            "key": key,
            "title": title,
            "link": link,
            "values": scores[image, key],
            "shape": shape[image],
            "scale": scales.get(key),
        }

    for image in ids:
        site.thumbnail(f"img/photos/{image}.boxes.jpg")
        for method, layer in keys:
            if (image, f"{method}@{layer}") in scores:
                for shared in (False, True):
                    site.thumbnail("img/" + overlay_path(image, method, layer, shared))

    site.page(
        "index.html",
        "index.html",
        entries=entries,
        tables=tables,
        split=instance_split(metrics, entries),
        images=images,
        image_ids=ids,
        converted=converted,
        timings=timings,
        layers=layers,
        **common,
    )
    site.page("about.html", "about.html", image_ids=ids, **common)
    cam_layer = run["model"]["cam_layers"][0] if run["model"]["cam_layers"] else "input"
    pair = (f"gradcampp@{cam_layer}", f"gradcam@{cam_layer}")
    win = matrix.loc[pair] if matrix is not None and set(pair) <= set(matrix.index) else None
    site.page(
        "published.html",
        "published.html",
        rows=published_rows(entries, cam_layer),
        win=win,
        published_win=PUBLISHED_WIN,
        cam_layer=cam_layer,
        image_ids=ids,
        **common,
    )
    if not learned["dead"].empty:
        site.file(
            "img/silent.svg",
            store.table_path("dead").read_bytes(),
            lambda path: silent_plot(learned["dead"], path),
        )
    if not sanity.empty:
        site.file(
            "img/sanity.svg",
            store.table_path("sanity").read_bytes(),
            lambda path: sanity_plot(sanity, path),
        )
    if common["has_learned"]:
        for image in learned["points"].image:
            site.thumbnail(f"img/photos/{image}.boxes.jpg")
        site.page("learned.html", "learned.html", image_ids=ids, **learned, **common)
    order = [f"{e.method}@{e.layer}" for e in entries]
    if run.get("curves"):
        site.file(
            "img/curves.svg",
            json.dumps([run["curves"], order]).encode(),
            lambda path: curves_plot(run["curves"], order, path),
        )
    if "average_drop" in present:
        site.file(
            "img/drops.svg",
            store.table_path("metrics").read_bytes(),
            lambda path: drop_plot(metrics, order, path),
        )
    if not timings.empty:
        site.file(
            "img/timings.svg",
            store.table_path("timings").read_bytes(),
            lambda path: timing_plot(timings, path),
        )
    profiles = {p.stem: pd.read_csv(p) for p in sorted((out / "data" / "profile").glob("*.csv"))}
    if before_perf is not None:
        before_perf()
    phases = optional_table(store, "phases")
    site.page(
        "perf.html",
        "perf.html",
        phases=phase_view(phases),
        phase_totals=store.read_json("phases") if (store.data / "phases.json").is_file() else {},
        timings=timings,
        bench=bench_results(out),
        profiles=profiles,
        **common,
    )
    site.page(
        "compare.html",
        "compare.html",
        entries=entries,
        image_ids=ids,
        data=compare_data(entries, ids, shape, scores, methods, scales),
        **common,
    )
    for i, row in enumerate(ok.itertuples(index=False)):
        cards = [
            card(
                row.image,
                m,
                lay,
                methods.get(m, {}).get("title", m),
                f"methods/{m}.html",
                f"{m}@{lay}",
            )
            for m, lay in keys
            if (row.image, f"{m}@{lay}") in scores
        ]
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
    names = list(methods)
    for i, (name, technique) in enumerate(methods.items()):
        mine = [e for e in entries if e.method == name]
        grids = {
            e.layer: [
                card(image, name, e.layer, image, f"images/{image}.html", f"{image}@{e.layer}")
                for image in ids
                if (image, f"{name}@{e.layer}") in scores
            ]
            for e in mine
        }
        site.page(
            f"methods/{name}.html",
            "method.html",
            technique=technique,
            mine=mine,
            grids=grids,
            prev=names[i - 1] if i else None,
            next=names[i + 1] if i + 1 < len(names) else None,
            **common,
        )
    channels = (
        store.read_table("channels")
        if store.table_path("channels").is_file()
        else pd.DataFrame(columns=COLUMNS["channels"])
    )
    for layer in feature_layers:
        mine = channels[channels.layer == layer]
        top = list(mine.drop_duplicates("channel").sort_values("channel_rank").channel)
        for i, channel in enumerate(top):
            site.page(
                f"layers/{layer}/{channel}.html",
                "channel.html",
                layer=layer,
                channel=channel,
                rows=mine[mine.channel == channel].sort_values("image_rank"),
                **unit_views(learned, layer, channel),
                prev=top[i - 1] if i else None,
                next=top[i + 1] if i + 1 < len(top) else None,
                **common,
            )
        site.page(
            f"layers/{layer}.html",
            "layer.html",
            layer=layer,
            stats=layers[layers.layer == layer],
            channels=mine[mine.image_rank == 0].sort_values("channel_rank"),
            pages={int(c) for c in top},
            filter_units=learned["filter_units"].get(layer, []),
            natural=learned["natural"],
            values=learned["values"],
            patches=learned["patches"][learned["patches"].layer == layer],
            dead=learned["dead"][learned["dead"].layer == layer],
            **common,
        )
    site.prune()
    site.save(site_size(out, len(ids)))
    return site.written, site.pages
