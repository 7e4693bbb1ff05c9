"""Views made by optimising an image through the model: inversions and fooling images
(per batch), filter visualisations, class models and DeepDream (once per run)."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..store import PIXEL_LAYER, batch_name, learned_path
from ..techniques.synthesis_maximisation import PIXEL_RECIPE
from .common import (
    LAYER_PAGES,
    View,
    choose_channels,
    model_inputs,
    ok_ids,
    on_learned,
    register_view,
    stored,
    synthesise,
    to_uint8,
    value_rows,
)

if TYPE_CHECKING:
    from ..batch import Batch
    from ..context import Context

INVERSION_DEPTHS = 4  # inversions per image, evenly spaced over the feature layers
DREAM_IMAGES = 2  # DeepDream starts from the first images of the data set
PIXEL_RECIPE_UNITS = 2  # channels per layer also drawn with the plain-pixel recipe


def inversion_layers(feature_layers: list[str]) -> list[str]:
    """``INVERSION_DEPTHS`` feature layers evenly spaced by depth, the deepest included."""
    n = len(feature_layers)
    if n <= INVERSION_DEPTHS:
        return list(feature_layers)
    picks = np.linspace(0, n - 1, INVERSION_DEPTHS + 1)[1:].round().astype(int)
    return [feature_layers[i] for i in picks]


def dream_layers(feature_layers: list[str]) -> list[str]:
    """A shallow layer (a third of the way down: strokes) and a deep one (objects)."""
    if len(feature_layers) < 3:
        return list(feature_layers)
    return [feature_layers[len(feature_layers) // 3], feature_layers[-2]]


def fooling_goal(image: str, predicted: int, classes: int, seed: int) -> int:
    """The class an image is pushed to: random but fixed by the image's id and the seed (so
    batches and shards agree), never the predicted one."""
    rng = np.random.default_rng([seed, zlib.crc32(image.encode())])
    goal = int(rng.integers(classes - 1))
    return goal + (goal >= predicted)


def inversion(ctx: Context, batch: Batch, layer: str) -> dict:
    """Each image reconstructed from its representation at ``layer``."""
    rows: list[dict] = []
    with ctx.timer("inversion", layer, len(batch.items)):
        result = synthesise(ctx, "inversion", batch.x, layer=layer, seed=batch.index)
        for k, (image, pixels) in enumerate(zip(batch.ids, to_uint8(result.images), strict=True)):
            ctx.store.save_image(learned_path("inversion", f"{image}@{layer}"), pixels, quality=90)
            errors = {"error_start": result.start[k], "relative_error": result.final[k]}
            rows += value_rows("inversion", layer, image, "", errors)
    return {"synthesis": rows, "timing": ctx.timer.last}


def fooling(ctx: Context, batch: Batch, layer: str) -> dict:
    """Each image nudged until the model calls it another class (``fooling_goal``)."""
    ids, rows = batch.ids, []
    with ctx.timer("fooling", layer, len(ids)):
        classes = len(ctx.spec.class_names)
        predicted = batch.probs.argmax(1).tolist()
        goals = [
            fooling_goal(image, p, classes, ctx.config.seed)
            for image, p in zip(ids, predicted, strict=True)
        ]
        goal = torch.tensor(goals, device=batch.x.device)
        result = synthesise(ctx, "fooling", batch.x, goal, seed=batch.index)
        extra = {k: v.detach().cpu() for k, v in result.extra.items()}
        change = extra.pop("perturbation").float()
        for k, (image, pixels) in enumerate(zip(ids, to_uint8(result.images), strict=True)):
            ctx.store.save_image(learned_path("fooling", image), pixels, quality=92)
            gain = 0.5 / float(change[k].abs().max().clamp_min(1e-12))
            magnified = to_uint8(0.5 + change[k : k + 1] * gain)[0]
            # noise compresses badly: a lower quality keeps it small, and it is shown magnified
            ctx.store.save_image(
                learned_path("fooling", image, "perturbation"), magnified, quality=75
            )
            values = {key: v[k] for key, v in extra.items() if v.ndim == 1}
            values.update(goal=goals[k], predicted=predicted[k], magnified=gain * 2)
            rows += value_rows("fooling", PIXEL_LAYER, image, "", values)
    return {"synthesis": rows, "timing": ctx.timer.last}


def natural_peaks(ctx: Context, layer: str) -> np.ndarray | None:
    """Each channel's mean activation, max over the data set's images (the level a natural
    image reaches), from the stored per-image channel means."""
    _, means = stored(ctx, f"channels@{layer}")
    return None if means is None else means.max(0)


def filter_vis(ctx: Context) -> dict:
    """Activation maximisation for every chosen channel (one batch, the default recipe), and
    the first ``PIXEL_RECIPE_UNITS`` of each layer with the plain-pixel recipe beside it, at
    that recipe's own steps and size unless ``--set`` gives them."""
    chosen = choose_channels(ctx)
    layers = ctx.spec.feature_layers
    units = [(layer, c) for layer in layers for c in chosen[layer]]
    pixel_units = [(layer, c) for layer in layers for c in chosen[layer][:PIXEL_RECIPE_UNITS]]
    rows = []
    with ctx.timer("filter_vis", "all", len(units)):
        chosen_by_user = ctx.config.options.get("filter_vis", {})  # --set: both recipes
        own = {k: v for k, v in PIXEL_RECIPE.items() if k not in chosen_by_user}
        for variant, todo, given in (("fourier", units, {}), ("pixel", pixel_units, own)):
            result = synthesise(
                ctx, "filter_vis", units=todo, param=variant, progress=True, **given
            )
            shown = result.extra.get("stretched", result.images)  # pixels: contrast stretched
            for k, ((layer, c), pixels) in enumerate(zip(todo, to_uint8(shown), strict=True)):
                ctx.store.save_image(
                    learned_path("filter_vis", f"{layer}/{c}", variant), pixels, 90
                )
                values = {"start": result.start[k], "final": result.final[k]}
                rows += value_rows("filter_vis", layer, c, variant, values)
        for layer in layers:
            natural = natural_peaks(ctx, layer)
            if natural is not None:
                for c in chosen[layer]:
                    rows += value_rows("filter_vis", layer, c, "", {"natural": natural[c]})
    return {"synthesis": rows}


def class_models(ctx: Context) -> dict:
    """A class model for every class the data set is predicted as, and each ``--classes``."""
    predicted: set[int] = set()
    for index in range(len(range(0, len(ctx.records), ctx.config.batch_size))):
        part = ctx.store.read_part(batch_name(index), "images") or {}
        predicted |= {p["class_id"] for p in part.get("predictions", []) if p["rank"] == 1}
    classes = sorted(predicted | set(ctx.extra_classes))
    if not classes:
        return {}
    rows = []
    with ctx.timer("class_model", "all", len(classes)):
        result = synthesise(ctx, "class_model", classes=classes, progress=True)
        extra = {k: v.detach().cpu() for k, v in result.extra.items() if v.ndim == 1}
        for k, (c, pixels) in enumerate(zip(classes, to_uint8(result.images), strict=True)):
            ctx.store.save_image(learned_path("class_model", str(c)), pixels, 90)
            values = {"start": result.start[k], "final": result.final[k]}
            values.update({key: v[k] for key, v in extra.items()})
            values["predicted"] = float(c in predicted)
            rows += value_rows("class_model", "logits", c, "", values)
    return {"synthesis": rows}


def deepdream(ctx: Context) -> dict:
    """DeepDream from the first ``DREAM_IMAGES`` images, at a shallow and a deep layer."""
    images = ok_ids(ctx)[:DREAM_IMAGES]
    if not images:
        return {}
    _, x = model_inputs(ctx, images)
    rows = []
    layers = dream_layers(list(ctx.spec.feature_layers))
    with ctx.timer("deepdream", "all", len(images) * len(layers)):
        for layer in layers:
            result = synthesise(ctx, "deepdream", x, layer=layer)
            for k, (image, pixels) in enumerate(zip(images, to_uint8(result.images), strict=True)):
                ctx.store.save_image(learned_path("deepdream", f"{image}@{layer}"), pixels, 90)
                values = {"start": result.start[k], "final": result.final[k]}
                rows += value_rows("deepdream", layer, image, "", values)
    return {"synthesis": rows}


def _inversion_layers(ctx: Context) -> list[str]:
    return inversion_layers(list(ctx.spec.feature_layers))


register_view(View("inversion", _inversion_layers, inversion, shown=(on_learned("inversion"),)))
register_view(View("fooling", lambda ctx: [PIXEL_LAYER], fooling, shown=(on_learned("fooling"),)))
register_view(View("filter_vis", run_wide=filter_vis, shown=(on_learned("filters"), LAYER_PAGES)))
register_view(View("class_model", run_wide=class_models, shown=(on_learned("classes"),)))
register_view(View("deepdream", run_wide=deepdream, shown=(on_learned("dreams"),)))
