"""``--data``: from a name or a folder to the records of a data set: the embedded photos (with
hand-drawn boxes), the user's folders (``folders.py``), the benchmark layouts users already have
(Pascal VOC, ILSVRC2012 val with bounding-box XML: ``annotated.py``) and the image generators
(``synthetic.py``, ``composites.py``), which it imports and which register themselves with
``data``. Submodules import ``..data`` and their siblings, never this package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..data import ImageRecord
from . import composites, synthetic
from .annotated import imagenet_records, is_imagenet_val, is_voc, voc_records
from .folders import EMBEDDED, folder_records, read_manifest


def _counted(name: str, records: list[ImageRecord]) -> str:
    """``name (N images[, K skipped])``: what was detected, shown in the report."""
    skipped = sum(bool(r.skip) for r in records)
    return f"{name} ({len(records)} images{f', {skipped} skipped' if skipped else ''})"


def dataset(data: str | None, class_names: list[str]) -> tuple[str, list[ImageRecord]]:
    """``(name, records)`` for ``--data``: none = the embedded photos (ImageNet class ids);
    shipped sets by name (``synthetic``, ``composites``, ``embedded,composites``); a folder
    is read as a ``manifest.json``, a VOC tree, an ILSVRC val folder or plain
    images, in that order, and the name says which (e.g. ``VOC2012 val (5823 images)``)."""
    if data is None:
        data = EMBEDDED
    names = [n.strip() for n in data.split(",")]
    if all(n in NAMED_SETS for n in names):  # e.g. ``embedded,composites``: one after the other
        parts = [NAMED_SETS[n]() for n in names]
        return " + ".join(name for name, _ in parts), [r for _, part in parts for r in part]
    root = Path(data)
    if (root / "manifest.json").is_file():
        meta, records = read_manifest(root / "manifest.json", len(class_names))
        return meta.get("name", root.name), records
    if is_voc(root):
        split, records = voc_records(root, class_names)
        name = root.name if root.name.startswith("VOC") else f"VOC-style '{root.name}'"
        return _counted(f"{name} {split}", records), records
    if root.is_dir() and is_imagenet_val(root):
        records = imagenet_records(root, class_names)
        boxed = sum(bool(r.boxes) for r in records)
        return _counted(f"ImageNet val '{root.name}', {boxed} with boxes", records), records
    return root.name, folder_records(root, class_names)


def _synthetic() -> tuple[str, list[ImageRecord]]:
    records = synthetic.records()
    return _counted("synthetic", records), records


def _composites() -> tuple[str, list[ImageRecord]]:
    records = composites.records()
    return _counted("composites", records), records


def _embedded() -> tuple[str, list[ImageRecord]]:
    meta, records = read_manifest()
    return meta["name"], records


# ``--data NAME`` (or ``NAME,NAME``) for the shipped sets: the embedded photos
# (datasets/README.md) and those drawn by code (datasets/NAME.md)
NAMED_SETS: dict[str, Callable[[], tuple[str, list[ImageRecord]]]] = {
    EMBEDDED: _embedded,
    "synthetic": _synthetic,
    "composites": _composites,
}
