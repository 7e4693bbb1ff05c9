"""Every plot of the site: one ``svg_figure`` context (figure, layout, atomic SVG write)
around each drawing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.catalogue import Metric
from evaluation.rankings import Ranking

from ..store import atomic_write


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


def curves_plot(
    curves: dict[str, dict[str, list[float]]], order: list[str], path: Path, spacing: float = 1.0
) -> None:
    """Mean insertion and deletion curves (RISE) of each method@layer, best AD first, each
    point at its share of pixels changed (``spacing``: as the run placed its steps)."""
    from matplotlib import colormaps

    with svg_figure(path, 1, 2, figsize=(9, 3.6), sharey=True) as (fig, axes):
        colours = colormaps["tab20"]
        keys = [k for k in order if k in curves]
        for panel, mode in zip(axes, ("insertion", "deletion"), strict=True):
            for i, key in enumerate(keys):
                values = curves[key].get(mode)
                if values:
                    x = np.linspace(0, 1, len(values)) ** spacing
                    panel.plot(x, values, lw=1.4, color=colours(i % 20), label=key)
            better = "higher" if mode == "insertion" else "lower"
            panel.set_title(f"{mode} (area: {better} is better)", fontsize=10)
            panel.set_xlabel(f"share of pixels {'inserted' if mode == 'insertion' else 'deleted'}")
            panel.grid(alpha=0.3)
        axes[0].set_ylabel("probability of the class")
        axes[1].legend(fontsize=6, loc="upper right", ncol=2)


def spread_plot(metrics: pd.DataFrame, metric: Metric, order: list[str], path: Path) -> None:
    """One metric per image for each method@layer (a dot per image, the mean as a bar)."""
    rows = metrics[metrics.metric == metric.id]
    by_key = {f"{m}@{lay}": g.value.to_numpy() for (m, lay), g in rows.groupby(["method", "layer"])}
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
        unit = " %" if metric.percent else ""
        ax.set_xlabel(f"{metric.short}{unit} per image (red: mean; {metric.better} is better)")
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


def sanity_plot(sanity: pd.DataFrame, path: Path, cumulative: bool = True) -> None:
    """Mean Spearman and SSIM to the trained model's maps, per method, as the weights are
    re-initialised from the logits down (Adebayo et al. 2018, fig. 2), cumulatively or
    one block at a time (fig. 3)."""
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
        axes[0].set_xlabel(
            "blocks randomised, cumulatively" if cumulative else "block randomised alone"
        )
        axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))


def cliques(mean_ranks: np.ndarray, cd: float) -> list[tuple[int, int]]:
    """Maximal runs ``(first, last)`` of rows (in rank order) whose mean ranks lie within
    the critical difference of each other: the groups a CD diagram joins with a bar."""
    runs = []
    for i in range(len(mean_ranks)):
        j = i
        while j + 1 < len(mean_ranks) and mean_ranks[j + 1] - mean_ranks[i] <= cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in runs):
            runs.append((i, j))
    return runs


def cd_plot(ranking: Ranking, path: Path) -> None:
    """Demšar's critical-difference diagram: each row at its mean rank on an axis (1 =
    best, on the left), the first half labelled on the left, the rest on the right; a bar
    joins rows Nemenyi's test cannot tell apart; * marks rows the Wilcoxon-Holm test
    against the best row finds worse."""
    k, ranks, differs = ranking.k, ranking.mean_ranks, ranking.differs()
    half = (k + 1) // 2
    bars = cliques(ranks, ranking.cd)
    top = 0.35 * len(bars) + 0.4  # the bars sit between the axis and the first label
    with svg_figure(path, figsize=(8, 0.19 * (half + top) + 1.3)) as (fig, ax):
        margin = 0.75 * (k - 1)
        ax.set_xlim(1 - margin, k + margin)
        ax.set_ylim(-(half + top + 0.5), 2.2)
        ax.axis("off")
        ax.plot([1, k], [0, 0], color="black", lw=1)
        for r in range(1, k + 1):
            major = r == 1 or r % 5 == 0 or r == k
            ax.plot([r, r], [0, 0.35 if major else 0.18], color="black", lw=0.7)
            if major:
                ax.text(r, 0.5, str(r), ha="center", va="bottom", fontsize=7)
        if np.isfinite(ranking.cd):
            ax.plot([1, 1 + ranking.cd], [1.6, 1.6], color="#444", lw=1.5)
            ax.text(1 + ranking.cd / 2, 1.75, f"CD {ranking.cd:.1f}", ha="center", fontsize=7)
        for i, (method, layer) in enumerate(ranking.keys):
            left = i < half
            y = -top - (i if left else k - 1 - i)
            edge = 1 - 0.05 * margin if left else k + 0.05 * margin
            ax.plot([ranks[i], ranks[i], edge], [0, y, y], color="#666", lw=0.6)
            mark = " *" if differs[i] else ""
            label = f"{method}@{layer}{mark}" if left else f"{mark.strip()} {method}@{layer}"
            text = f"{label} ({ranks[i]:.1f})" if left else f"({ranks[i]:.1f}) {label}"
            ax.text(edge, y, text, ha="right" if left else "left", va="center", fontsize=6.5,
                    color="#b22" if differs[i] else "black")  # fmt: skip
        for n, (a, b) in enumerate(bars):
            y = -0.35 - 0.35 * n
            ax.plot([ranks[a] - 0.1, ranks[b] + 0.1], [y, y], color="#3d7ea6", lw=2.5)


STABLE_ROWS = 6  # rows per metric in the stability plot


def stability_plot(rankings: list[Ranking], path: Path) -> None:
    """How stable each headline ranking is: for the rows most often in the top three over
    the bootstrap resamples of the images, how often each comes first (dark) and in the
    top three (light)."""
    columns = min(3, len(rankings))
    rows = -(-len(rankings) // columns)
    size = (4.2 * columns, 0.32 * STABLE_ROWS * rows + 0.9 * rows)
    with svg_figure(path, rows, columns, figsize=size, squeeze=False) as (fig, axes):
        for ax in axes.flat[len(rankings) :]:
            ax.axis("off")
        for ax, g in zip(axes.flat, rankings, strict=False):
            order = np.argsort(-g.p_top3, kind="stable")[:STABLE_ROWS][::-1]
            y = np.arange(len(order))
            ax.barh(y, 100 * g.p_top3[order], color="#b9d3e6", label="in the top 3")
            ax.barh(y, 100 * g.p_first[order], color="#2f6f9f", label="first")
            ax.set_yticks(y, ["@".join(g.keys[i]) for i in order], fontsize=7)
            ax.set_xlim(0, 100)
            ax.set_title(f"{g.metric.name} ({g.n} images)", fontsize=9)
            ax.tick_params(axis="x", labelsize=7)
            ax.grid(alpha=0.3, axis="x")
        axes.flat[0].legend(fontsize=7, loc="lower right")
        for ax in axes[-1]:
            ax.set_xlabel("% of resamples", fontsize=8)


def agreement_plot(agreement: pd.DataFrame, headings: dict[str, str], path: Path) -> None:
    """Kendall's tau between the orders each pair of metrics gives the rows, as a heat
    map (1: the same order; 0: unrelated; -1: reversed)."""
    ids = list(dict.fromkeys([*agreement.metric_a, *agreement.metric_b]))
    tau = pd.DataFrame(np.eye(len(ids)), index=ids, columns=ids)
    for r in agreement.itertuples(index=False):
        tau.loc[r.metric_a, r.metric_b] = tau.loc[r.metric_b, r.metric_a] = r.kendall_tau
    names = [headings.get(i, i) for i in ids]
    with svg_figure(path, figsize=(0.42 * len(ids) + 2.6, 0.42 * len(ids) + 1.4)) as (fig, ax):
        image = ax.imshow(tau.to_numpy(), cmap="RdBu", vmin=-1, vmax=1)
        for (i, j), value in np.ndenumerate(tau.to_numpy()):
            if i != j and np.isfinite(value):
                colour = "white" if abs(value) > 0.6 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color=colour)
        ax.set_xticks(range(len(ids)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(ids)), names, fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.04, label="Kendall's tau")
