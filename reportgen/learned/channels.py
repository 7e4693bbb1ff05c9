"""Views of single channels: feature-map grids and the channel pages, the first layer's
filters, Zeiler & Fergus's top-9 patches (with silent channels) and the embedding."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import figures, techniques
from ..store import (
    ATLAS_COLUMNS,
    ATLAS_TILE,
    PIXEL_LAYER,
    Store,
    channel_map_path,
    feature_grid_path,
    learned_path,
)
from .common import (
    LAYER_PAGES,
    TOP_CHANNELS,
    View,
    choose_channels,
    input_pixels,
    model_inputs,
    on_learned,
    register_view,
    stored,
)

if TYPE_CHECKING:
    from ..batch import Batch
    from ..context import Context

ALL = "all"  # the layer of the units that cover every feature layer at once
TOP_IMAGES = 6  # images per channel page: where that channel fires most
CHANNEL_SIDE = 160  # long side of the channel overlays, px
PATCHES = 9  # Zeiler & Fergus show the top 9
PATCH_SIDE = 56  # px of each patch in the 3x3 grids
PROJECTION_BATCH = 16  # deconvnet projections per backward pass
# The atlas: every channel of a feature layer as one tile in one JPEG per layer, the crop
# around its highest peak on the data set (at most 3 strides wide: a deep layer's full
# field is the whole image, the same for every channel), and its top images in a table
ATLAS_TOP = 3  # images per channel in the atlas table
ATLAS_MIN_CROP = 24  # px: an early layer's 3x3 field is shown with what surrounds it


def _all_layers(ctx: Context) -> list[str]:
    return [ALL]


def feature_maps(ctx: Context, batch: Batch, layer: str) -> dict:
    """One channel grid per image and feature layer, each channel's mean response kept
    for the channel pages; the rows of ``layers.csv``."""
    with ctx.timer("feature_maps", ALL, len(batch.items)):
        views = techniques.get("feature_maps").run(
            ctx.forward_model, batch.x, layers=ctx.spec.feature_layers
        )
    timing = ctx.timer.last
    rows = []
    with ctx.phases("draw maps and overlays"):
        for depth, (name, view) in enumerate(views.items()):
            acts = view.acts.cpu().numpy()
            # [N, C]: each channel's mean response (responses tie: ReLU6 saturates at 6)
            responses = acts.mean(axis=(2, 3))
            for k, image in enumerate(batch.ids):
                ctx.store.save_map(image, f"channels@{name}", responses[k])
                ctx.store.save_image(feature_grid_path(image, name), figures.channel_grid(acts[k]))
                rows.append(
                    {
                        "image": image,
                        "layer": name,
                        "depth": depth,
                        "channels": acts.shape[1],
                        "height": acts.shape[2],
                        "width": acts.shape[3],
                        "sparsity": float(view.sparsity[k]),
                        "mean_activation": float(view.mean[k]),
                    }
                )
    return {"layers": rows, "timing": timing}


def channel_pages(ctx: Context) -> dict:
    """Channel pages' data, once every image is done: per feature layer, the channels
    with the highest mean activation over the data set, and for each the images where
    it responds most (mean over the map), with that channel's activation drawn over
    each (one more forward pass, over those images only)."""
    layers = list(ctx.spec.feature_layers)
    responses: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    ids = []
    with ctx.phases("channel pages"):
        for record in ctx.records:
            found = [ctx.store.load_map(record.id, f"channels@{layer}") for layer in layers]
            if all(s is not None for s in found):
                ids.append(record.id)
                for layer, values in zip(layers, found, strict=True):
                    responses[layer].append(values)
        if not ids:
            return {}
        rows, wanted = [], {}  # wanted: image -> [(layer, channel)]
        for layer in layers:
            table = np.stack(responses[layer])  # [images, C]
            mean = table.mean(axis=0)
            for c_rank, c in enumerate(np.argsort(-mean, kind="stable")[:TOP_CHANNELS]):
                order = np.argsort(-table[:, c], kind="stable")[:TOP_IMAGES]
                for i_rank, i in enumerate(order):
                    rows.append(
                        {
                            "layer": layer,
                            "channel": int(c),
                            "channel_rank": c_rank,
                            "mean_activation": float(mean[c]),
                            "image": ids[i],
                            "image_rank": i_rank,
                            "activation": float(table[i, c]),
                        }
                    )
                    wanted.setdefault(ids[i], []).append((layer, int(c)))
        names = list(wanted)
        for start in range(0, len(names), ctx.config.batch_size):
            chunk = names[start : start + ctx.config.batch_size]
            _, x = model_inputs(ctx, chunk)
            views = techniques.get("feature_maps").run(ctx.forward_model, x, layers=layers)
            for k, name in enumerate(chunk):
                photo = ctx.store.load_image(f"photos/{name}.jpg")
                scale = CHANNEL_SIDE / max(photo.shape[:2])  # small: maps are coarse, many
                small = figures.resize_rgb(
                    photo, (round(photo.shape[0] * scale), round(photo.shape[1] * scale))
                )
                for layer, c in wanted[name]:
                    activation = views[layer].acts[k, c].cpu().numpy()
                    ctx.store.save_image(
                        channel_map_path(layer, c, name),
                        figures.overlay(small, activation),
                        quality=70,
                    )
    return {"channels": rows}


def filters(ctx: Context) -> dict:
    """The first convolution's filters as RGB tiles."""
    name, weights = techniques.get("filters").run(ctx.model)
    ctx.store.save_image("filters.png", figures.filter_grid(weights.numpy()))
    return {"run": {"filters": {"layer": name, "count": int(weights.shape[0])}}}


def peaks(ctx: Context, batch: Batch, layer: str) -> dict:
    """Each channel's peak (value and place) in every image, for the top patches."""
    with ctx.timer("top_patches", layer, len(batch.items)):
        found = techniques.get("top_patches").run(
            ctx.forward_model, batch.x, layers=ctx.spec.feature_layers
        )
        for feature_layer, (values, where, before) in found.items():
            stacked = torch.cat([values[..., None], where.float(), before[..., None]], -1)
            for image, table in zip(batch.ids, stacked.cpu().numpy(), strict=True):
                # [C, 4]: max, y, x, pre-activation there (ties at a clamp's ceiling)
                ctx.store.save_map(image, f"peaks@{feature_layer}", table)
    return {"synthesis": [], "timing": ctx.timer.last}


def top_patches(ctx: Context) -> dict:
    """Zeiler & Fergus's figure: for each chosen channel the 9 images where it peaks highest,
    the receptive field of that peak cropped from each, beside the deconvnet projection of
    that one activation (cropped to the same box). Also counts each layer's silent
    channels (never above zero on the data set)."""
    from ..techniques.neurons import (
        crop,
        dead_channels,
        deconv_projection,
        patch_grid,
        projection_image,
        receptive_fields,
    )

    layers = list(ctx.spec.feature_layers)
    found = {}
    ids: list[str] = []
    for layer in layers:
        ids, found[layer] = stored(ctx, f"peaks@{layer}")
    if not ids:
        return {}
    chosen = choose_channels(ctx)
    size = tuple(ctx.spec.input_size)
    rows, dead, atlas = [], [], []
    cache: dict[str, np.ndarray] = {}

    def photo_of(name: str) -> np.ndarray:  # the model's input pixels, decoded once
        if name not in cache:
            cache[name] = input_pixels(ctx, [name])[0]
        return cache[name]

    with ctx.timer("top_patches", ALL, len(ids)):
        fields = receptive_fields(ctx.model, layers, size)
        for depth, layer in enumerate(layers):
            table = found[layer]  # [images, C, 3]
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
            atlas += channel_atlas(ctx, layer, table, fields[layer], ids, silent, photo_of)
            for c in chosen[layer]:
                rows += peak_rows(layer, c, table, PATCHES, fields[layer], size, ids)
        patches: dict[tuple[str, int], list] = defaultdict(lambda: [None] * PATCHES)
        projections: dict[tuple[str, int], list] = defaultdict(lambda: [None] * PATCHES)
        photos = {name: photo_of(name) for name in dict.fromkeys(r["image"] for r in rows)}
        for layer in tqdm(layers, desc="top patches", leave=False):
            mine = [r for r in rows if r["layer"] == layer]
            names = list(dict.fromkeys(r["image"] for r in mine))
            pixels = np.stack([photos[name] for name in names])
            x = ctx.normalise(pixels)
            for start in range(0, len(mine), PROJECTION_BATCH):
                chunk = mine[start : start + PROJECTION_BATCH]
                which = [names.index(r["image"]) for r in chunk]
                projected = deconv_projection(
                    ctx.forward_model,
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
            grids = {"": tiles, "deconv": projections[(layer, c)]}
            for variant, found_tiles in grids.items():
                ctx.store.save_image(
                    learned_path("top_patches", f"{layer}/{c}", variant),
                    patch_grid([t for t in found_tiles if t is not None], PATCH_SIDE),
                    85,
                )
    return {"patches": rows, "dead": dead, "atlas": atlas}


def peak_rows(layer: str, c: int, table: np.ndarray, count: int, field, size, ids) -> list[dict]:
    """Channel ``c``'s ``count`` highest peaks over the images (``table``: ``[images, C, 4]``:
    value, y, x, pre-activation), each with the receptive field of that unit, ``(top, left,
    bottom, right)``. Equal peaks (a clamp's ceiling) are ordered by their pre-activation;
    a table of 3 columns (a run stored before it was kept) by image order."""
    before = table[:, c, 3] if table.shape[-1] > 3 else table[:, c, 0]
    rows = []
    for rank, i in enumerate(np.lexsort((-before, -table[:, c, 0]))[:count]):
        y, x = int(table[i, c, 1]), int(table[i, c, 2])
        top, left, bottom, right = field.box(y, x, size)
        rows.append(
            {
                "layer": layer,
                "channel": c,
                "rank": rank,
                "image": ids[i],
                "activation": float(table[i, c, 0]),
                "pre_activation": float(before[i]),
                "y": y,
                "x": x,
                "top": top,
                "left": left,
                "bottom": bottom,
                "right": right,
            }
        )
    return rows


def channel_atlas(ctx, layer, table, field, ids, silent, photo_of) -> list[dict]:
    """Every channel of ``layer`` (``table``: ``[images, C, 3]`` peaks) as a tile of the
    atlas image, row-major, ``ATLAS_COLUMNS`` to a row (a silent channel's tile is grey);
    returns each channel's top ``ATLAS_TOP`` images with the field of its peak."""
    from ..techniques.neurons import crop, tile_box

    channels = table.shape[1]
    sheet = np.full(
        (-(-channels // ATLAS_COLUMNS) * ATLAS_TILE, ATLAS_COLUMNS * ATLAS_TILE, 3), 128, np.uint8
    )
    size = tuple(ctx.spec.input_size)
    side = max(ATLAS_MIN_CROP, min(max(field.size), 3 * max(field.stride)))
    rows = []
    for c in range(channels):
        found = peak_rows(layer, c, table, ATLAS_TOP, field, size, ids)
        rows += found
        if not silent[c]:
            best = found[0]  # the tile: around the channel's highest peak
            box = tile_box(field, best["y"], best["x"], size, side)
            tile = figures.resize_rgb(crop(photo_of(best["image"]), box), (ATLAS_TILE, ATLAS_TILE))
            r, k = divmod(c, ATLAS_COLUMNS)
            sheet[r * ATLAS_TILE : (r + 1) * ATLAS_TILE, k * ATLAS_TILE : (k + 1) * ATLAS_TILE] = (
                tile
            )
    ctx.store.save_image(learned_path("atlas", layer), sheet, 75)
    return rows


def features(ctx: Context, batch: Batch, layer: str) -> dict:
    """Each image's penultimate features, for the embedding."""
    with ctx.timer("embedding", layer, len(batch.items)):
        found = techniques.get("embedding").run(
            ctx.forward_model,
            batch.x,
            classifier=ctx.spec.classifier,
            layers=ctx.spec.feature_layers,
        )
        for image, vector in zip(batch.ids, found.cpu().numpy(), strict=True):
            ctx.store.save_map(image, "embedding", vector)
    return {"synthesis": [], "timing": ctx.timer.last}


def embedding_tables(store: Store, rows: dict, about: dict) -> dict[str, list[dict]]:
    return {
        "embedding": embedding_rows(
            store, rows["images"], rows["predictions"], about["settings"]["seed"]
        )
    }


def embedding_rows(store: Store, images: list[dict], predictions: list[dict], seed: int) -> list:
    """t-SNE of the stored penultimate features (scikit-learn; PCA start, the run's seed,
    perplexity min(30, (N - 1) / 3) as t-SNE needs perplexity < N); [] under 4 images."""
    from sklearn.manifold import TSNE

    ok = [r for r in images if r["status"] == "ok"]
    found = [(r, store.load_map(r["image"], "embedding")) for r in ok]
    found = [(r, v) for r, v in found if v is not None]
    if len(found) < 4:
        return []
    vectors = np.stack([v for _, v in found]).astype(np.float64)
    perplexity = min(30.0, (len(found) - 1) / 3)
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)
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


# Registration order is the run-wide order: the channel pages first (the other views show
# the channels they chose), then what reads them.
register_view(View("feature_maps", _all_layers, feature_maps, channel_pages, shown=(LAYER_PAGES,)))
register_view(View("filters", run_wide=filters, shown=(("the index page", "index.html#filters"),)))
register_view(
    View(
        "embedding",
        lambda ctx: [PIXEL_LAYER],
        batch=features,
        tables=embedding_tables,
        shown=(on_learned("embedding"),),
    )
)
register_view(
    View(
        "top_patches",
        _all_layers,
        peaks,
        top_patches,
        shown=(on_learned("silent"), LAYER_PAGES),
    )
)
