"""The run's results on disk: tidy tables and image files, each written atomically.

Layout under ``OUT``: ``data/`` (CSV tables, ``run.json``), ``img/`` (photos,
overlays, grids), and the rendered pages. ``render`` reads only this.

While a run works, each finished unit of work (one batch x one technique at one
layer) is a JSON *part* under ``data/parts/<batch>/``, written after its maps and
images: a part on disk is finished work, so a killed run resumes where it stopped and
shards of one run (other processes or machines) merge by collecting parts.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from evaluation.rankings import AGREEMENT_COLUMNS, RANKING_COLUMNS

PIXEL_LAYER = "input"  # the "layer" of pixel-level methods in the tables
MODEL = "model"  # the parts folder of run-wide work (settings, run-wide views, shard markers)
COLUMNS = {  # fixed columns, so an empty table still reads back with its header
    "phases": [
        "phase",
        "seconds",
        "share",
        "calls",
        "rows",
        "grad_rows",
        "half_rows",
        "floor_seconds",
        "efficiency",
    ],
    "images": [
        "image",
        "source",
        "label",
        "classes",
        "boxes",
        "credit",
        "status",
        "error",
        "note",
        "width",
        "height",
    ],
    "predictions": ["image", "rank", "class_id", "class_name", "probability"],
    "metrics": ["image", "model", "layer", "method", "metric", "value"],
    "rankings": RANKING_COLUMNS,
    "metric_agreement": AGREEMENT_COLUMNS,
    "layers": [
        "image",
        "layer",
        "depth",
        "channels",
        "height",
        "width",
        "sparsity",
        "mean_activation",
    ],
    "channels": [
        "layer",
        "channel",
        "channel_rank",
        "mean_activation",
        "image",
        "image_rank",
        "activation",
    ],
    # what the network learned (reportgen.learned): long format, one value per row
    "synthesis": ["technique", "layer", "item", "variant", "metric", "value"],
    "embedding": ["image", "x", "y", "label", "predicted", "class_name"],
    "patches": [
        "layer",
        "channel",
        "rank",
        "image",
        "activation",
        "pre_activation",
        "y",
        "x",
        "top",
        "left",
        "bottom",
        "right",
    ],
    "dead": ["layer", "depth", "channels", "silent", "silent_share"],
    "sanity": ["step", "block", "method", "image", "spearman", "ssim"],
    "sanity_independent": ["step", "block", "method", "image", "spearman", "ssim"],
    "random_logit": ["method", "image", "other", "spearman", "ssim"],
    "timings": [
        "model",
        "method",
        "layer",
        "device",
        "threads",
        "batches",
        "images",
        "warmup_excluded",
        "fused",
        "total_seconds",
        "ms_per_image",
        "passes_per_image",
        "peak_mb",
    ],
}
COLUMNS["atlas"] = COLUMNS["patches"]  # every channel's top peaks, as the top patches'


def _file_mode() -> int:
    """What ``open()`` would give a new file (mkstemp's are private: 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)  # readable by a web server, like any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """Paths and atomic I/O for one output folder."""

    def __init__(self, out: str | Path, phases=None):
        self.out = Path(out)
        self.data = self.out / "data"
        self.img = self.out / "img"
        self.phases = phases  # a ``timing.Phases``: file writes are charged to "write files"

    def _write(self, path: Path, write) -> None:
        if self.phases is None:
            atomic_write(path, write)
            return
        with self.phases("write files"):
            atomic_write(path, write)

    def table_path(self, name: str) -> Path:
        return self.data / f"{name}.csv"

    def write_table(self, name: str, rows: list[dict]) -> None:
        frame = pd.DataFrame(rows, columns=COLUMNS[name])
        self._write(self.table_path(name), lambda tmp: frame.to_csv(tmp, index=False))

    def _existing(self, path: Path) -> Path:
        if not path.is_file():
            raise FileNotFoundError(
                f"'{path}' is missing: run `reportgen run --out {self.out}` before rendering"
            )
        return path

    def read_table(self, name: str) -> pd.DataFrame:
        frame = pd.read_csv(
            self._existing(self.table_path(name)), keep_default_na=False, na_values=[""]
        )
        missing = [c for c in COLUMNS[name] if c not in frame]  # a table from an older version
        return frame.assign(**{c: np.nan for c in missing}) if missing else frame

    def write_json(self, name: str, obj) -> None:
        text = json.dumps(obj, indent=2, default=str)
        self._write(self.data / f"{name}.json", lambda tmp: Path(tmp).write_text(text))

    def read_json(self, name: str):
        return json.loads(self._existing(self.data / f"{name}.json").read_text())

    def save_map(self, image: str, key: str, saliency: np.ndarray) -> None:
        """One raw map (``method@layer``, float32 at its own resolution) of one image."""
        path = self.data / "maps" / image / f"{key}.npz"
        array = np.asarray(saliency, dtype=np.float32)
        self._write(path, lambda tmp: np.savez_compressed(open(tmp, "wb"), map=array))

    def load_map(self, image: str, key: str) -> np.ndarray | None:
        """One stored map of one image, or ``None`` if it was never made."""
        path = self.data / "maps" / image / f"{key}.npz"
        if not path.is_file():
            return None
        with np.load(path) as stored:
            return stored["map"]

    # parts: finished units of work, see the module's docstring
    @property
    def parts_dir(self) -> Path:
        return self.data / "parts"

    def write_part(self, batch: str, unit: str, payload: dict) -> None:
        text = json.dumps(payload, default=str)
        path = self.parts_dir / batch / f"{unit}.json"
        self._write(path, lambda tmp: Path(tmp).write_text(text))

    def read_part(self, batch: str, unit: str) -> dict | None:
        path = self.parts_dir / batch / f"{unit}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def done_units(self, batch: str) -> set[str]:
        folder = self.parts_dir / batch
        return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()

    def batches(self) -> Iterator[str]:
        """Names of the batches with any part, in order."""
        if self.parts_dir.is_dir():
            yield from sorted(p.name for p in self.parts_dir.iterdir() if p.is_dir())

    def reset(self) -> None:
        """Forget the results of an earlier run in this folder (a fresh run, not a resume)."""
        for folder in (self.parts_dir, self.data / "maps"):
            shutil.rmtree(folder, ignore_errors=True)

    def remove_temporary(self) -> int:
        """Delete half-written files a killed run left behind; returns how many."""
        stale = [p for p in self.out.rglob(".*.tmp") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def load_image(self, rel: str) -> np.ndarray:
        with Image.open(self._existing(self.img / rel)) as im:
            return np.asarray(im.convert("RGB"))

    def save_image(self, rel: str, pixels: np.ndarray, quality: int = 80) -> str:
        """Save ``uint8 [H, W, 3]`` (or ``[H, W]`` grey) under ``img/``; WebP, JPEG or PNG
        by suffix. Returns the site path.

        The site's own pictures (overlays, feature grids, synthesis images) are WebP: a
        third fewer bytes than JPEG at the same quality setting, which keeps the published
        site within its size budget; effort 2 of libwebp's 0-6 as for the thumbnails."""
        path = self.img / rel
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
        by_format = {"JPEG": {"quality": quality}, "WEBP": {"quality": quality, "method": 2}}
        options = by_format.get(fmt, {"optimize": True})
        self._write(path, lambda tmp: Image.fromarray(pixels).save(tmp, fmt, **options))
        return path.relative_to(self.out).as_posix()

    def save_map_data(self, rel: str, key: str, levels: np.ndarray, meta: dict) -> None:
        """A map for the site's in-browser views (``figures.encode_map``) as a script that
        hands it to site.js: ``reportgenMap(key, {w, h, a, signed, lo, hi, top, png})``, the
        levels a grey PNG in base64. A script, not a PNG or JSON file, because pages opened
        from disk may load scripts but not read a file's pixels or fetch it."""
        buffer = io.BytesIO()
        Image.fromarray(levels, "L").save(buffer, "PNG", optimize=True)
        h, w = levels.shape
        data = {
            "w": w,
            "h": h,
            **{k: float(f"{v:.7g}") if isinstance(v, float) else v for k, v in meta.items()},
        }
        data["png"] = base64.b64encode(buffer.getvalue()).decode()
        text = f"reportgenMap({json.dumps(key)}, {json.dumps(data)});\n"
        self._write(self.img / rel, lambda tmp: Path(tmp).write_text(text))


def batch_name(index: int) -> str:
    return f"b{index:06d}"


def overlay_path(image: str, method: str, layer: str) -> str:
    """Where a method's overlay for an image (its own scale) lives, relative to ``img/``."""
    return f"maps/{image}/{method}@{layer}.webp"


def map_data_path(image: str, method: str, layer: str) -> str:
    """Where the map's data for the in-browser views (``Store.save_map_data``) lives,
    relative to ``img/``."""
    return f"maps/{image}/{method}@{layer}.js"


def channel_map_path(layer: str, channel: int, image: str) -> str:
    """Where one channel's activation over an image lives, relative to ``img/``."""
    return f"channels/{layer}/{channel}/{image}.webp"


def feature_grid_path(image: str, layer: str) -> str:
    """Where an image's channel grid at a layer lives, relative to ``img/``."""
    return f"features/{image}/{layer}.webp"


ATLAS_TILE = 40  # px per tile of a layer's atlas (every channel in one image)
ATLAS_COLUMNS = 32  # tiles per row of it


def learned_path(technique: str, key: str, variant: str = "") -> str:
    """Where an image made by a synthesis or dataset view lives, relative to ``img/``
    (``key``: a layer/channel, a class id or an image@layer)."""
    return f"learned/{technique}/{key}{'.' + variant if variant else ''}.webp"
