"""Readers of the user's folders: a ``manifest.json`` (the embedded photos' format) and plain
images, one sub-folder per class or none. Above ``data.py``, whose records they make."""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path

from ..data import DataError, ImageRecord, safe_id

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
EMBEDDED = "embedded"


def _class_id(value: object, classes: int | None, where: str) -> int:
    """``value`` as a class id, refused unless an int in ``range(classes)`` (a wrong label
    would silently score every method against the wrong class)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: class id {value!r} is not an integer")
    if classes is not None and not 0 <= value < classes:
        raise DataError(f"{where}: class id {value} is out of range 0..{classes - 1}")
    return value


def read_manifest(
    path: Path | None = None, classes: int | None = None
) -> tuple[dict, list[ImageRecord]]:
    """The embedded manifest (default) or a user's ``manifest.json`` in the same format.

    Ids are passed through ``safe_id`` (an id like ``../../x`` must not steer a path out of the
    output folder); with ``classes``, every class id must lie in ``range(classes)``.
    """
    try:
        if path is None:
            text = resources.files("reportgen.datasets").joinpath(f"{EMBEDDED}.json").read_text()
        else:
            text = path.read_text(encoding="utf-8")
        meta = json.loads(text)
        items = meta["images"]
        if not all(isinstance(item, dict) for item in items):
            raise TypeError("'images' must be a list of objects")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"cannot read manifest '{path}': {err}") from err
    base = None if path is None else path.parent
    taken: set[str] = set()
    records = []
    for n, item in enumerate(items):
        where = f"manifest '{path}', image {item.get('id', f'#{n}')!r}"
        source = item.get("source") or (item.get("path") and str(base / item["path"]))
        if not source:
            raise DataError(f"{where}: needs a 'path' (or a package 'source')")
        boxes, box_classes = item.get("boxes", []), item.get("box_classes", [])
        if box_classes and len(box_classes) != len(boxes):
            raise DataError(
                f"{where}: 'box_classes' has {len(box_classes)} entries for {len(boxes)} boxes"
            )
        records.append(
            ImageRecord(
                id=safe_id(str(item.get("id") or Path(source).stem), taken),
                source=source,
                label=item.get("label", ""),
                classes=[_class_id(c, classes, where) for c in item.get("classes", [])],
                boxes=boxes,
                box_classes=[[_class_id(c, classes, where) for c in ids] for ids in box_classes],
                mask=str(base / item["mask"]) if base and item.get("mask") else "",
                crop=item.get("crop"),
                credit=item.get("credit", ""),
            )
        )
    return meta, records


def _visible_files(root: Path) -> list[Path]:
    """Files under ``root`` in a fixed order, without hidden files and folders (``.git``,
    ``.DS_Store``, ``.ipynb_checkpoints``), which are nobody's data."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder, f) for f in files if not f.startswith(".")]
    return sorted(p for p in found if p.is_file())


def folder_records(root: Path, class_names: list[str]) -> list[ImageRecord]:
    """Files in ``root`` or in one sub-folder per class (torchvision ImageFolder layout).

    A sub-folder named by a class index or a class description gives the label. Files that are
    not images get a record with ``skip`` set, so the report can list them.
    """
    if not root.is_dir():
        raise DataError(f"--data '{root}' is not a folder")
    lookup = {name.split(",")[0].strip().lower(): i for i, name in enumerate(class_names)}
    readable = ", ".join(sorted(IMAGE_SUFFIXES))
    taken: set[str] = set()
    records = []
    for path in _visible_files(root):
        rel = path.relative_to(root)
        label = rel.parts[0] if len(rel.parts) > 1 else ""
        key = label.lower().replace("_", " ")
        if re.fullmatch(r"[0-9]+", label):
            where = f"--data sub-folder '{root / label}'"
            classes = [_class_id(int(label), len(class_names), where)]
        else:
            classes = [lookup[key]] if key in lookup else []
        image = path.suffix.lower() in IMAGE_SUFFIXES
        kind = f"suffix '{path.suffix}'" if path.suffix else "no suffix"
        records.append(
            ImageRecord(
                id=safe_id(str(rel.with_suffix("") if image else rel), taken),
                source=str(path),
                label=label,
                classes=classes,
                skip="" if image else f"not an image file ({kind}); reportgen reads {readable}",
            )
        )
    if all(r.skip for r in records):
        raise DataError(f"--data '{root}' holds no images ({readable})")
    return records
