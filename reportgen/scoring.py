"""Every map of a batch drawn and scored: the metrics of ``evaluation`` put to the model.

Each metric pass goes through one ``Batcher`` (full passes whatever the request) in the
run's forward precision on the folded model (``Context.probabilities``). What every map
of a batch is compared with (each photo's probability, the curves' end points, the
blurred photos insertion starts from) is computed once per batch (``references``).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from evaluation import catalogue
from evaluation import metrics as M
from evaluation.metrics import correlation as C

from . import figures
from .batch import Batch, class_boxes
from .batcher import Batcher
from .options import METRIC_PRESETS
from .store import map_data_path, overlay_path
from .techniques.cam import upsample

SENSITIVITY_RADIUS = 0.2  # uniform noise in the model's input space (Quantus' default)
POINTING_TOLERANCE = 15  # px at the image's own resolution (Zhang et al. 2016)
LOCALISE_SIDE = 1024  # localisation metrics at the image's resolution, capped here


@dataclass
class References:
    """What every map's scores of a batch compare against, from the metrics' own passes."""

    photo: np.ndarray  # each photo's probability of its target (Average Drop, ...)
    curve_ends: dict[str, list[tuple[float, float]]]  # mode -> per image (first, last)
    blurred: list[np.ndarray]  # each photo's blur: where insertion starts
    subsets: list[np.ndarray]  # per image: the pixel subsets of faithfulness correlation
    subset_drops: list[np.ndarray]  # per image: the probability's drop without each subset
    noise: list[np.ndarray]  # per image: infidelity's removed squares, summed over channels
    noise_drops: list[np.ndarray]  # per image: the probability's drop without each


def references(ctx, batch: Batch) -> References | None:
    """Each photo's probability of its target, and the insertion / deletion curves' first
    and last points, the same for every map: deletion runs from the photo to black,
    insertion from the blurred photo to the photo. One pass's worth (the photos, one
    black image, one blur per image) instead of rows per map; the blurs are kept for the
    maps' insertion curves, so each is computed once. None if no metric needs them."""
    groups = ctx.metric_groups
    if not {"faithfulness", "insertion_deletion"} & set(groups):
        return None
    inputs, targets = batch.pixels, batch.targets.numpy()
    n, curves = len(inputs), "insertion_deletion" in groups
    black = M.substrate_image(inputs[0], None, "deletion")
    blurred = [M.substrate_image(image, None, "insertion") for image in inputs] if curves else []
    extra = [black, *blurred] if curves else []
    out = ctx.probabilities(np.concatenate([inputs, np.stack(extra)]) if extra else inputs)
    picked = out[:, targets]  # [rows, n]: each row's probability of each target
    photo = picked[np.arange(n), np.arange(n)].astype(np.float64)
    ends = (
        {
            "deletion": [(photo[k], picked[n, k]) for k in range(n)],
            "insertion": [(picked[n + 1 + k, k], photo[k]) for k in range(n)],
        }
        if curves
        else {}
    )
    subsets, drops, noise, noise_drops = [], [], [], []
    if "faithfulness" in groups:  # the same perturbed images for every map of the image
        runs = METRIC_PRESETS[ctx.config.quality]["correlation_runs"]
        for k, (item, image) in enumerate(zip(batch.items, inputs, strict=True)):
            rng = np.random.default_rng([ctx.config.seed, zlib.crc32(item.record.id.encode())])
            chosen = C.random_subsets(image.shape[0] * image.shape[1], runs, rng)
            squares, removed = C.square_removals(image, runs, rng)
            out = ctx.probabilities(np.concatenate([C.without(image, chosen), squares]))
            subsets.append(chosen)
            drops.append(photo[k] - out[:runs, targets[k]])
            noise.append(removed)
            noise_drops.append(photo[k] - out[runs:, targets[k]])
    return References(photo, ends, blurred, subsets, drops, noise, noise_drops)


def sensitivities(ctx, batch: Batch, units: list, settings) -> dict[tuple[str, str], dict]:
    """Max-sensitivity (Yeh et al. 2019) of the maps of the ``cheap`` units among ``units``:
    per image, the largest ``‖Φ(x + ε) − Φ(x)‖_F / ‖Φ(x)‖_F`` over the preset's draws of
    ``ε ~ U[−r, r]`` per input value (the model's input space, the explained class held),
    as Quantus' ``MaxSensitivity`` defines it. Every draw re-explains all those units at
    once (the gradient CAMs from one capture), so only methods of a pass or two take
    part. Noise is seeded per image, so a map's score does not depend on its batch.
    Returns ``(method, layer) -> {"max_sensitivity": per-image values}`` for
    ``scored``'s records (NaN where the clean map is zero)."""
    from .compute import compute

    cheap = [(t, layer) for t, layer in units if t.cheap]
    if "robustness" not in ctx.metric_groups or not cheap:
        return {}
    draws = METRIC_PRESETS[ctx.config.quality]["sensitivity_draws"]
    x = batch.x

    def maps_of(inputs: torch.Tensor) -> dict[tuple[str, str], torch.Tensor]:
        found = compute(
            ctx.forward_model,
            inputs,
            batch.targets,
            cheap,
            ctx.spec.classifier,
            reshape=ctx.spec.reshape,
            settings=settings,
            around=lambda label, layer, t: ctx.autocast(t),  # the scored maps' precision
        )
        return {
            (c.method, c.layer): torch.nan_to_num(c.maps.detach().float().flatten(1))
            for c in found
            if not c.problem
        }

    gens = [
        torch.Generator().manual_seed(zlib.crc32(f"{ctx.config.seed}:{item.record.id}".encode()))
        for item in batch.items
    ]
    noises = (
        (2 * torch.stack([torch.rand(x.shape[1:], generator=g) for g in gens]) - 1)
        * SENSITIVITY_RADIUS
        for _ in range(draws)
    )
    with ctx.phases("metric: robustness"):
        worst = max_sensitivity(maps_of, x, noises)
    return {key: {"max_sensitivity": w.tolist()} for key, w in worst.items()}


def max_sensitivity(maps_of, x: torch.Tensor, noises) -> dict[tuple[str, str], torch.Tensor]:
    """Per map and image, the largest relative change ``‖Φ(x + ε) − Φ(x)‖_F / ‖Φ(x)‖_F``
    over the ``noises`` ε; ``maps_of(inputs)`` gives each map's ``[N, ...]`` values (NaN
    where the clean map is zero: no change can be relative to it)."""
    clean = maps_of(x)
    norms = {key: m.norm(dim=1) for key, m in clean.items()}
    worst = {key: torch.zeros(len(x)) for key in clean}
    for noise in noises:
        for key, m in maps_of(x + noise.to(x.device)).items():
            change = (m - clean[key]).norm(dim=1) / norms[key]
            change[norms[key] == 0] = float("nan")
            worst[key] = torch.maximum(worst[key], change.cpu())
    return worst


def draw(ctx, batch: Batch, method: str, layer: str, maps: torch.Tensor) -> np.ndarray:
    """Save each image's raw map, its data for the site's views and its overlay; returns the maps
    up-sampled to the model's input size ``[N, H, W]``."""
    up = upsample(maps, ctx.spec.input_size).numpy()
    with ctx.phases("draw maps and overlays"):
        for k, item in enumerate(batch.items):
            image = item.record.id
            ctx.store.save_map(image, f"{method}@{layer}", maps[k].numpy())
            levels, meta = figures.encode_map(maps[k].numpy())
            key = f"{image}/{method}@{layer}"
            ctx.store.save_map_data(map_data_path(image, method, layer), key, levels, meta)
            ctx.store.save_image(
                overlay_path(image, method, layer),
                figures.overlay(item.photo, up[k], (meta["lo"], meta["hi"])),
            )
    return up


def scored(
    ctx,
    batch: Batch,
    refs: References | None,
    method: str,
    layer: str,
    maps,
    records: dict[str, list[float]] | None = None,
) -> dict:
    """A unit's payload once its maps are computed: maps drawn, metric rows, the largest
    rectified value (for the shared scale) and the sums of the perturbation curves (their
    means go to run.json). Non-finite values (a NaN or Inf gradient) become 0 and their
    count is recorded as the metric ``nonfinite``, so the leaderboard never averages a
    NaN. ``records``: per-image values that came with the maps (e.g. the layer's share of
    negative activations), stored beside the scores."""
    maps = maps.detach().float().cpu()
    nonfinite = (~torch.isfinite(maps)).flatten(1).sum(1).tolist()
    maps = torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
    up = draw(ctx, batch, method, layer, maps)
    values: list[dict[str, float]] = [{"target": int(c)} for c in batch.targets.numpy()]
    for k, count in enumerate(nonfinite):
        if count:
            values[k]["nonfinite"] = count
    for name, per_image in (records or {}).items():
        for k, value in enumerate(per_image):
            if not math.isnan(value):  # undefined for this image (e.g. a zero map)
                values[k][name] = value
    curves = score(ctx, batch, refs, up, values)
    table = []
    base = {"model": ctx.spec.name, "layer": layer, "method": method}
    for image, v in zip(batch.ids, values, strict=True):
        table += [
            {"image": image, **base, "metric": name, "value": float(x)} for name, x in v.items()
        ]
    return {"metrics": table, "scale": float(np.maximum(up, 0).max()), "curves": curves}


def score(ctx, batch: Batch, refs: References | None, up: np.ndarray, values: list[dict]):
    """The selected metrics of one method's maps ``up`` (at the input size) into
    ``values`` (one dict per image); returns the summed insertion / deletion curves."""
    groups, inputs = ctx.metric_groups, batch.pixels
    rows = np.arange(len(inputs))
    classes = batch.targets.numpy()
    if "faithfulness" in groups:
        with ctx.phases("metric: faithfulness"):
            batcher = Batcher(ctx.probabilities, ctx.rows)
            full = refs.photo
            for suffix, mode in (("", "grad-cam++"), ("_top50", "score-cam")):

                def faithful(out: np.ndarray, suffix: str = suffix) -> None:
                    masked = out[rows, classes].astype(np.float64)
                    drops = M.drop_per_image(full, masked)
                    increases = M.increase_per_image(full, masked)
                    for k, v in enumerate(values):
                        v[f"average_drop{suffix}"] = drops[k]
                        name = "increase_top50" if suffix else "increase_in_confidence"
                        v[name] = increases[k]
                        if not suffix:
                            v["prob_full"], v["prob_masked"] = full[k], masked[k]

                batcher.add(M.explanation_images(inputs, up, mode), faithful)
            batcher.flush()
            for k, v in enumerate(values):
                v["faithfulness_correlation"] = C.faithfulness_correlation(
                    up[k], refs.subsets[k], refs.subset_drops[k]
                )
                v["infidelity"] = C.infidelity(up[k], refs.noise[k], refs.noise_drops[k])
    curves: dict[str, list[float]] = {}

    def add_curve(k: int, mode: str, plan: M.CurvePlan, inner: np.ndarray) -> None:
        start, finish = refs.curve_ends[mode][k]
        curve = plan.curve(np.concatenate([[start], inner, [finish]]))
        values[k][f"{mode}_auc"] = curve.auc
        total = curves.setdefault(mode, [0.0] * len(curve.values))
        curves[mode] = [a + b for a, b in zip(total, curve.values, strict=True)]

    if "insertion_deletion" in groups:
        with ctx.phases("metric: insertion_deletion"):
            batcher = Batcher(ctx.probabilities, ctx.rows)
            for k in rows:
                step = M.curve_step(up[k].shape, ctx.curve_steps)
                rank = M.salience_rank(up[k])
                for mode in ("insertion", "deletion"):
                    substrate = refs.blurred[k] if mode == "insertion" else None
                    plan = M.curve_plan(
                        inputs[k], up[k], mode=mode, step=step, substrate=substrate,
                        spacing=ctx.curve_spacing, rank=rank,
                    )  # fmt: skip
                    batcher.add(
                        plan.images(1, len(plan.changed) - 1),
                        lambda out, k=k, mode=mode, plan=plan: add_curve(
                            k, mode, plan, out[:, classes[k]]
                        ),
                    )
            batcher.flush()
    if "settings" in groups:
        with ctx.phases("metric: settings"):
            settings_variants(ctx, inputs, up, classes, values)
    if "road" in groups:
        with ctx.phases("metric: road"):
            for k in rows:
                for order in ("morf", "lerf"):
                    road = M.road(ctx.probabilities, inputs[k], up[k], int(classes[k]), order=order)
                    values[k][f"road_{order}"] = road.mean
    if "localisation" in groups:
        with ctx.phases("metric: localisation"):
            for k, item in enumerate(batch.items):
                localise(ctx, batch, values[k], item, up[k], int(classes[k]))
    by_map = catalogue.scored_by("map", groups)
    if by_map:
        with ctx.phases("metric: of the map alone"):
            for k in rows:
                values[k].update({m.id: float(m.score(up[k])) for m in by_map})
    return curves


def settings_variants(ctx, inputs, up: np.ndarray, classes, values: list[dict]) -> None:
    """The ``settings`` group: each variant of the insertion / deletion games (another
    substrate, or a share of the run's steps) as a whole curve per map, batched."""
    batcher = Batcher(ctx.probabilities, ctx.rows)
    ranks = [M.salience_rank(saliency) for saliency in up]
    for m in catalogue.of_group("settings"):
        mode = m.variant_of.removesuffix("_auc")
        key, value = m.change
        for k in range(len(inputs)):
            steps = ctx.curve_steps * (value if key == "steps" else 1)
            substrate = None if key == "steps" else value
            if substrate == "mean":  # the photo's mean colour
                substrate = inputs[k].mean((0, 1))
            plan = M.curve_plan(
                inputs[k], up[k], mode=mode, step=M.curve_step(up[k].shape, max(1, round(steps))),
                substrate=substrate, spacing=ctx.curve_spacing, rank=ranks[k],
            )  # fmt: skip

            def keep(out, k=k, plan=plan, metric=m.id) -> None:
                values[k][metric] = plan.curve(out[:, classes[k]]).auc

            batcher.add(plan.images(), keep)
    batcher.flush()


def localise(ctx, batch: Batch, v: dict, item, saliency: np.ndarray, target: int) -> None:
    """Localisation scores of one map (at the model's input size) into ``v``: against
    the boxes of the class it explains, and the exact mask where the data set has one."""
    record, rgb = item.record, item.rgb
    if record.boxes:
        own = class_boxes(record, target)
        v["instances"] = len(own)
        sx, sy = ctx.spec.input_size[1] / rgb.shape[1], ctx.spec.input_size[0] / rgb.shape[0]
        boxes = [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in own]
        for delta in ctx.config.loc_deltas:
            v[f"loc_{delta:g}"] = M.loc_delta(saliency, boxes, delta)
        v.update(localisation(saliency, own, rgb.shape[:2]))
    mask = batch.masks.get(record.id)
    if mask is not None:
        for metric in catalogue.scored_by("mask", ctx.metric_groups):
            v[metric.id] = metric.score(saliency, mask)


def localisation(saliency: np.ndarray, boxes: list, size: tuple[int, int]) -> dict[str, float]:
    """Pointing game, energy pointing game and box localisation of one map (at the model's
    input size) against boxes in image pixels: the map is resized to the image's own
    resolution (long side capped at LOCALISE_SIDE, tolerance scaled alike)."""
    h, w = size
    scale = min(1.0, LOCALISE_SIDE / max(h, w))
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    resized = figures.resize(saliency, shape)
    scaled = [[v * scale for v in box] for box in boxes]
    iou, hit = M.box_localisation(resized, scaled)
    return {
        "pointing_game": 100.0 * M.pointing_game_hit(resized, scaled, POINTING_TOLERANCE * scale),
        "energy_pointing_game": 100.0 * M.energy_pointing_game(resized, scaled),
        "box_iou": iou,
        "box_loc": 100.0 * hit,
    }
