"""Image sources: the embedded photos (with hand-drawn boxes) and the user's folders."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
EMBEDDED = "embedded"


@dataclass
class ImageRecord:
    """One image of a data set: where it comes from, its label and its boxes."""

    id: str  # unique and safe as a file name
    source: str  # a file path, or a package source such as ``skimage.data.chelsea``
    label: str = ""
    classes: list[int] = field(default_factory=list)  # accepted class ids (ImageNet)
    boxes: list[list[float]] = field(default_factory=list)  # [x0, y0, x1, y1] in source pixels
    crop: list[int] | None = None  # [y0, y1, x0, x1] applied after loading
    credit: str = ""


class DataError(ValueError):
    """A data folder or manifest that cannot be used."""


def _package_image(source: str) -> np.ndarray:
    """Load a photo that ships inside an installed package (no download)."""
    if source.startswith("skimage.data."):
        import skimage.data

        name, _, index = source.removeprefix("skimage.data.").partition("[")
        image = getattr(skimage.data, name)()
        return image[int(index.rstrip("]"))] if index else image
    if source.startswith("sklearn."):
        from sklearn.datasets import load_sample_images

        sample = load_sample_images()
        names = [Path(f).stem for f in sample.filenames]
        return sample.images[names.index(source.removeprefix("sklearn."))]
    if source.startswith("matplotlib."):
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / f"{source.split('.', 1)[1]}.jpg"
        return np.asarray(Image.open(path))
    raise DataError(f"unknown package image source '{source}'")


def to_rgb(array: np.ndarray) -> np.ndarray:
    """Any 2-D/3-D image array (grey, RGBA, 16-bit, float) as ``uint8 [H, W, 3]``."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype.kind == "f":
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 4:  # composite RGBA on white
        alpha = a[..., 3:4].astype(np.float32) / 255
        a = (a[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(a[..., :3].astype(np.uint8))


def load_rgb(record: ImageRecord) -> np.ndarray:
    """The record's pixels as ``uint8 [H, W, 3]``; raises with the file named on failure."""
    if Path(record.source).suffix.lower() in IMAGE_SUFFIXES:
        try:
            with Image.open(record.source) as im:
                im.load()
                rgb = np.asarray(im.convert("RGB"))
        except Exception as err:
            raise DataError(f"cannot read image '{record.source}': {err}") from err
    else:
        rgb = to_rgb(_package_image(record.source))
    if record.crop:
        y0, y1, x0, x1 = record.crop
        rgb = rgb[y0:y1, x0:x1]
    return rgb


def model_input(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize the whole photo to the model's input size: ``float32 [H, W, 3]`` in [0, 1].

    No centre crop, so every box stays in view (the aspect ratio is not kept).
    """
    h, w = size
    resized = Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32) / 255.0


def safe_id(text: str, taken: set[str]) -> str:
    """A file-name-safe id, unique among ``taken``."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"
    candidate, k = base, 2
    while candidate in taken:
        candidate, k = f"{base}-{k}", k + 1
    taken.add(candidate)
    return candidate


def read_manifest(path: Path | None = None) -> tuple[dict, list[ImageRecord]]:
    """The embedded manifest (default) or a user's ``manifest.json`` in the same format."""
    if path is None:
        text = resources.files("reportgen.datasets").joinpath(f"{EMBEDDED}.json").read_text()
        base = None
    else:
        text, base = path.read_text(), path.parent
    meta = json.loads(text)
    records = []
    for item in meta["images"]:
        source = item.get("source") or str(base / item["path"])
        records.append(
            ImageRecord(
                id=item["id"],
                source=source,
                label=item.get("label", ""),
                classes=list(item.get("classes", [])),
                boxes=item.get("boxes", []),
                crop=item.get("crop"),
                credit=item.get("credit", ""),
            )
        )
    return meta, records


def folder_records(root: Path, class_names: list[str]) -> list[ImageRecord]:
    """Images in ``root`` or in one sub-folder per class (torchvision ImageFolder layout).

    A sub-folder named by a class index or a class description gives the label.
    """
    if not root.is_dir():
        raise DataError(f"--data '{root}' is not a folder")
    lookup = {name.split(",")[0].strip().lower(): i for i, name in enumerate(class_names)}
    taken: set[str] = set()
    records = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        rel = path.relative_to(root)
        label = rel.parts[0] if len(rel.parts) > 1 else ""
        key = label.lower().replace("_", " ")
        classes = [int(label)] if label.isdigit() else ([lookup[key]] if key in lookup else [])
        records.append(
            ImageRecord(
                id=safe_id(str(rel.with_suffix("")), taken),
                source=str(path),
                label=label,
                classes=classes,
            )
        )
    if not records:
        raise DataError(f"--data '{root}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return records


def dataset(data: str | None, class_names: list[str]) -> tuple[str, list[ImageRecord]]:
    """``(name, records)`` for ``--data``: none = the embedded photos."""
    if data is None:
        meta, records = read_manifest()
        return meta["name"], records
    root = Path(data)
    if (root / "manifest.json").is_file():
        meta, records = read_manifest(root / "manifest.json")
        return meta.get("name", root.name), records
    return root.name, folder_records(root, class_names)


def batches(records: list[ImageRecord], size: int) -> Iterator[list[ImageRecord]]:
    for i in range(0, len(records), size):
        yield records[i : i + size]
