"""Readers of the benchmark layouts users already have: Pascal VOC trees and ILSVRC2012 val
folders with their bounding-box XML. Above ``data.py`` and beside ``folders.py``."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..data import DataError, ImageRecord, safe_id
from .folders import IMAGE_SUFFIXES, _class_id, _visible_files

VOC_MAPPING = "voc_to_imagenet.json"  # shipped: VOC class name -> ImageNet-1k ids
VOC_SPLITS = ("val", "trainval")  # ImageSets/Main/<split>.txt, first found wins
BBOX_FOLDERS = ("val_bbox", "bbox", "Annotations")  # where ILSVRC val XML may live


@dataclass
class AnnotatedObject:
    """One ``<object>`` of a VOC-format XML file; ``box`` in 0-based pixel edges."""

    name: str
    box: list[float]
    difficult: bool


def read_voc_xml(path: Path) -> list[AnnotatedObject]:
    """The objects of one Pascal VOC-format annotation (VOC and the ILSVRC bbox files alike).

    VOC pixels are numbered from 1 and ``xmax`` is the last pixel inside, so the box
    covering ``img[y0:y1, x0:x1]`` is ``x0 = xmin - 1, x1 = xmax`` (likewise y). A ``0``
    start (seen in some ImageNet files) is clipped to 0. Raises ``DataError`` naming the file.
    """
    try:
        objects = []
        for obj in ET.parse(path).getroot().iter("object"):
            bndbox = obj.find("bndbox")
            if bndbox is None:
                raise ValueError(f"object '{obj.findtext('name')}' has no <bndbox>")
            xmin, ymin, xmax, ymax = (
                float(bndbox.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")
            )
            if not (xmin <= xmax and ymin <= ymax):  # also catches a missing (nan) edge
                raise ValueError(f"bad box {[xmin, ymin, xmax, ymax]}")
            objects.append(
                AnnotatedObject(
                    name=(obj.findtext("name") or "").strip(),
                    box=[max(0.0, xmin - 1), max(0.0, ymin - 1), xmax, ymax],
                    difficult=(obj.findtext("difficult") or "0").strip() == "1",
                )
            )
        return objects
    except (OSError, ET.ParseError, ValueError) as err:
        raise DataError(f"cannot read annotation '{path}': {err}") from err


def _annotated_record(
    image_id: str,
    image: Path,
    xml: Path,
    meaning: Callable[[str], tuple[str, list[int]]],
    join: str = ", ",
) -> ImageRecord:
    """A record from an image and its VOC-format XML; ``meaning`` turns an object name into
    its label and class ids (``ValueError`` if it has none). A missing image or unusable XML
    becomes a ``skip`` record, so one bad file costs that file only. Difficult objects count
    for the label and classes (the object is there) but give no box (VOC's evaluation ignores
    them)."""
    record = ImageRecord(id=image_id, source=str(image))
    if not image.is_file():
        record.skip = f"image '{image}' not found (annotation '{xml}')"
        return record
    try:
        objects = read_voc_xml(xml)
        meanings = {name: meaning(name) for name in dict.fromkeys(o.name for o in objects)}
    except DataError as err:
        record.skip = str(err)
        return record
    except ValueError as err:
        record.skip = f"annotation '{xml}': {err}"
        return record
    record.label = join.join(label for label, _ in meanings.values())
    record.classes = list(dict.fromkeys(c for _, ids in meanings.values() for c in ids))
    shown = [o for o in objects if not o.difficult]
    record.boxes = [o.box for o in shown]
    record.box_classes = [meanings[o.name][1] for o in shown]
    record.box_labels = [meanings[o.name][0] for o in shown]
    return record


def read_class_mapping(path: Path | None, classes: int) -> dict[str, list[int]]:
    """A VOC class name -> ImageNet ids mapping (default: the shipped one); every id must lie
    in ``range(classes)``, since a wrong id would score every method against the wrong class."""
    where = f"mapping file '{path or VOC_MAPPING}'"
    try:
        if path is None:
            text = resources.files("reportgen.datasets").joinpath(VOC_MAPPING).read_text()
        else:
            text = path.read_text(encoding="utf-8")
        mapping = json.loads(text)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {where}: {err}") from err
    if not isinstance(mapping, dict) or not all(isinstance(v, list) for v in mapping.values()):
        raise DataError(f"{where}: must be an object of class name -> list of class ids")
    return {
        name: [_class_id(c, classes, f"{where}, class '{name}'") for c in ids]
        for name, ids in mapping.items()
    }


def is_voc(root: Path) -> bool:
    return (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir()


def voc_records(root: Path, class_names: list[str]) -> tuple[str, list[ImageRecord]]:
    """``(split, records)`` of a Pascal VOC tree (``JPEGImages/``, ``Annotations/``): the ids
    of ``ImageSets/Main/val.txt``, else ``trainval.txt``, else every annotation."""
    own = root / "imagenet_classes.json"
    mapping = read_class_mapping(own if own.is_file() else None, len(class_names))
    split, ids = "all annotated", sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
    for name in VOC_SPLITS:
        listing = root / "ImageSets" / "Main" / f"{name}.txt"
        if listing.is_file():
            lines = listing.read_text(encoding="utf-8").splitlines()
            split, ids = name, [line.split()[0] for line in lines if line.strip()]
            break

    def meaning(name: str) -> tuple[str, list[int]]:
        return name, mapping.get(name, [])  # a class with no ImageNet counterpart: no ids

    taken: set[str] = set()
    records = [
        _annotated_record(
            safe_id(stem, taken),
            root / "JPEGImages" / f"{stem}.jpg",
            root / "Annotations" / f"{stem}.xml",
            meaning,
        )
        for stem in ids
    ]
    return split, records


def _imagenet_images(root: Path) -> list[Path]:
    """ILSVRC val images under ``root`` (also in per-class sub-folders), or any image with
    its XML beside it."""
    return [
        p
        for p in _visible_files(root)
        if p.suffix.lower() in IMAGE_SUFFIXES
        and (p.name.startswith("ILSVRC") or p.with_suffix(".xml").is_file())
    ]


def is_imagenet_val(root: Path) -> bool:
    if next(root.glob("ILSVRC*_val_*"), None) or next(root.glob("*/ILSVRC*_val_*"), None):
        return True
    return any(p.with_suffix(".xml").is_file() for p in root.glob("*.JPEG"))


def _bbox_folders(root: Path) -> list[Path]:
    """Where the ILSVRC val XML may be, besides next to each image: ``val_bbox/``, ``bbox/``
    or ``Annotations/`` in or beside ``root`` (each possibly with a ``val/`` inside, as the
    bbox archive unpacks), and Kaggle's ``ILSVRC/Annotations/CLS-LOC/val``."""
    folders = [base / name for base in (root, root.parent) for name in BBOX_FOLDERS]
    folders += [f / "val" for f in folders]
    folders.append(root.parent.parent.parent / "Annotations" / "CLS-LOC" / "val")
    return [f for f in folders if f.is_dir()]


def imagenet_records(root: Path, class_names: list[str]) -> list[ImageRecord]:
    """ILSVRC2012 val images with their bounding-box XML (objects named by WordNet id).

    An image with no XML found is kept without boxes (with the class of its synset-named
    sub-folder, if it is in one); an unreadable XML or a synset outside ImageNet-1k gives a
    ``skip`` record naming the file. Labels are joined by "; " (descriptions hold commas).
    """
    from timm.data import ImageNetInfo  # the synset list ships with timm: no download

    info = ImageNetInfo()
    if len(class_names) < info.num_classes():
        raise DataError(
            f"--data '{root}' is labelled with ImageNet-1k classes; "
            f"the model has {len(class_names)} classes"
        )
    index = {synset: i for i, synset in enumerate(info.label_names())}
    folders = _bbox_folders(root)

    def meaning(synset: str) -> tuple[str, list[int]]:
        if synset not in index:
            raise ValueError(f"'{synset}' is not an ImageNet-1k synset")
        return info.label_name_to_description(synset), [index[synset]]

    taken: set[str] = set()
    records = []
    for image in _imagenet_images(root):
        name = f"{image.stem}.xml"
        xml = next((f / name for f in [image.parent, *folders] if (f / name).is_file()), None)
        image_id = safe_id(image.stem, taken)
        if xml is None:  # the class sub-folder (valprep.sh layout) may still name the synset
            synset = image.parent.name
            label, classes = meaning(synset) if synset in index else ("", [])
            records.append(ImageRecord(image_id, str(image), label=label, classes=classes))
        else:
            records.append(_annotated_record(image_id, image, xml, meaning, join="; "))
    if not records:
        raise DataError(f"--data '{root}' holds no ILSVRC val images")
    return records
