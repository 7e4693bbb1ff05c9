"""What the network learned: the views that are not saliency maps (issue 5).

Three kinds of work, each resumable like the maps' units:

* per batch (``batch_view``): penultimate features for the embedding, each channel's
  peak for the top patches, inversions at several depths, fooling images;
* once per run, after every batch (``after``): the channels each layer is shown by,
  Zeiler & Fergus's top-9 patches with deconvnet projections, silent channels,
  filter visualisations (both recipes), class models and DeepDream;
* without a model (``embedding_rows``, called by ``finish``): t-SNE of the features.

Images are written under ``img/learned/<technique>/``; values go to the long table
``synthesis.csv`` (technique, layer, item, variant, metric, value).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from . import data, figures, techniques
from .store import PIXEL_LAYER, Store, batch_name, learned_path

if TYPE_CHECKING:
    from .pipeline import Run

TOP_CHANNELS = 8  # channel pages per feature layer: the channels firing most on the data set
BATCH_VIEWS = ("embedding", "top_patches", "inversion", "fooling")
MODEL_VIEWS = ("top_patches", "filter_vis", "class_model", "deepdream")  # parts after batches
SANITY = "sanity"  # the --metrics group of the cascading randomisation check, a part too
SANITY_IMAGES = 4  # the check re-explains the first images at every step
# Besides the gradient CAMs (one capture for all), the cheap methods the check re-runs; the
# baselines are its controls (they ignore the weights: their maps cannot change)
SANITY_METHODS = (
    "saliency",
    "guided_backprop",
    "deconvnet",
    "guided_gradcam",
    "baseline_random",
    "baseline_centre",
    "baseline_edges",
)
STRIP_SIDE = 72  # px of each map in a sanity strip
AFTER = "after-"  # prefix of the run-wide parts' names
INVERSION_DEPTHS = 4  # inversions per image, evenly spaced over the feature layers
DREAM_IMAGES = 2  # DeepDream starts from the first images of the data set
PATCHES = 9  # Zeiler & Fergus show the top 9
PATCH_SIDE = 56  # px of each patch in the 3x3 grids
PROJECTION_BATCH = 16  # deconvnet projections per backward pass
PIXEL_RECIPE_UNITS = 2  # channels per layer also drawn with the plain-pixel recipe


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Display images ``[N, 3, H, W]`` in [0, 1] -> ``uint8 [N, H, W, 3]``."""
    pixels = images.detach().float().clamp(0, 1).mul(255).round().byte()
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


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


def settings(run: Run, name: str) -> dict:
    """A technique's options: its ``--quality`` preset, then anything given with ``--set``."""
    return run.options(techniques.get(name))


def synthesise(run: Run, name: str, *args, seed: int = 0, **given):
    """Synthesis technique ``name`` on the run's model with its normalisation, the run's
    seed (plus ``seed``), its preset and ``--set`` settings, and ``given`` over those."""
    return techniques.get(name).run(
        run.model,
        *args,
        mean=run.spec.mean,
        std=run.spec.std,
        seed=run.config.seed + seed,
        **{**settings(run, name), **given},
    )


def value_rows(technique: str, layer: str, item, variant: str, values: dict) -> list[dict]:
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


def batch_view(run: Run, technique, layer: str, index: int, loaded, x, probs) -> dict:
    """One per-batch unit of a view that is not a saliency map; the part's payload."""
    name, store = technique.name, run.store
    ids = [record.id for record, _, _ in loaded]
    rows: list[dict] = []
    with run.timer(name, layer, len(ids)):
        if name == "embedding":
            features = technique.run(
                run.model, x, classifier=run.spec.classifier, layers=run.spec.feature_layers
            )
            for image, vector in zip(ids, features.cpu().numpy(), strict=True):
                store.save_map(image, "embedding", vector)
        elif name == "top_patches":
            peaks = technique.run(run.model, x, layers=run.spec.feature_layers)
            for feature_layer, (values, where) in peaks.items():
                stacked = torch.cat([values[..., None].float(), where.float()], -1)
                for image, table in zip(ids, stacked.cpu().numpy(), strict=True):
                    store.save_map(image, f"peaks@{feature_layer}", table)  # [C, 3]: max, y, x
        elif name == "inversion":
            result = synthesise(run, name, x, layer=layer, seed=index)
            for k, (image, pixels) in enumerate(zip(ids, to_uint8(result.images), strict=True)):
                store.save_image(learned_path(name, f"{image}@{layer}"), pixels, quality=90)
                errors = {"error_start": result.start[k], "relative_error": result.final[k]}
                rows += value_rows(name, layer, image, "", errors)
        elif name == "fooling":
            classes = len(run.spec.class_names)
            predicted = probs.argmax(1).tolist()
            goals = [
                fooling_goal(image, p, classes, run.config.seed)
                for image, p in zip(ids, predicted, strict=True)
            ]
            result = synthesise(run, name, x, torch.tensor(goals, device=x.device), seed=index)
            extra = {k: v.detach().cpu() for k, v in result.extra.items()}
            change = extra.pop("perturbation").float()
            for k, (image, pixels) in enumerate(zip(ids, to_uint8(result.images), strict=True)):
                store.save_image(learned_path(name, image), pixels, quality=92)
                gain = 0.5 / float(change[k].abs().max().clamp_min(1e-12))
                magnified = to_uint8(0.5 + change[k : k + 1] * gain)[0]
                # noise compresses badly: a lower quality keeps it small, and it is shown magnified
                store.save_image(learned_path(name, image, "perturbation"), magnified, quality=75)
                values = {key: v[k] for key, v in extra.items() if v.ndim == 1}
                values.update(goal=goals[k], predicted=predicted[k], magnified=gain * 2)
                rows += value_rows(name, PIXEL_LAYER, image, "", values)
        else:
            raise ValueError(f"{name} has no per-batch unit")
    return {"synthesis": rows, "timing": run.timer.last}


def after(run: Run) -> None:
    """The run-wide views, once every batch is done (rank / shard 0 only). Each is a part
    of its own, so a resumed run skips those already made."""
    selected = {t.name for t in run.methods}
    if SANITY in run.metric_groups:
        selected.add(SANITY)
    done = run.store.done_units("model")
    chosen: dict[str, list[int]] | None = None
    for name in (*MODEL_VIEWS, SANITY):
        if name not in selected or AFTER + name in done:
            continue
        if chosen is None:
            chosen = choose_channels(run)
        make = {
            "top_patches": top_patches,
            "filter_vis": filter_vis,
            "class_model": class_models,
            "deepdream": deepdream,
            SANITY: sanity,
        }[name]
        payload = make(run, chosen)
        timing = run.timer.last if payload else None  # nothing made: nothing timed
        run.store.write_part("model", AFTER + name, {**payload, "timing": timing})


def ok_ids(run: Run) -> list[str]:
    """The images of the run that were read (their photo exists)."""
    return [r.id for r in run.records if (run.store.img / "photos" / f"{r.id}.jpg").is_file()]


def stored(run: Run, key: str) -> tuple[list[str], np.ndarray | None]:
    """A per-image vector (``save_map``) for every image that has it, stacked."""
    ids, rows = [], []
    for image in ok_ids(run):
        value = run.store.load_map(image, key)
        if value is not None:
            ids.append(image)
            rows.append(value)
    return ids, (np.stack(rows) if rows else None)


def choose_channels(run: Run) -> dict[str, list[int]]:
    """The channels each feature layer is shown by, the same on every page: those of the
    channel pages (highest mean activation over the data set); without those, the highest
    mean peak (top patches); without either, the first ones."""

    chosen: dict[str, list[int]] = {}
    channels = (
        run.store.read_table("channels") if run.store.table_path("channels").is_file() else None
    )
    for layer in run.spec.feature_layers:
        if channels is not None and (channels.layer == layer).any():
            mine = channels[channels.layer == layer].drop_duplicates("channel")
            chosen[layer] = [int(c) for c in mine.sort_values("channel_rank").channel]
            continue
        _, peaks = stored(run, f"peaks@{layer}")
        if peaks is not None:
            order = np.argsort(-peaks[..., 0].mean(0), kind="stable")
            chosen[layer] = [int(c) for c in order[:TOP_CHANNELS]]
        else:
            chosen[layer] = list(range(min(TOP_CHANNELS, channel_count(run, layer))))
    return chosen


def channel_count(run: Run, layer: str) -> int:
    size = run.spec.input_size
    probe = torch.zeros(1, 3, *size, device=run.device)
    return techniques.get("feature_maps").run(run.model, probe, layers=[layer])[layer].acts.shape[1]


def input_pixels(run: Run, images: list[str]) -> np.ndarray:
    """The images resized to the model's input, ``uint8 [N, H, W, 3]``: exactly what
    ``data.model_input`` gives times 255 (it resizes in uint8), so nothing is lost."""
    by_id = {r.id: r for r in run.records}
    pixels = np.stack(
        [data.model_input(data.load_photo(by_id[i])[0], run.spec.input_size) for i in images]
    )
    return (pixels * 255).round().astype(np.uint8)


def normalised(run: Run, pixels: np.ndarray) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` -> the model's normalised input ``[N, 3, H, W]``."""
    x = torch.from_numpy(pixels.astype(np.float32) / 255).to(run.device).permute(0, 3, 1, 2)
    return (x - run.mean) / run.std


def model_inputs(run: Run, images: list[str]) -> tuple[np.ndarray, torch.Tensor]:
    """The images' model inputs: ``uint8`` pixels ``[N, H, W, 3]`` and the normalised ``x``."""
    pixels = input_pixels(run, images)
    return pixels, normalised(run, pixels)


def top_patches(run: Run, chosen: dict[str, list[int]]) -> dict:
    """Zeiler & Fergus's figure: for each chosen channel the 9 images where it peaks highest,
    the receptive field of that peak cropped from each, beside the deconvnet projection of
    that one activation (cropped to the same box). Also counts each layer's silent
    channels (never above zero on the data set)."""
    from .techniques.neurons import (
        crop,
        dead_channels,
        deconv_projection,
        patch_grid,
        projection_image,
        receptive_field,
    )

    layers = list(run.spec.feature_layers)
    peaks = {}
    ids: list[str] = []
    for layer in layers:
        ids, peaks[layer] = stored(run, f"peaks@{layer}")
    if not ids:
        return {}
    size = tuple(run.spec.input_size)
    rows, dead = [], []
    with run.timer("top_patches", "all", len(ids)):
        for depth, layer in enumerate(layers):
            table = peaks[layer]  # [images, C, 3]
            silent = dead_channels(table[..., 0])
            dead.append(
                {
                    "layer": layer,
                    "depth": depth,
                    "channels": int(table.shape[1]),
                    "silent": int(silent.sum()),
                    "silent_share": float(silent.mean()),
                }
            )
            field = receptive_field(run.model, layer, size)
            for c in chosen[layer]:
                order = np.argsort(-table[:, c, 0], kind="stable")[:PATCHES]
                for rank, i in enumerate(order):
                    y, x = int(table[i, c, 1]), int(table[i, c, 2])
                    top, left, bottom, right = field.box(y, x, size)
                    rows.append(
                        {
                            "layer": layer,
                            "channel": c,
                            "rank": rank,
                            "image": ids[i],
                            "activation": float(table[i, c, 0]),
                            "y": y,
                            "x": x,
                            "top": top,
                            "left": left,
                            "bottom": bottom,
                            "right": right,
                        }
                    )
        patches: dict[tuple[str, int], list] = defaultdict(lambda: [None] * PATCHES)
        projections: dict[tuple[str, int], list] = defaultdict(lambda: [None] * PATCHES)
        needed = list(dict.fromkeys(r["image"] for r in rows))
        photos = dict(zip(needed, input_pixels(run, needed), strict=True))  # decoded once
        for layer in tqdm(layers, desc="top patches", leave=False):
            mine = [r for r in rows if r["layer"] == layer]
            names = list(dict.fromkeys(r["image"] for r in mine))
            pixels = np.stack([photos[name] for name in names])
            x = normalised(run, pixels)
            for start in range(0, len(mine), PROJECTION_BATCH):
                chunk = mine[start : start + PROJECTION_BATCH]
                which = [names.index(r["image"]) for r in chunk]
                projected = deconv_projection(
                    run.model,
                    x[which],
                    layer,
                    torch.tensor([r["channel"] for r in chunk], device=x.device),
                    torch.tensor([[r["y"], r["x"]] for r in chunk], device=x.device),
                )
                for r, k, proj in zip(chunk, which, projected, strict=True):
                    box = (r["top"], r["left"], r["bottom"], r["right"])
                    key = (layer, r["channel"])
                    patches[key][r["rank"]] = crop(pixels[k], box)
                    projections[key][r["rank"]] = projection_image(proj, box)
        for (layer, c), tiles in patches.items():
            found = [t for t in tiles if t is not None]
            deconv = [t for t in projections[(layer, c)] if t is not None]
            run.store.save_image(
                learned_path("top_patches", f"{layer}/{c}"), patch_grid(found, PATCH_SIDE), 85
            )
            run.store.save_image(
                learned_path("top_patches", f"{layer}/{c}", "deconv"),
                patch_grid(deconv, PATCH_SIDE),
                85,
            )
    return {"patches": rows, "dead": dead}


def natural_peaks(run: Run, layer: str) -> np.ndarray | None:
    """Each channel's mean activation, max over the data set's images (the level a natural
    image reaches), from the stored per-image channel means."""
    _, means = stored(run, f"channels@{layer}")
    return None if means is None else means.max(0)


def filter_vis(run: Run, chosen: dict[str, list[int]]) -> dict:
    """Activation maximisation for every chosen channel (one batch, the default recipe), and
    the first ``PIXEL_RECIPE_UNITS`` of each layer with the plain-pixel recipe beside it."""
    units = [(layer, c) for layer in run.spec.feature_layers for c in chosen[layer]]
    pixel_units = [
        (layer, c) for layer in run.spec.feature_layers for c in chosen[layer][:PIXEL_RECIPE_UNITS]
    ]
    rows = []
    with run.timer("filter_vis", "all", len(units)):
        for variant, todo in (("fourier", units), ("pixel", pixel_units)):
            result = synthesise(run, "filter_vis", units=todo, param=variant, progress=True)
            shown = result.extra.get("stretched", result.images)  # pixels: contrast stretched
            for k, ((layer, c), pixels) in enumerate(zip(todo, to_uint8(shown), strict=True)):
                run.store.save_image(
                    learned_path("filter_vis", f"{layer}/{c}", variant), pixels, 90
                )
                values = {"start": result.start[k], "final": result.final[k]}
                rows += value_rows("filter_vis", layer, c, variant, values)
        for layer in run.spec.feature_layers:
            natural = natural_peaks(run, layer)
            if natural is not None:
                for c in chosen[layer]:
                    rows += value_rows("filter_vis", layer, c, "", {"natural": natural[c]})
    return {"synthesis": rows}


def class_models(run: Run, _chosen=None) -> dict:
    """A class model for every class the data set is predicted as, and each ``--classes``."""

    predicted: set[int] = set()
    for index in range(len(range(0, len(run.records), run.config.batch_size))):
        part = run.store.read_part(batch_name(index), "images") or {}
        predicted |= {p["class_id"] for p in part.get("predictions", []) if p["rank"] == 1}
    classes = sorted(predicted | set(run.extra_classes))
    if not classes:
        return {}
    rows = []
    with run.timer("class_model", "all", len(classes)):
        result = synthesise(run, "class_model", classes=classes, progress=True)
        extra = {k: v.detach().cpu() for k, v in result.extra.items() if v.ndim == 1}
        for k, (c, pixels) in enumerate(zip(classes, to_uint8(result.images), strict=True)):
            run.store.save_image(learned_path("class_model", str(c)), pixels, 90)
            values = {"start": result.start[k], "final": result.final[k]}
            values.update({key: v[k] for key, v in extra.items()})
            values["predicted"] = float(c in predicted)
            rows += value_rows("class_model", "logits", c, "", values)
    return {"synthesis": rows}


def deepdream(run: Run, _chosen=None) -> dict:
    """DeepDream from the first ``DREAM_IMAGES`` images, at a shallow and a deep layer."""
    images = ok_ids(run)[:DREAM_IMAGES]
    if not images:
        return {}
    _, x = model_inputs(run, images)
    rows = []
    layers = dream_layers(list(run.spec.feature_layers))
    with run.timer("deepdream", "all", len(images) * len(layers)):
        for layer in layers:
            result = synthesise(run, "deepdream", x, layer=layer)
            for k, (image, pixels) in enumerate(zip(images, to_uint8(result.images), strict=True)):
                run.store.save_image(learned_path("deepdream", f"{image}@{layer}"), pixels, 90)
                values = {"start": result.start[k], "final": result.final[k]}
                rows += value_rows("deepdream", layer, image, "", values)
    return {"synthesis": rows}


def embedding_rows(store: Store, images: list[dict], predictions: list[dict], seed: int) -> list:
    """t-SNE of the stored penultimate features (scikit-learn; PCA start, the run's seed,
    perplexity min(30, (N - 1) / 3) as t-SNE needs perplexity < N); [] under 4 images."""
    from sklearn.manifold import TSNE

    ok = [r for r in images if r["status"] == "ok"]
    found = [(r, store.load_map(r["image"], "embedding")) for r in ok]
    found = [(r, v) for r, v in found if v is not None]
    if len(found) < 4:
        return []
    features = np.stack([v for _, v in found]).astype(np.float64)
    perplexity = min(30.0, (len(found) - 1) / 3)
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    top1 = {p["image"]: p for p in predictions if p["rank"] == 1}
    return [
        {
            "image": r["image"],
            "x": float(px),
            "y": float(py),
            "label": r["label"],
            "predicted": top1[r["image"]]["class_id"] if r["image"] in top1 else None,
            "class_name": top1[r["image"]]["class_name"] if r["image"] in top1 else "",
        }
        for (r, _), (px, py) in zip(found, xy, strict=True)
    ]


def sanity(run: Run, _chosen=None) -> dict:
    """Adebayo et al.'s cascading randomisation on the first ``SANITY_IMAGES`` images: the
    gradient CAMs (at the first CAM layer) and ``SANITY_METHODS`` of the run, re-explained
    as the weights are re-initialised from the logits down (``evaluation.sanity``); rows for
    ``sanity.csv``, and per method a strip of the first image's map at every step."""
    from evaluation.sanity import cascading_randomisation

    from .techniques.cam import REGISTRY_CAM, cam_maps, upsample

    chosen = [t.name for t in run.methods]
    cams = [m for m in chosen if m in REGISTRY_CAM]
    others = [m for m in chosen if m in SANITY_METHODS]
    images = ok_ids(run)[:SANITY_IMAGES]
    if not images or not (cams or others):
        return {}
    _, x = model_inputs(run, images)
    with torch.no_grad():
        targets = run.model(x).argmax(1)
    layer = run.cam_layers[0]
    strips: dict[str, list[np.ndarray]] = defaultdict(list)

    def explain(model, x, targets) -> dict[str, torch.Tensor]:
        maps = {}
        if cams:
            found = cam_maps(model, x, targets, [layer], cams, run.spec.classifier)
            size = tuple(x.shape[-2:])
            maps.update({f"{m}@{layer}": upsample(v, size) for (m, _), v in found.items()})
        for name in others:
            maps[f"{name}@{PIXEL_LAYER}"] = techniques.get(name).run(
                model,
                x,
                targets,
                layer=layer,
                classifier=run.spec.classifier,
                mean=run.spec.mean,
                std=run.spec.std,
                seed=run.config.seed,
            )
        for key, m in maps.items():
            strips[key].append(m[0].detach().float().cpu().numpy())
        return maps

    with run.timer(SANITY, "all", len(images)):
        rows = cascading_randomisation(
            run.model, x, targets, explain, seed=run.config.seed, progress=True
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
            run.store.save_image(learned_path(SANITY, key), strip, 85)
    return {"sanity": [{**r, "image": images[int(r["image"])]} for r in rows]}
