"""Turning arrays into pictures: heat-map overlays, channel grids, filter tiles, boxes."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

HEATMAP = "viridis"  # perceptually uniform and colour-blind safe (the CAM papers used jet)
CHANNELS = "viridis"
# colour maps the site offers for its heat maps: sequential for rectified maps, and RdBu_r
# (diverging) for signed ones; jet as the papers drew them
SITE_COLOURMAPS = ("viridis", "cividis", "magma", "jet", "RdBu_r")
OWN_PERCENTILE = 99  # top of a map's own scale


def resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map ``[h, w]`` to ``(H, W)``."""
    h, w = size
    return np.asarray(
        Image.fromarray(array.astype(np.float32), mode="F").resize(
            (w, h), Image.Resampling.BILINEAR
        )
    )


def unit_range(m: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (a flat map becomes zeros)."""
    m = m.astype(np.float32)
    span = float(m.max() - m.min())
    return (m - m.min()) / span if span > 0 else np.zeros_like(m)


def colourise(unit: np.ndarray, cmap: str) -> np.ndarray:
    """Values in [0, 1] to ``uint8`` RGB in ``cmap``: what matplotlib's colour map gives
    (entry ``floor(256 x)``, 1.0 in the last, out-of-range values in the end entries, NaN
    black), read from a 256-entry table instead of through the colour map per pixel."""
    x = np.asarray(unit)
    index = np.clip(np.floor(np.nan_to_num(x, nan=0.0) * 256), 0, 255).astype(np.intp)
    rgb = _table(cmap)[index]
    if np.isnan(x).any():
        rgb[np.isnan(x)] = 0
    return rgb


@functools.cache
def _table(cmap: str) -> np.ndarray:
    return (colormaps[cmap](np.arange(256))[:, :3] * 255).round().astype(np.uint8)


def own_range(saliency: np.ndarray) -> tuple[float, float]:
    """The "own scale" of a map: its rectified minimum to the 99th percentile of its rectified
    values (robust: a few extreme pixels, common in gradient maps, saturate instead of
    squeezing the rest of the map into the bottom colour). A map whose top 1 % is flat
    falls back to its maximum."""
    rectified = np.maximum(saliency, 0)
    lo, hi = float(rectified.min()), float(np.percentile(rectified, OWN_PERCENTILE))
    return lo, (hi if hi > lo else float(rectified.max()))


def overlay(
    photo: np.ndarray,
    saliency: np.ndarray,
    span: tuple[float, float] | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """The rectified map in ``HEATMAP`` over the photo (bilinear to the photo's size),
    ``span`` (default: the map's ``own_range``) spread over the colour range."""
    rectified = np.maximum(resize(saliency, photo.shape[:2]), 0)
    lo, hi = own_range(saliency) if span is None else span
    heat = np.clip((rectified - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(rectified)
    return ((1 - alpha) * photo + alpha * colourise(heat, HEATMAP)).round().astype(np.uint8)


def encode_map(saliency: np.ndarray) -> tuple[np.ndarray, dict[str, float | bool]]:
    """The map at its own resolution as ``uint8`` levels for the site's in-browser views,
    and what decodes them. Levels are square roots of the value's share of the largest
    magnitude ``a`` (``v = a (q/255)^2``; signed maps: ``v = a s |s|``, ``s = (q - 127) /
    127``, so 127 is exactly 0), so small values keep resolution a linear 8-bit scale would
    round to 0.
    Also the map's ``own_range`` (``lo``, ``hi``) for the own-scale view and the 99th
    percentile of its magnitudes (``top``) for the signed view."""
    m = np.nan_to_num(saliency.astype(np.float64))
    signed = bool(m.min() < 0)
    a = float(np.abs(m).max())
    share = np.sqrt(np.abs(m) / a) * np.sign(m) if a > 0 else np.zeros_like(m)
    q = 127 + 127 * share if signed else 255 * share
    lo, hi = own_range(m)
    top = float(np.percentile(np.abs(m), OWN_PERCENTILE))  # the signed view's robust scale
    meta = {"a": a, "signed": signed, "lo": lo, "hi": hi, "top": top if top > 0 else a}
    return np.clip(np.round(q), 0, 255).astype(np.uint8), meta


def decode_map(q: np.ndarray, meta: dict) -> np.ndarray:
    """The values ``encode_map`` stored (what the site's script computes)."""
    if meta["signed"]:
        s = (q.astype(np.float64) - 127) / 127
        return meta["a"] * s * np.abs(s)
    return meta["a"] * (q.astype(np.float64) / 255) ** 2


def colour_tables_js() -> str:
    """The site's colour maps as a script (``templates/static/colourmaps.js``): 256 RGB
    entries each, hex, read by site.js to colour maps in the browser."""
    tables = {name: _table(name).tobytes().hex() for name in SITE_COLOURMAPS}
    return (
        "var reportgenColours = " + json.dumps(tables, indent=1) + ";\n"
        "if (window.reportgenColoursReady) reportgenColoursReady();\n"
    )


def draw_boxes(
    photo: np.ndarray, boxes: list[list[float]], scale: tuple[float, float]
) -> np.ndarray:
    """The photo with each box outlined; ``scale`` maps box pixels to photo pixels (sx, sy)."""
    image = Image.fromarray(photo)
    pen = ImageDraw.Draw(image)
    sx, sy = scale
    width = max(2, round(min(photo.shape[:2]) / 120))
    for x0, y0, x1, y1 in boxes:
        pen.rectangle(
            [x0 * sx, y0 * sy, x1 * sx - 1, y1 * sy - 1], outline=(0, 255, 0), width=width
        )
    return np.asarray(image)


def tile(
    tiles: np.ndarray, gap: int = 1, background: int = 255, columns: int | None = None
) -> np.ndarray:
    """Tile ``[C, h, w, 3]`` uint8 images into a near-square grid (or ``columns`` wide)."""
    c, h, w, _ = tiles.shape
    cols = columns or math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    grid = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), background, np.uint8)
    for i in range(c):
        r, q = divmod(i, cols)
        grid[r * (h + gap) : r * (h + gap) + h, q * (w + gap) : q * (w + gap) + w] = tiles[i]
    return grid


def channel_grid(acts: np.ndarray, max_tile: int = 32) -> np.ndarray:
    """Every channel of ``[C, h, w]`` in viridis, each min-max scaled, as one grid image."""
    c, h, w = acts.shape
    side = min(max_tile, max(h, w))
    tiles = []
    for channel in acts:
        unit = unit_range(channel)
        if (h, w) != (side, side):
            unit = np.asarray(
                Image.fromarray(unit, mode="F").resize(
                    (side, side),
                    Image.Resampling.NEAREST if h < side else Image.Resampling.BILINEAR,
                )
            )
        tiles.append(colourise(np.clip(unit, 0, 1), CHANNELS))
    return tile(np.stack(tiles))


def filter_grid(weights: np.ndarray, scale: int = 12) -> np.ndarray:
    """First-layer filters ``[C, 3, k, k]`` in [0, 1] as RGB tiles, enlarged ``scale`` times."""
    rgb = (np.transpose(weights[:, :3], (0, 2, 3, 1)) * 255).round().astype(np.uint8)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    big = rgb.repeat(scale, axis=1).repeat(scale, axis=2)
    return tile(big, gap=2)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased resize of a ``uint8 [H, W, 3]`` photo to ``(H, W)``."""
    h, w = size
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.LANCZOS))
