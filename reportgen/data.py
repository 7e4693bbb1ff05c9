"""Image sources: the embedded photos (with hand-drawn boxes), the user's folders, and the
benchmark layouts users already have (Pascal VOC, ILSVRC2012 val with bounding-box XML).

Users point the tool at folders we have never seen, so every file is either converted to
``uint8 [H, W, 3]`` (with a short note saying how) or refused with a ``DataError`` naming the
file and the reason: one bad file must cost that file, never the run.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
EMBEDDED = "embedded"
VOC_MAPPING = "voc_to_imagenet.json"  # shipped: VOC class name -> ImageNet-1k ids
VOC_SPLITS = ("val", "trainval")  # ImageSets/Main/<split>.txt, first found wins
BBOX_FOLDERS = ("val_bbox", "bbox", "Annotations")  # where ILSVRC val XML may live
GENERATED = ("synthetic:", "composite:")  # images drawn by code: reportgen.synthetic, .composites
PACKAGE_PREFIXES = ("skimage.data.", "sklearn.", "matplotlib.", *GENERATED)
MAX_SIDE = 4096  # longer photos are reduced on load: an 8000x8000 photo is 192 MB as uint8
TINY_SIDE = 32  # a photo this small is mostly up-sampling by the time it reaches the model
MAX_ID = 100  # characters; ids become file names
MODE_NAMES = {  # PIL modes in words, for the notes
    "1": "1-bit",
    "L": "grey",
    "LA": "grey with alpha",
    "P": "palette",
    "PA": "palette with alpha",
    "I": "32-bit integer",
    "F": "floating-point",
}
EXIF_TURNS = {  # EXIF orientation -> the transpose that shows the photo upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass
class ImageRecord:
    """One image of a data set: where it comes from, its label and its boxes."""

    id: str  # unique (ignoring case) and safe as a file name
    source: str  # a file path, or a package source such as ``skimage.data.chelsea``
    label: str = ""
    classes: list[int] = field(default_factory=list)  # accepted class ids (ImageNet)
    boxes: list[list[float]] = field(default_factory=list)  # [x0, y0, x1, y1] in source pixels
    # per box, the class ids it shows (VOC objects of several classes, composites); empty:
    # every box shows the record's ``classes``
    box_classes: list[list[int]] = field(default_factory=list)
    mask: str = ""  # source of an exact object mask (synthetic set, a manifest's PNG), if any
    crop: list[int] | None = None  # [y0, y1, x0, x1] in source pixels, applied after loading
    credit: str = ""
    skip: str = ""  # why this file is not loaded (e.g. not an image), kept so reports can say


class DataError(ValueError):
    """A data folder, manifest or image that cannot be used; the message names it."""


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
    if source.startswith(GENERATED):
        return _generator(source).render(source)
    raise DataError(f"unknown package image source '{source}'")


# Modules that draw images (``synthetic:…``, ``composite:…``), by source prefix: each
# registers itself when imported (``reportgen.sources`` imports them all), so this module,
# at the bottom of the data code, imports neither
GENERATORS: dict[str, object] = {}


def _generator(source: str):
    """The module that draws a generated image: its ``render(source)`` and ``mask(source)``."""
    for prefix, module in GENERATORS.items():
        if source.startswith(prefix):
            return module
    raise DataError(
        f"'{source}' is drawn by code that is not loaded: import reportgen.sources first"
    )


def load_mask(record: ImageRecord, shape: tuple[int, int]) -> np.ndarray | None:
    """The record's exact object mask as ``bool [H, W]`` at ``shape`` (nearest neighbour),
    cropped like the photo; ``None`` without one. A mask file is any image whose non-zero
    pixels are the object. Raises ``DataError`` naming the file."""
    if not record.mask:
        return None
    try:
        if record.mask.startswith(GENERATED):
            mask = _generator(record.mask).mask(record.mask)
        else:
            with Image.open(record.mask) as im:
                mask = np.asarray(im.convert("L")) > 0
    except Exception as err:
        raise DataError(f"cannot read mask '{record.mask}': {_reason(err)}") from err
    if record.crop:
        y0, y1, x0, x1 = record.crop
        mask = mask[y0:y1, x0:x1]
    if mask.shape != tuple(shape):
        im = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (shape[1], shape[0]), Image.Resampling.NEAREST
        )
        mask = np.asarray(im) > 127
    return mask


def to_rgb(array: np.ndarray) -> np.ndarray:
    """Any 2-D/3-D image array (grey, RGBA, 16-bit, float) as ``uint8 [H, W, 3]``.

    Integers wider than 8 bits are taken as 16-bit and scaled by ``>> 8`` (the high byte, as
    PIL does for 16-bit RGB files; within one level of ``value / 257``), never clipped at 255.
    """
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype.kind in "ui" and a.dtype.itemsize > 1:
        a = (np.clip(a, 0, 65535).astype(np.uint16) >> 8).astype(np.uint8)
    elif a.dtype.kind == "f":
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 4:  # composite RGBA on white
        alpha = a[..., 3:4].astype(np.float32) / 255
        a = (a[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(a[..., :3].astype(np.uint8))


def _as_rgb(im: Image.Image) -> tuple[Image.Image, str]:
    """The decoded frame as 8-bit RGB, alpha composited on white, and what that took.

    Conversions stay inside PIL (8-bit, C loops) so a huge photo never becomes a float array;
    only 16/32-bit frames go through numpy, because PIL's ``convert`` clips them at 255.
    """
    name = "16-bit" if im.mode.startswith("I;16") else MODE_NAMES.get(im.mode, im.mode)
    if im.mode.startswith("I") or im.mode == "F":
        return Image.fromarray(to_rgb(np.asarray(im))), f"{name} scaled to 8-bit"
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGB", im.size, "white")
        white.paste(rgba, mask=rgba.getchannel("A"))
        kind = name if im.mode.endswith(("A", "a")) else f"{name} with transparency"
        return white, f"{kind} composited on white"
    if im.mode == "RGB":
        return im, ""
    return im.convert("RGB"), f"{name} converted to RGB"


def _read_file(path: Path) -> tuple[np.ndarray, list[str], float]:
    """Decode one file: pixels, notes of each conversion, and the scale of any reduction."""
    if path.stat().st_size == 0:
        raise DataError(f"cannot read image '{path}': empty file (0 bytes)")
    with Image.open(path) as im:
        jpeg = im.format in ("JPEG", "MPO")  # MPO: a phone's JPEG with extra views appended
        frames = 1 if jpeg else getattr(im, "n_frames", 1)
        full = im.size
        pixels, limit = full[0] * full[1], Image.MAX_IMAGE_PIXELS
        if limit and pixels > limit:  # PIL itself only warns below twice its limit
            raise Image.DecompressionBombError(f"{full[0]}x{full[1]} = {pixels} pixels > {limit}")
        factor = -(-max(full) // MAX_SIDE)  # ceil: the smallest integer reduction that fits
        if factor > 1 and jpeg:  # let the decoder skip the detail (1/2 .. 1/8)
            im.draft(None, (full[0] // factor, full[1] // factor))
        deep = any(";16" in str(tile.args) for tile in im.tile)  # e.g. 16-bit RGB PNG
        im.load()
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
        rgb, converted = _as_rgb(im)
        notes = [f"first frame of {frames}"] if frames > 1 else []
        if deep and not converted.startswith("16-bit"):  # PIL kept the high byte, like >> 8
            notes.append("16-bit scaled to 8-bit")
        notes += [converted] if converted else []
        size = (-(-full[0] // factor), -(-full[1] // factor))
        if rgb.size != size:  # not (or not enough) reduced by the JPEG decoder: average blocks
            rgb = rgb.resize(size, Image.Resampling.BOX)
        if rgb.size != full:
            notes.append(f"reduced from {full[0]}x{full[1]} to {rgb.width}x{rgb.height} on load")
        if orientation in EXIF_TURNS:
            rgb = rgb.transpose(EXIF_TURNS[orientation])
            notes.append("rotated per EXIF orientation")
        return np.asarray(rgb), notes, max(rgb.size) / max(full)  # a copy: ``im`` closes here


def _reason(err: Exception) -> str:
    """What went wrong with a file, in words a user can act on."""
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"over PIL's decompression-bomb limit, not loaded ({err})"
    if isinstance(err, Image.UnidentifiedImageError):
        return "not a readable image (corrupt, or a format PIL cannot read)"
    if isinstance(err, EOFError) or "truncated" in str(err).lower():
        return f"truncated file ({err})"
    if isinstance(err, FileNotFoundError):
        return "file not found"
    return f"corrupt or unreadable ({type(err).__name__}: {err})"


def load_photo(record: ImageRecord) -> tuple[np.ndarray, str, list[list[float]]]:
    """The record's pixels as ``uint8 [H, W, 3]``, a note of what was converted ("" if
    nothing), e.g. ``"grey converted to RGB; rotated per EXIF orientation"``, and the
    record's boxes in those pixels (scaled like the photo when it was reduced on load).

    Raises ``DataError`` naming the file for anything unusable (empty, corrupt, truncated,
    over PIL's decompression-bomb limit, skipped), so a caller can report it and go on.
    """
    if record.skip:
        raise DataError(f"skipped '{record.source}': {record.skip}")
    source = record.source
    try:
        if source.startswith(PACKAGE_PREFIXES) and not Path(source).is_file():
            rgb, notes, scale = to_rgb(_package_image(source)), [], 1.0
        else:
            rgb, notes, scale = _read_file(Path(source))
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"cannot read image '{source}': {_reason(err)}") from err
    if record.crop:  # in source pixels, so scaled like the photo if it was reduced
        y0, y1, x0, x1 = (round(v * scale) for v in record.crop)
        rgb = rgb[y0:y1, x0:x1]
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        raise DataError(f"cannot use image '{source}': crop {record.crop} leaves no pixels")
    if min(h, w) < TINY_SIDE:
        notes.append(f"tiny ({w}x{h}): up-sampled to the model input")
    boxes = [[v * scale for v in box] for box in record.boxes] if scale != 1 else record.boxes
    return np.ascontiguousarray(rgb), "; ".join(notes), boxes


def load_rgb(record: ImageRecord) -> np.ndarray:
    """The record's pixels as ``uint8 [H, W, 3]``; raises ``DataError`` naming the file."""
    return load_photo(record)[0]


def model_input(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize the whole photo to the model's input size: ``float32 [H, W, 3]`` in [0, 1].

    No centre crop, so every box stays in view (the aspect ratio is not kept).
    """
    h, w = size
    resized = Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32) / 255.0


def safe_id(text: str, taken: set[str]) -> str:
    """A file-name-safe id (ASCII ``[A-Za-z0-9._-]``, not starting with '.', at most
    ``MAX_ID`` characters), unique among ``taken`` ignoring case: macOS and Windows file
    systems would let ``A.jpg`` overwrite ``a.jpg``. ``taken`` holds lower-cased ids."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:MAX_ID].rstrip("._-")
    base = base or "image"
    candidate, k = base, 2
    while candidate.lower() in taken:
        suffix = f"-{k}"
        candidate, k = base[: MAX_ID - len(suffix)] + suffix, k + 1
    taken.add(candidate.lower())
    return candidate


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


def batches(records: list[ImageRecord], size: int) -> Iterator[list[ImageRecord]]:
    for i in range(0, len(records), size):
        yield records[i : i + size]
