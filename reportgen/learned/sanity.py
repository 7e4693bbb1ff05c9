"""Adebayo et al.'s cascading and independent randomisation and Sixt et al.'s random-logit
test, run once per run like the views: a metric group (``--metrics sanity``), not a
technique."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
import torch

from evaluation.sanity import TRAINED

from .. import figures
from ..compute import at_input, compute
from ..models import fold_plan, folded_copy
from ..options import METRIC_PRESETS
from ..store import PIXEL_LAYER, learned_path
from ..techniques.cam import REGISTRY_CAM
from .common import View, model_inputs, ok_ids, register_view

if TYPE_CHECKING:
    from ..context import Context

SANITY = "sanity"  # the --metrics group of the cascading randomisation check, a part too
SANITY_IMAGES = 4  # the check re-explains the first images at every step
# The check re-runs the ``cheap`` methods (the gradient CAMs from one capture, the gradient
# methods of a pass or two, the baselines: its controls, which ignore the weights) at every
# step. The independent randomisation re-runs fewer: the gradient CAMs, the plain gradient and
# guided backpropagation (the paper's contrast), and one baseline as the control, on the
# first ``INDEPENDENT_IMAGES`` of the cascade's images: a contrast to the cascade, not a
# second headline, so it re-explains half as many images at each of its steps
INDEPENDENT_METHODS = ("saliency", "guided_backprop", "baseline_edges")
INDEPENDENT_IMAGES = 2
# The other scored methods (hundreds of passes a map: RISE, Occlusion, Score-CAM, ...) take
# the cascade on the first image only, after its last step (the paper preset: its first
# too), in the run's preset
COSTLY_IMAGES = 1
STRIP_SIDE = 72  # px of each map in a sanity strip


def sanity(ctx: Context) -> dict:
    """The gradient CAMs (at the first CAM layer) and the run's other ``cheap`` methods on
    the first ``SANITY_IMAGES`` images, re-explained as the weights are re-initialised
    from the logits down (``evaluation.sanity``; at every third step in the fast preset),
    the rest on the first image after the last step (the paper preset: the first too);
    then one block at a time, and the random-logit test. Rows for ``sanity.csv``,
    ``sanity_independent.csv`` and ``random_logit.csv``, and per method a strip of the
    first image's map at every step explained."""
    from ..randomisation import (
        cascading_randomisation,
        independent_randomisation,
        random_logit,
        randomisation_steps,
    )

    layer = ctx.cam_layers[0]
    units = [
        (t, layer if t.name in REGISTRY_CAM else PIXEL_LAYER)
        for t in ctx.methods
        if t.scored and t.cheap
    ]
    images = ok_ids(ctx)[:SANITY_IMAGES]
    if not images or not units:
        return {}
    _, x = model_inputs(ctx, images)
    with torch.no_grad():
        targets = ctx.model(x).argmax(1)
    costly = [
        (t, layer if t.needs_layer else PIXEL_LAYER)
        for t in ctx.methods
        if t.scored and not t.cheap
    ]
    strips: dict[str, list[np.ndarray]] = defaultdict(list)
    plan = fold_plan(ctx.model, tuple(ctx.spec.input_size))
    common = {
        "layer": layer,
        "classifier": ctx.spec.classifier,
        "reshape": ctx.spec.reshape,
        "output": ctx.spec.output,
        "mean": ctx.spec.mean,
        "std": ctx.spec.std,
        "seed": ctx.config.seed,
    }

    def maps_of(model, x, targets, units=units) -> dict[str, torch.Tensor]:
        found = compute(
            folded(ctx, model, plan),
            x,
            targets,
            units,
            ctx.spec.classifier,
            reshape=ctx.spec.reshape,
            settings=lambda t: {**common, **ctx.options(t), "batch_size": ctx.rows},
            around=lambda label, layer, t: ctx.autocast(t),
        )  # a method that cannot apply at the layer (CAM at a ViT's tokens) is left out
        return {
            f"{c.method}@{c.layer}": at_input(c.maps, x.shape[-2:]) for c in found if not c.problem
        }

    few = [(t, lay) for t, lay in units if t.name in REGISTRY_CAM or t.name in INDEPENDENT_METHODS]
    few_keys = [f"{t.name}@{lay}" for t, lay in few]

    def shown(maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for key, m in maps.items():  # each step's map of the first image, for the strips
            strips[key].append(m[0].detach().float().cpu().numpy())
        return maps

    def explain(model, x, targets, units=units) -> dict[str, torch.Tensor]:
        return shown(maps_of(model, x, targets, units))

    every = METRIC_PRESETS[ctx.config.quality]["sanity_every"]  # steps between two explained
    with ctx.timer(SANITY, "all", len(images)):
        steps = randomisation_steps(ctx.model, x[:1])
        # the trained model's maps, made once: step 0 of both randomisations and the
        # target maps of the random-logit test; the run's own where it stored them all
        stored = [stored_maps(ctx, image, units, x.shape[-2:]) for image in images]
        if all(stored):  # each holds every unit's map, or is None
            trained = shown({key: torch.cat([m[key] for m in stored]) for key in stored[0]})
        else:
            trained = explain(ctx.model, x, targets)
        rows = cascading_randomisation(
            ctx.model,
            x,
            targets,
            explain,
            seed=ctx.config.seed,
            steps=steps,
            progress=True,
            trained=trained,
            every=every,
        )
        if costly and len(steps) > 1:  # the cascade's models after its first and last steps
            ends = [steps[0], "+".join(steps[1:])]  # the paper preset's; fast: the last only
            if METRIC_PRESETS[ctx.config.quality]["sanity_costly_steps"] == 1:
                ends = ["+".join(steps)]
            label = {0: (0, TRAINED), len(ends): (len(steps), steps[-1])}
            if len(ends) == 2:
                label[1] = (1, steps[0])
            first = stored_maps(ctx, images[0], costly, x.shape[-2:])
            coarse = cascading_randomisation(
                ctx.model,
                x[:COSTLY_IMAGES],
                targets[:COSTLY_IMAGES],
                lambda *a: explain(*a, units=costly),
                seed=ctx.config.seed,
                steps=ends,
                trained=None if first is None else shown(first),
            )
            rows += [
                {**r, "step": label[r["step"]][0], "block": label[r["step"]][1]} for r in coarse
            ]
        alone = independent_randomisation(
            ctx.model,
            x[:INDEPENDENT_IMAGES],
            targets[:INDEPENDENT_IMAGES],
            lambda *a: maps_of(*a, units=few),
            seed=ctx.config.seed,
            steps=steps,
            progress=True,
            trained={key: trained[key][:INDEPENDENT_IMAGES] for key in few_keys if key in trained},
            every=every,
        )
        logit = random_logit(
            ctx.model, x, targets, maps_of, seed=ctx.config.seed, target_maps=trained
        )
        for key, maps in strips.items():
            tiles = np.stack(
                [
                    figures.colourise(
                        figures.unit_range(
                            figures.resize(np.maximum(m, 0), (STRIP_SIDE, STRIP_SIDE))
                        ),
                        figures.HEATMAP,
                    )
                    for m in maps
                ]
            )
            strip = figures.tile(tiles, gap=2, columns=len(tiles))
            ctx.store.save_image(learned_path(SANITY, key), strip, 85)
    return {
        "sanity": [{**r, "image": images[int(r["image"])]} for r in rows],
        "sanity_independent": [{**r, "image": images[int(r["image"])]} for r in alone],
        "random_logit": [{**r, "image": images[int(r["image"])]} for r in logit],
    }


def folded(ctx: Context, model: torch.nn.Module, plan: dict[str, str]) -> torch.nn.Module:
    """The model the maps are made on, as in the run's batches: its norms folded into the
    convolutions (half the time of a pass in bfloat16, less for a gradient step too), in
    the run's memory layout. A randomised model is folded afresh at each step
    (reset norms fold exactly) by ``plan``, the trained model's ``fold_plan``: every
    randomised copy has its structure, and tracing and checking each again made folding
    6x as slow; the randomisation itself works on the original."""
    if model is ctx.model:
        return ctx.forward_model
    copy, _ = folded_copy(model, tuple(ctx.spec.input_size), plan)
    return copy.to(memory_format=ctx.layout)


def stored_maps(
    ctx: Context, image: str, units: list, size: tuple[int, int]
) -> dict[str, torch.Tensor] | None:
    """The maps the run stored for ``image`` (its first batch made them on the same folded
    model with the same settings, seed and precision), at the input's ``size``: step 0 of
    the check, which would cost as much again to recompute (the costly methods: as much as
    their whole check). Made in another batch, passes round differently: float32 gradient
    maps by about 1e-6; on Lite0 a recomputed bfloat16 map correlates with the stored one at
    0.99 (RISE, Score-CAM) and 0.97 (Occlusion), far above what a randomised step keeps.
    None when one is missing (the unit failed or is not done), or when the run explains
    another class than the prediction (``--target``), which the check uses."""
    if ctx.target != "predicted":
        return None
    maps = {}
    for t, layer in units:
        found = ctx.store.load_map(image, f"{t.name}@{layer}")
        if found is None:
            return None
        maps[f"{t.name}@{layer}"] = at_input(torch.from_numpy(found)[None], size)
    return maps


register_view(View(SANITY, run_wide=sanity, wanted=lambda ctx: SANITY in ctx.metric_groups))
