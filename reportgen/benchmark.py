"""``reportgen benchmark``: the benchmark that can rank, one command away. Every scored
method runs on the shipped data sets that are large enough to separate methods (the
ImageNet model on the photos and the composites; the synthetic set with exact masks on
its own CNN), each into a report of its own, and one page sets their rankings side by
side. The default run's 12 photos decide only the extremes; this decides more."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation import catalogue
from evaluation.rankings import images_for_wilcoxon, nemenyi_cd

from .store import PIXEL_LAYER, atomic_write


@dataclass(frozen=True)
class BenchmarkSet:
    name: str  # its folder under --out
    about: str
    args: tuple[str, ...]  # its `reportgen run` options


SETS = (
    BenchmarkSet(
        "photos",
        "EfficientNet-Lite0 on the 12 embedded photos and the 24 composites (boxes)",
        ("--data", "embedded,composites"),
    ),
    BenchmarkSet(
        "synthetic",
        "the synthetic set (120 images, exact masks) on its own small CNN",
        ("--data", "synthetic"),
    ),
)


def scored_methods() -> list[str]:
    from .techniques import REGISTRY

    return [name for name, t in REGISTRY.items() if t.scored]


def benchmark(
    out: str | Path, extra: list[str], main: Callable[[list[str]], int], sets=SETS
) -> int:
    """Run every set into ``out/<set>`` through ``main`` (the command line's, given by the
    caller: the CLI imports this module, not the other way round; ``extra``: more
    `reportgen run` options, e.g. ``--limit``), then write ``out/index.html``. Returns the
    first failing exit code."""
    out = Path(out)
    methods = ",".join(scored_methods())
    for s in sets:
        code = main(["run", "--out", str(out / s.name), *s.args, "--methods", methods, *extra])
        if code:
            return code
    write_index(out, sets)
    return 0


def set_summary(folder: Path) -> dict:
    """One set's rankings as the side-by-side page shows them: per headline metric, each
    method's row at the model's first CAM layer (or at the input)."""
    import json

    run = json.loads((folder / "data" / "run.json").read_text())
    rankings = pd.read_csv(folder / "data" / "rankings.csv")
    cam_layer = (run["model"]["cam_layers"] or [PIXEL_LAYER])[0]
    rows = rankings[rankings.layer.isin([cam_layer, PIXEL_LAYER])]
    metrics = {}
    for metric_id, group in rows.groupby("metric", sort=False):
        k, n = int(rankings[rankings.metric == metric_id].shape[0]), int(group.n_images.iloc[0])
        metrics[metric_id] = {
            "by_method": {r.method: r for r in group.itertuples(index=False)},
            "k": k,
            "n": n,
            "friedman_p": float(group.friedman_p.iloc[0]),
            "cd": nemenyi_cd(k, n),
            "can_differ": n >= images_for_wilcoxon(k - 1),
            "differ": int(rankings[rankings.metric == metric_id].differs_from_best.sum()),
        }
    return {"run": run, "cam_layer": cam_layer, "metrics": metrics}


def write_index(out: Path, sets=SETS) -> Path:
    """``out/index.html``: per headline metric, every method's mean rank in each set."""
    from .render.site import environment

    found = {s.name: set_summary(out / s.name) for s in sets if (out / s.name).is_dir()}
    headline = [
        m
        for m in catalogue.CATALOGUE
        if m.headline and any(m.id in f["metrics"] for f in found.values())
    ]
    primary = catalogue.PRIMARY.id

    def order(name: str) -> float:  # mean relative rank on the primary metric over the sets
        shares = [
            f["metrics"][primary]["by_method"][name].mean_rank / f["metrics"][primary]["k"]
            for f in found.values()
            if name in f["metrics"].get(primary, {}).get("by_method", {})
        ]
        return float(np.mean(shares)) if shares else np.inf

    names = {n for f in found.values() for m in f["metrics"].values() for n in m["by_method"]}
    methods = sorted(names, key=lambda n: (order(n), n))
    html = (
        environment()
        .get_template("benchmark.html")
        .render(
            sets=[s for s in sets if s.name in found],
            found=found,
            headline=headline,
            methods=methods,
        )
    )
    path = out / "index.html"
    atomic_write(path, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))
    return path
