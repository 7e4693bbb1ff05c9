"""Turning arrays into pictures: heat-map overlays, channel grids, filter tiles, boxes."""

from __future__ import annotations

import functools
import math

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

HEATMAP = "jet"  # the CAM papers' colour map; the site's legend says so
CHANNELS = "viridis"


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


def overlay(
    photo: np.ndarray, saliency: np.ndarray, scale: float | None = None, alpha: float = 0.5
) -> np.ndarray:
    """The rectified map in ``jet`` over the photo (bilinear to the photo's size).

    ``scale=None`` maps each image's own min..max to the colour range; a number maps
    0..scale, so maps of one method share a scale across images.
    """
    rectified = np.maximum(resize(saliency, photo.shape[:2]), 0)
    if scale is None:
        heat = unit_range(rectified)
    else:
        heat = np.clip(rectified / scale, 0, 1) if scale > 0 else np.zeros_like(rectified)
    return ((1 - alpha) * photo + alpha * colourise(heat, HEATMAP)).round().astype(np.uint8)


def heat_indices(saliency: np.ndarray) -> np.ndarray:
    """The rectified map at its own resolution as ``uint8`` levels 0..255 of its own range:
    stored as a PNG with the ``jet`` palette, so the raw map's pixels stay exact."""
    return (unit_range(np.maximum(saliency, 0)) * 255).round().astype(np.uint8)


def heat_palette() -> list[int]:
    return colourise(np.linspace(0, 1, 256), HEATMAP).reshape(-1).tolist()


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
