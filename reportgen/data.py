"""The bottom of the data code: the record type, and every image source decoded to pixels
(files, photos shipped in packages, images drawn by code). The readers of data sets on disk
and the generated sets (``reportgen/sources/``) sit above it and make the records.

Users point the tool at folders we have never seen, so every file is either converted to
``uint8 [H, W, 3]`` (with a short note saying how) or refused with a ``DataError`` naming the
file and the reason: one bad file must cost that file, never the run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

GENERATED = ("synthetic:", "composite:")  # drawn by code: reportgen.sources.synthetic, .composites
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
    box_labels: list[str] = field(default_factory=list)  # per box, its class's name, if known
    mask: str = ""  # source of an exact object mask (synthetic set, a manifest's PNG), if any
    crop: list[int] | None = None  # [y0, y1, x0, x1] in source pixels, applied after loading
    credit: str = ""
    skip: str = ""  # why this file is not loaded (e.g. not an image), kept so reports can say
    rank: int = 0  # --target topk:K: the maps explain the image's (rank + 1)-th likeliest class


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


def batches(records: list[ImageRecord], size: int) -> Iterator[list[ImageRecord]]:
    for i in range(0, len(records), size):
        yield records[i : i + size]


def ranked_copies(records: list[ImageRecord], k: int) -> list[ImageRecord]:
    """``--target topk:K``: each image, then a copy per further rank (``image.top2`` ...
    ``image.topK``), whose maps explain its 2nd ... K-th most probable class. Copies keep the
    image's labels and boxes, so a map of a class the image is not labelled with is marked
    as such wherever it is scored."""
    out: list[ImageRecord] = []
    taken = {r.id.lower() for r in records}
    for r in records:
        out.append(r)
        if not r.skip:
            out += [
                replace(r, id=safe_id(f"{r.id}.top{n + 1}", taken), rank=n) for n in range(1, k)
            ]
    return out


def class_pairs(records: list[ImageRecord]) -> list[ImageRecord]:
    """One record per image and annotated class (``--target labels``, TorchRay's pointing-
    game protocol): the boxes that show the same class ids are one class, scored on its own
    boxes. An image with one such class keeps its id (its classes narrowed to that one: a
    class shown only by difficult objects, which have no box, is not scored, as VOC's
    evaluation ignores them); with several, each pair gets the id ``image.class-name``.
    Records without per-box classes (every box is the image's class) stay as they are."""
    out: list[ImageRecord] = []
    taken = {r.id.lower() for r in records}
    for r in records:
        groups: dict[tuple[int, ...], tuple[str, list]] = {}
        for n, (box, ids) in enumerate(zip(r.boxes, r.box_classes, strict=False)):
            if ids:
                name = r.box_labels[n] if n < len(r.box_labels) else f"class {ids[0]}"
                groups.setdefault(tuple(ids), (name, []))[1].append(box)
        if r.skip or not groups:
            out.append(r)
            continue
        for ids, (name, boxes) in groups.items():
            out.append(
                replace(
                    r,
                    id=r.id if len(groups) == 1 else safe_id(f"{r.id}.{name}", taken),
                    label=name,
                    classes=list(ids),
                    boxes=boxes,
                    box_classes=[list(ids)] * len(boxes),
                    box_labels=[name] * len(boxes),
                    mask=r.mask if len(groups) == 1 else "",  # an object mask is of no class
                )
            )
    return out
