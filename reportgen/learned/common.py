"""The engine's side of the views that are not scored maps: the ``View`` record each one
registers, the run-wide pass over them, and the helpers they share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import data, techniques
from ..store import MODEL, Store

if TYPE_CHECKING:
    from ..batch import Batch
    from ..context import Context

TOP_CHANNELS = 8  # channel pages per feature layer: the channels firing most on the data set
AFTER = "after-"  # prefix of the run-wide parts' names


def _no_layers(ctx: Context) -> list[str]:
    return []


@dataclass(frozen=True)
class View:
    """How the engine drives one technique that is not a scored map (or, for the sanity
    check, one metric group), in up to three kinds of work, each stored as parts:

    * ``batch(ctx, batch, layer)``: one per-batch unit at each of ``layers(ctx)``;
    * ``run_wide(ctx)``: once every batch is done, in registration order (later views
      may read earlier ones' parts); ``{}`` when there is nothing to make;
    * ``tables(store, rows, about)``: extra tables ``finish`` builds without a model.

    Each returns tables' rows by table name (and ``run``: entries for run.json).
    ``shown``: where the site shows the view's results, ``(label, link from the site's
    root)``, listed on the technique's page."""

    name: str
    layers: Callable[[Context], list[str]] = _no_layers
    batch: Callable[[Context, Batch, str], dict] | None = None
    run_wide: Callable[[Context], dict] | None = None
    tables: Callable[[Store, dict, dict], dict[str, list[dict]]] | None = None
    wanted: Callable[[Context], bool] | None = None  # None: when the technique is selected
    shown: tuple[tuple[str, str], ...] = ()


VIEWS: dict[str, View] = {}
LAYER_PAGES = ("each layer page", "index.html#layers")  # a ``shown`` link


def on_learned(anchor: str) -> tuple[str, str]:
    """A ``shown`` link to a section of the page of what the network learned."""
    return ("the page of what the network learned", f"learned.html#{anchor}")


def register_view(view: View) -> View:
    if view.name in VIEWS:
        raise ValueError(f"view '{view.name}' registered twice")
    VIEWS[view.name] = view
    return view


def wanted(ctx: Context, view: View) -> bool:
    if view.wanted is not None:
        return view.wanted(ctx)
    return any(t.name == view.name for t in ctx.methods)


def owed(done: set[str], methods: Sequence[str], groups: Sequence[str]) -> list[str]:
    """The run-wide views a run of ``methods`` and metric ``groups`` asked for that have no
    part among ``done`` (the model folder's finished units): what a report still lacks
    until ``after`` runs where every batch and the model are at hand."""
    asked = SimpleNamespace(methods=[techniques.get(m) for m in methods], metric_groups=groups)
    return [
        view.name
        for view in VIEWS.values()
        if view.run_wide is not None and AFTER + view.name not in done and wanted(asked, view)
    ]


def after(ctx: Context) -> None:
    """The run-wide views, once every batch is done (rank / shard 0 only). Each is a part
    of its own, so a resumed run skips those already made. A view that cannot apply to
    the model (a ViT has no rectifiers for top patches' projections) records why, as a
    technique's unit does: the index lists it, the run goes on."""
    done = ctx.store.done_units(MODEL)
    for view in VIEWS.values():
        if view.run_wide is None or AFTER + view.name in done or not wanted(ctx, view):
            continue
        before = ctx.timer.last
        try:
            payload = view.run_wide(ctx)
        except (ValueError, RuntimeError) as err:
            payload = {"problem": f"{view.name}: {err}"}
        timing = ctx.timer.last if payload and ctx.timer.last is not before else None
        ctx.store.write_part(MODEL, AFTER + view.name, {**payload, "timing": timing})


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Display images ``[N, 3, H, W]`` in [0, 1] -> ``uint8 [N, H, W, 3]``."""
    pixels = images.detach().float().clamp(0, 1).mul(255).round().byte()
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def synthesise(ctx: Context, name: str, *args, seed: int = 0, **given):
    """Synthesis technique ``name`` on the run's model with its normalisation and
    probabilities (softmax or sigmoid), the run's seed (plus ``seed``), its preset and
    ``--set`` settings, and ``given`` over those."""
    technique = techniques.get(name)
    return technique.run(
        ctx.forward_model,
        *args,
        mean=ctx.spec.mean,
        std=ctx.spec.std,
        output=ctx.spec.output,
        seed=ctx.config.seed + seed,
        **{**ctx.options(technique), **given},
    )


def value_rows(technique: str, layer: str, item, variant: str, values: dict) -> list[dict]:
    """Rows of the long table ``synthesis.csv``."""
    return [
        {
            "technique": technique,
            "layer": layer,
            "item": str(item),
            "variant": variant,
            "metric": metric,
            "value": float(value),
        }
        for metric, value in values.items()
    ]


def ok_ids(ctx: Context) -> list[str]:
    """The images of the run that were read (their photo exists)."""
    return [r.id for r in ctx.records if (ctx.store.img / "photos" / f"{r.id}.jpg").is_file()]


def stored(ctx: Context, key: str) -> tuple[list[str], np.ndarray | None]:
    """A per-image vector (``save_map``) for every image that has it, stacked."""
    ids, rows = [], []
    for image in ok_ids(ctx):
        value = ctx.store.load_map(image, key)
        if value is not None:
            ids.append(image)
            rows.append(value)
    return ids, (np.stack(rows) if rows else None)


def input_pixels(ctx: Context, images: list[str]) -> np.ndarray:
    """The images resized to the model's input, ``uint8 [N, H, W, 3]``: exactly what
    ``data.model_input`` gives times 255 (it resizes in uint8), so nothing is lost."""
    by_id = {r.id: r for r in ctx.records}
    pixels = np.stack(
        [data.model_input(data.load_photo(by_id[i])[0], ctx.spec.input_size) for i in images]
    )
    return (pixels * 255).round().astype(np.uint8)


def model_inputs(ctx: Context, images: list[str]) -> tuple[np.ndarray, torch.Tensor]:
    """The images' model inputs: ``uint8`` pixels ``[N, H, W, 3]`` and the normalised ``x``."""
    pixels = input_pixels(ctx, images)
    return pixels, ctx.normalise(pixels)


def choose_channels(ctx: Context) -> dict[str, list[int]]:
    """The channels each feature layer is shown by, the same on every page: those of the
    channel pages (highest mean activation over the data set); without those, the highest
    mean peak (top patches); without either, the first ones."""
    pages = (ctx.store.read_part(MODEL, AFTER + "feature_maps") or {}).get("channels", [])
    chosen: dict[str, list[int]] = {}
    for layer in ctx.spec.feature_layers:
        mine = [r for r in pages if r["layer"] == layer]
        if mine:
            ranked = sorted({r["channel_rank"]: r["channel"] for r in mine}.items())
            chosen[layer] = [int(c) for _, c in ranked]
            continue
        _, peaks = stored(ctx, f"peaks@{layer}")
        if peaks is not None:
            order = np.argsort(-peaks[..., 0].mean(0), kind="stable")
            chosen[layer] = [int(c) for c in order[:TOP_CHANNELS]]
        else:
            chosen[layer] = list(range(min(TOP_CHANNELS, channel_count(ctx, layer))))
    return chosen


def channel_count(ctx: Context, layer: str) -> int:
    probe = torch.zeros(1, 3, *ctx.spec.input_size, device=ctx.device)
    return techniques.get("feature_maps").run(ctx.model, probe, layers=[layer])[layer].acts.shape[1]
