"""Every plot of the site: one ``svg_figure`` context (figure, layout, atomic SVG write)
around each drawing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

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
