"""One function per page kind, each returning its pages (and writing the plots and
thumbnails they show); ``render`` reads the run once and writes them all, the nav built
from the pages that exist. Adding a page: its template, its function in ``PAGE_KINDS``,
its ``NAV`` entry if it has one, and a test."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from evaluation import catalogue
from evaluation.leaderboard import (
    FEW_IMAGES,
    SIGNED_SHARE,
    SIGNIFICANCE,
    image_classes,
    instance_split,
    leaderboard,
    negative_shares,
    published_rows,
    same_map_groups,
)
from evaluation.published import PUBLISHED_WIN, WIN_METRIC, WIN_PAIR
from evaluation.rankings import AGREEMENT_COLUMNS as AGREEMENT
from evaluation.rankings import (
    agreement_rows,
    agreement_verdict,
    images_for_wilcoxon,
    rankings,
    setting_moves,
)

from ..store import Store, overlay_path
from .plots import (
    agreement_plot,
    cd_plot,
    curves_plot,
    sanity_plot,
    silent_plot,
    sparsity_plot,
    spread_plot,
    stability_plot,
    timing_plot,
)
from .site import SiteWriter, environment, sections, site_size, where
from .views import (
    ViewData,
    bench_results,
    cell_scores,
    compare_data,
    labelled_classes,
    optional_table,
    phase_view,
    prediction_marks,
    random_logit_view,
    target_rule,
)

# The site's menu, in order: (label, link). A link shows when its page exists.
NAV = (
    ("Leaderboard", "index.html#leaderboard"),
    ("Compare", "compare.html"),
    ("Images", "index.html#images"),
    ("Methods", "index.html#methods"),
    ("Layers", "index.html#layers"),
    ("Learned", "learned.html"),
    ("Performance", "perf.html"),
    ("About", "about.html"),
)


@dataclass
class Page:
    """One page: where it goes, its template, and what the template sees (a callable is
    called just before the page is written)."""

    rel: str
    template: str
    context: dict | Callable[[], dict] = field(default_factory=dict)


class Report:
    """The stored run, read once, as every page kind needs it."""

    def __init__(self, out: Path, before_perf: Callable[[], None] | None = None):
        self.out, self.before_perf = out, before_perf
        store = self.store = Store(out)
        self.run = store.read_json("run")
        self.images = store.read_table("images")
        self.predictions = store.read_table("predictions")
        self.metrics = store.read_table("metrics")
        self.timings = store.read_table("timings")
        self.layers = store.read_table("layers")
        self.ok = self.images[self.images.status == "ok"]
        self.rankings = rankings(self.metrics)
        self.entries, self.tables = leaderboard(self.metrics, image_classes(self.ok), self.rankings)
        self.present = set(self.metrics.metric) if not self.metrics.empty else set()
        self.methods = self.run["techniques"]  # the registry's text, stored by the run
        self.scales = self.run.get("scales", {})
        self.scores = cell_scores(self.metrics)
        # best first: by mean rank on the primary metric (Average Drop)
        self.keys = [(e.method, e.layer) for e in self.entries]
        self.ids = list(self.ok.image)
        self.shape = {
            r.image: f"{int(r.width)} / {int(r.height)}" for r in self.ok.itertuples(index=False)
        }
        names = dict(enumerate(self.run["model"].get("class_names", [])))
        self.views = ViewData(store, names)
        self.marks = prediction_marks(self.ok, self.predictions, self.metrics, names)
        self.sanity = optional_table(store, "sanity")
        self.independent = optional_table(store, "sanity_independent")
        self.channels = optional_table(store, "channels")
        shown = self.views.layers()
        self.feature_layers = (
            list(self.layers.drop_duplicates("layer").sort_values("depth").layer)
            if not self.layers.empty
            else [layer for layer in self.run["model"]["feature_layers"] if layer in shown]
        )
        negative = negative_shares(self.metrics)
        signed = {layer: v for layer, v in negative.items() if v >= SIGNED_SHARE}
        ill_posed = [  # rows whose formula assumes non-negative activations, at a signed layer
            e
            for e in self.entries
            if e.layer in signed and self.methods.get(e.method, {}).get("signed")
        ]
        self.common = {  # what every template sees (and the views' results)
            **self.views.context(),
            "run": self.run,
            "marks": self.marks,  # top-1 class, right or wrong, class explained: per image
            "target_rule": target_rule(self.run["settings"].get("target", "predicted")),
            "methods": self.methods,
            "feature_layers": self.feature_layers,
            "metric_defs": [m for m in catalogue.ranked() if m.id in self.present],
            "significance": SIGNIFICANCE,
            "few_images": FEW_IMAGES,
            "primary": catalogue.PRIMARY,
            "signed": signed,
            "negative": negative,
            "ill_posed": {f"{e.method}@{e.layer}" for e in ill_posed},
            "ill_posed_methods": list(dict.fromkeys(e.method for e in ill_posed)),
            "sanity_methods": list(dict.fromkeys(self.sanity.method)),
            "sanity_images": self.sanity.image.nunique(),
            "sanity_steps": (self.sanity.step.nunique() - 1, self.sanity.step.max()),
            "sanity_independent": list(dict.fromkeys(self.independent.method)),
            "independent_images": self.independent.image.nunique(),
        }

    def card(self, image: str, method: str, layer: str, title: str, link: str, anchor: str):
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
            "values": self.scores[image, key],
            "shape": self.shape[image],
            "scale": self.scales.get(key),
        }

    def plot(self, site: SiteWriter, rel: str, table: str, draw: Callable[[Path], None]) -> None:
        """A plot redrawn when the table it is drawn from changed."""
        site.file(rel, self.store.table_path(table).read_bytes(), draw)


def index(r: Report, site: SiteWriter) -> list[Page]:
    """The index: leaderboard, images, methods, layers; and the pages it links to."""
    site.file(".nojekyll", b"", lambda path: path.touch())  # Pages: serve every file as is
    if not r.layers.empty:
        r.plot(site, "img/sparsity.svg", "layers", lambda path: sparsity_plot(r.layers, path))
    for image in r.ids:
        site.thumbnail(f"img/photos/{image}.boxes.jpg")
        site.thumbnail(f"img/photos/{image}.jpg")  # under the gallery's in-browser views
        for method, layer in r.keys:
            if (image, f"{method}@{layer}") in r.scores:
                site.thumbnail("img/" + overlay_path(image, method, layer))
    ranked = [g for g in r.rankings.values() if g.metric.headline]
    for g in ranked:
        r.plot(site, f"img/cd-{g.metric.id}.svg", "metrics", lambda path, g=g: cd_plot(g, path))
    if ranked:
        r.plot(site, "img/stability.svg", "metrics", lambda path: stability_plot(ranked, path))
    agreement = pd.DataFrame(agreement_rows(r.metrics, r.run["dataset"]), columns=AGREEMENT)
    headings = {m.id: m.name for m in catalogue.CATALOGUE}
    if not agreement.empty:
        draw = lambda path: agreement_plot(agreement, headings, path)  # noqa: E731
        r.plot(site, "img/agreement.svg", "metrics", draw)
    converted = r.ok[r.ok.note.notna()] if "note" in r.ok else r.ok.iloc[:0]  # "" reads as NaN
    same_maps = same_map_groups(r.store.load_map, r.keys, r.ids)
    context = {
        "entries": r.entries,
        "best_counts": Counter(m for e in r.entries for m in e.best),  # > 1: a tie for the best
        "tables": r.tables,
        "split": instance_split(r.metrics, r.entries),
        "images": r.images,
        "image_ids": r.ids,
        "converted": converted,
        "timings": r.timings,
        "layers": r.layers,
        "sections": sections(site.env, "index", root="", **r.common),
        "rankings": ranked,
        "baselines": [  # the rows that ignore the model, on the primary metric: the bar
            (e.method, e.stats[catalogue.PRIMARY.id][0])
            for e in r.entries
            if e.method.startswith("baseline") and catalogue.PRIMARY.id in e.stats
        ],
        "random_logit": random_logit_view(optional_table(r.store, "random_logit")),
        "wilcoxon_images": images_for_wilcoxon(len(r.entries) - 1),
        "agreement": agreement_verdict(agreement, headings) if not agreement.empty else "",
        "setting_moves": setting_moves(r.metrics, agreement) if not agreement.empty else [],
        "correct_only": correct_only(r),
        "titles": {name: about["title"] for name, about in r.methods.items()},
        "same_maps": same_maps,
        "same_as": {f"{m}@{lay}": group[0] for group in same_maps for m, lay in group[1:]},
        "same_as_cam": any(m == "cam" for group in same_maps for m, _ in group),
    }
    pages = [Page("index.html", "index.html", context)]
    if r.tables:  # every pair, on a page of its own: most of the index's weight otherwise
        pages.append(Page("pairs.html", "pairs.html", {"tables": r.tables, "image_ids": r.ids}))
    return pages


def correct_only(r: Report) -> dict | None:
    """The leaderboard again on the correctly classified images alone, when some images
    are misclassified (their maps explain a class they are not labelled with)."""
    correct = [image for image, mark in r.marks.items() if mark["correct"]]
    if not r.entries or not 0 < len(correct) < len(r.ids):
        return None
    entries, _ = leaderboard(
        r.metrics[r.metrics.image.isin(correct)],
        image_classes(r.ok[r.ok.image.isin(correct)]),
        pairs=False,
    )
    return {
        "images": len(correct),
        "entries": entries,
        "counts": Counter(m for e in entries for m in e.best),
        "note": f"{images_for_wilcoxon(len(entries) - 1)} images are needed for any row "
        f"to differ significantly from the best after Holm's correction.",
    }


def about(r: Report, site: SiteWriter) -> list[Page]:
    return [Page("about.html", "about.html", {"image_ids": r.ids})]


def published(r: Report, site: SiteWriter) -> list[Page]:
    """Our figures beside the papers' (and Grad-CAM++'s win rate over Grad-CAM)."""
    cam_layer = r.run["model"]["cam_layers"][0] if r.run["model"]["cam_layers"] else "input"
    matrix = r.tables.get(WIN_METRIC, (None,))[0]
    pair = tuple(f"{method}@{cam_layer}" for method in WIN_PAIR)
    win = matrix.loc[pair] if matrix is not None and set(pair) <= set(matrix.index) else None
    context = {
        "rows": published_rows(r.entries, cam_layer),
        "win": win,
        "published_win": PUBLISHED_WIN,
        "win_pair": WIN_PAIR,
        "win_metric": catalogue.get(WIN_METRIC),
        "cam_layer": cam_layer,
        "image_ids": r.ids,
    }
    return [Page("published.html", "published.html", context)]


def learned(r: Report, site: SiteWriter) -> list[Page]:
    """What the network learned: a section per view that has results (and the silent-channel
    and sanity plots)."""
    dead = r.views.table("dead")
    if not dead.empty:
        r.plot(site, "img/silent.svg", "dead", lambda path: silent_plot(dead, path))
    if not r.sanity.empty:
        r.plot(site, "img/sanity.svg", "sanity", lambda path: sanity_plot(r.sanity, path))
    if not r.independent.empty:
        r.plot(
            site,
            "img/sanity_independent.svg",
            "sanity_independent",
            lambda path: sanity_plot(r.independent, path, cumulative=False),
        )
    found = sections(site.env, "learned", root="", **r.common)
    r.common["learned_titles"] = [s.title for s in found]
    if not found:
        return []  # (the photos' thumbnails it shows come with the index)
    return [Page("learned.html", "learned.html", {"image_ids": r.ids, "sections": found})]


def perf(r: Report, site: SiteWriter) -> list[Page]:
    """The performance page; its phase table is written (``before_perf``) just before the
    page, so it covers the render up to here."""
    order = [f"{e.method}@{e.layer}" for e in r.entries]
    if r.run.get("curves"):
        spacing = r.run.get("curve_spacing", 1.0)  # runs before it took uniform steps
        site.file(
            "img/curves.svg",
            json.dumps([r.run["curves"], order, spacing]).encode(),
            lambda path: curves_plot(r.run["curves"], order, path, spacing),
        )
    if catalogue.PRIMARY.id in r.present:
        r.plot(
            site,
            "img/drops.svg",
            "metrics",
            lambda path: spread_plot(r.metrics, catalogue.PRIMARY, order, path),
        )
    if not r.timings.empty:
        r.plot(site, "img/timings.svg", "timings", lambda path: timing_plot(r.timings, path))

    def context() -> dict:
        profiles = {
            p.stem: pd.read_csv(p) for p in sorted((r.out / "data" / "profile").glob("*.csv"))
        }
        if r.before_perf is not None:
            r.before_perf()
        totals = r.store.data / "phases.json"
        return {
            "phases": phase_view(optional_table(r.store, "phases")),
            "phase_totals": r.store.read_json("phases") if totals.is_file() else {},
            "timings": r.timings,
            "bench": bench_results(r.out),
            "profiles": profiles,
        }

    return [Page("perf.html", "perf.html", context)]


def compare(r: Report, site: SiteWriter) -> list[Page]:
    data = compare_data(r.entries, r.ids, r.shape, r.scores, r.methods, r.scales)
    context = {"entries": r.entries, "image_ids": r.ids, "data": data}
    return [Page("compare.html", "compare.html", context)]


def image_pages(r: Report, site: SiteWriter) -> list[Page]:
    """One page per image: every map of it, with its scores."""
    pages = []
    for i, row in enumerate(r.ok.itertuples(index=False)):
        cards = [
            r.card(
                row.image,
                m,
                lay,
                r.methods.get(m, {}).get("title", m),
                f"methods/{m}.html",
                f"{m}@{lay}",
            )
            for m, lay in r.keys
            if (row.image, f"{m}@{lay}") in r.scores
        ]
        context = {
            "image": row,
            "predictions": r.predictions[r.predictions.image == row.image],
            "classes": labelled_classes(row.classes),
            "mark": r.marks.get(row.image),
            "cards": cards,
            "prev": r.ids[i - 1] if i else None,
            "next": r.ids[i + 1] if i + 1 < len(r.ids) else None,
        }
        pages.append(Page(f"images/{row.image}.html", "image.html", context))
    return pages


def method_pages(r: Report, site: SiteWriter) -> list[Page]:
    """One page per technique: what it computes, its settings, its maps of every image."""
    names, pages = list(r.methods), []
    for i, (name, technique) in enumerate(r.methods.items()):
        mine = [e for e in r.entries if e.method == name]
        grids = {
            e.layer: [
                r.card(image, name, e.layer, image, f"images/{image}.html", f"{image}@{e.layer}")
                for image in r.ids
                if (image, f"{name}@{e.layer}") in r.scores
            ]
            for e in mine
        }
        context = {
            "technique": technique,
            "mine": mine,
            "grids": grids,
            "prev": names[i - 1] if i else None,
            "next": names[i + 1] if i + 1 < len(names) else None,
        }
        pages.append(Page(f"methods/{name}.html", "method.html", context))
    return pages


def layer_pages(r: Report, site: SiteWriter) -> list[Page]:
    """One page per feature layer that has something to show, and one per channel shown;
    the layer list every page links to is the pages made."""
    pages, shown = [], []
    for layer in r.feature_layers:
        mine = r.channels[r.channels.layer == layer]
        top = list(mine.drop_duplicates("channel").sort_values("channel_rank").channel)
        for i, channel in enumerate(top):
            context = {
                "layer": layer,
                "channel": channel,
                "rows": mine[mine.channel == channel].sort_values("image_rank"),
                "prev": top[i - 1] if i else None,
                "next": top[i + 1] if i + 1 < len(top) else None,
            }
            context["sections"] = sections(
                site.env, "channel", root="../../", **context, **r.common
            )
            pages.append(Page(f"layers/{layer}/{channel}.html", "channel.html", context))
        context = {
            "layer": layer,
            "stats": r.layers[r.layers.layer == layer],
            "pages": {int(c) for c in top},
            "dead": where(r.views.table("dead"), layer=layer),
        }
        context["sections"] = sections(site.env, "layer", root="../", **context, **r.common)
        if context["sections"] or not context["stats"].empty:
            shown.append(layer)
            pages.append(Page(f"layers/{layer}.html", "layer.html", context))
    r.common["feature_layers"] = shown
    return pages


# In the order they are written (perf's phase table covers what comes before it). Every
# function runs before any page is written, so one may complete what every page sees
# (``Report.common``: the learned page's titles, the layers that have a page).
PAGE_KINDS = (
    index,
    about,
    published,
    learned,
    perf,
    compare,
    image_pages,
    method_pages,
    layer_pages,
)


def render(out: str | Path, before_perf: Callable[[], None] | None = None) -> tuple[int, int]:
    """Render the site under ``out``: ``(pages written, pages in the site)``. The site's size
    is kept in the status file (``site_size`` measures it). ``before_perf`` runs just before
    the performance page is built (``reportgen run`` writes its phase table there, so the
    table covers the render too)."""
    out = Path(out)
    report = Report(out, before_perf)
    env = environment()
    site = SiteWriter(out, env)
    env.globals["assets"] = site.assets(resources.files("reportgen.templates").joinpath("static"))
    pages = [page for kind in PAGE_KINDS for page in kind(report, site)]
    made = {page.rel for page in pages}
    env.globals["nav"] = [(label, link) for label, link in NAV if link.split("#")[0] in made]
    for page in pages:
        context = page.context() if callable(page.context) else page.context
        site.page(page.rel, page.template, **context, **report.common)
    site.prune()
    site.save(site_size(out, len(report.ids)))
    return site.written, site.pages
