"""The "composites" data set: real object crops pasted onto other real photos, boxes exact.

The 12 embedded photos are too few to score an ImageNet model, and only one (the flower) shows
two instances of its class. Cutting objects out by their hand-drawn boxes and pasting them,
scaled and sometimes flipped, onto the other embedded photos gives as many images as wanted
whose boxes are known to the pixel, half of them (odd indices) with 2 or 3 instances of the
same object: Grad-CAM++'s headline claim is that it covers multiple instances better.

A composite is named by its source ``composite:<seed>:<index>``; ``plan`` turns that into pure
data (which photos, where, how big) and ``render`` into pixels, so nothing is stored on disk.
See ``datasets/composites.md``.
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache

import numpy as np
from PIL import Image

from ..data import GENERATORS, ImageRecord, load_rgb, safe_id
from .folders import read_manifest

PREFIX = "composite:"  # record sources look like "composite:<seed>:<index>"
SEED = 0
COUNT = 24  # default number of composites
OBJECTS = {  # embedded photo -> the object cut out by its first hand-drawn box
    "chelsea": "cat",  # the box is nearly the whole photo: a rectangle of cat, still a cat
    "coffee": "espresso cup",
    "rocket": "rocket",
    "shuttle": "space shuttle",  # not also "astronaut": the same shuttle model
    "camera": "tripod",
    "clock": "clock",
    "motorcycle_left": "motorcycle",  # not also "motorcycle_right": the same bike
    "flower": "flower",
    "china": "tower",
}  # not grace_hopper: its box is a uniform on a person, cut at the chin
BACKGROUNDS = (  # each used only under objects whose classes it does not share
    "chelsea",
    "coffee",
    "rocket",
    "astronaut",
    "camera",
    "clock",
    "motorcycle_left",  # not also the right view: the same scene
    "china",
    "flower",
    "grace_hopper",
)
SCALE = (0.25, 0.45)  # an instance's longer side, as a share of the background's shorter side
GAP = 8  # pixels kept free between pasted instances, so each reads as a separate object
TRIES = 200  # random placements tried per instance before settling for fewer instances
MAX_COVER = 0.5  # a background box covered more than this by the pastes is dropped
RESAMPLE = Image.Resampling.LANCZOS


def parse(source: str) -> tuple[int, int]:
    """``"composite:0:7"`` -> ``(0, 7)``; ``ValueError`` naming the source otherwise."""
    match = re.fullmatch(re.escape(PREFIX) + r"([0-9]+):([0-9]+)", source)
    if not match:
        raise ValueError(f"not a composite source: '{source}' (expected '{PREFIX}<seed>:<index>')")
    return int(match[1]), int(match[2])


@lru_cache(maxsize=1)
def _embedded() -> dict[str, tuple[ImageRecord, tuple[int, int]]]:
    """Embedded photo id -> (record, (width, height)), read once from the manifest."""
    meta, records = read_manifest()
    sizes = {item["id"]: (item["width"], item["height"]) for item in meta["images"]}
    return {r.id: (r, sizes[r.id]) for r in records}


@lru_cache(maxsize=len(BACKGROUNDS) + len(OBJECTS))
def _photo(name: str) -> np.ndarray:
    """An embedded photo's pixels, loaded once (callers must copy before writing)."""
    pixels = load_rgb(_embedded()[name][0])
    pixels.flags.writeable = False
    return pixels


def _overlap(a: list[int], b: list[int], gap: int = 0) -> bool:
    """Whether boxes ``a`` and ``b`` come closer than ``gap`` pixels (0: share a pixel)."""
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def place(
    sizes: list[tuple[int, int]], width: int, height: int, rng: np.random.Generator
) -> list[list[int]]:
    """Boxes for instances of ``sizes`` (w, h) in a ``width`` x ``height`` image, ``GAP``
    apart, by rejection sampling. Stops at the first instance that cannot be fitted in
    ``TRIES`` draws, so it may return fewer boxes than sizes (callers must count them)."""
    boxes: list[list[int]] = []
    for w, h in sizes:
        if w > width or h > height:
            break
        for _ in range(TRIES):
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            box = [x, y, x + w, y + h]
            if not any(_overlap(box, other, GAP) for other in boxes):
                boxes.append(box)
                break
        else:
            break
    return boxes


def _orders(seed: int) -> tuple[list[str], list[str]]:
    """Per-seed shuffles of ``OBJECTS`` and ``BACKGROUNDS``; composites cycle through them so
    every object and background is used about equally (any ``len(OBJECTS)`` consecutive
    composites show every object)."""
    rng = np.random.default_rng(seed)
    objects, backgrounds = list(OBJECTS), list(BACKGROUNDS)
    return [objects[k] for k in rng.permutation(len(objects))], [
        backgrounds[k] for k in rng.permutation(len(backgrounds))
    ]


def _pick(seed: int, index: int) -> tuple[str, str]:
    """Composite ``index``'s object and background: the next background in the cycle that
    shares none of the object's classes (else the background's own instance would muddle
    which boxes are pasted and how many instances of the class the image holds)."""
    objects, backgrounds = _orders(seed)
    name = objects[index % len(objects)]
    classes = set(_embedded()[name][0].classes)
    for step in range(len(backgrounds)):
        background = backgrounds[(index + step) % len(backgrounds)]
        if not set(_embedded()[background][0].classes) & classes:
            return name, background
    raise ValueError(f"no background shares none of the classes of '{name}'")


def plan(seed: int, index: int) -> dict:
    """What composite ``(seed, index)`` is made of, as pure data (no pixels): the object and
    its crop box, the background and its size, how many instances were wanted (odd indices:
    2 or 3) and, per instance placed, its box in the composite and whether it is flipped."""
    rng = np.random.default_rng([seed, index])
    embedded = _embedded()
    name, background = _pick(seed, index)
    obj = embedded[name][0]
    width, height = embedded[background][1]
    wanted = int(rng.integers(2, 4)) if index % 2 else 1
    crop = [int(v) for v in obj.boxes[0]]
    crop_w, crop_h = crop[2] - crop[0], crop[3] - crop[1]
    sizes = []
    for _ in range(wanted):  # each instance its own scale, keeping the crop's aspect ratio
        k = rng.uniform(*SCALE) * min(width, height) / max(crop_w, crop_h)
        sizes.append((max(1, round(crop_w * k)), max(1, round(crop_h * k))))
    boxes = place(sizes, width, height, rng)
    flips = [bool(f) for f in rng.random(len(boxes)) < 0.5]
    return {
        "source": f"{PREFIX}{seed}:{index}",
        "object": name,
        "crop": crop,
        "background": background,
        "size": [width, height],
        "wanted": wanted,
        "instances": [{"box": b, "flip": f} for b, f in zip(boxes, flips, strict=True)],
    }


def paste_instance(crop: np.ndarray, width: int, height: int, flip: bool) -> np.ndarray:
    """The crop as pasted: resized to ``width`` x ``height`` (LANCZOS), then mirrored
    left-right if ``flip``."""
    resized = np.asarray(Image.fromarray(crop).resize((width, height), RESAMPLE))
    return resized[:, ::-1] if flip else resized


def render(source: str) -> np.ndarray:
    """The composite's pixels, ``uint8 [H, W, 3]``: the background with the crops pasted."""
    p = plan(*parse(source))
    canvas = _photo(p["background"]).copy()
    if list(canvas.shape[1::-1]) != p["size"]:  # a package shipped a different photo
        raise ValueError(f"'{source}': background '{p['background']}' is not {p['size']}")
    x0, y0, x1, y1 = p["crop"]
    crop = _photo(p["object"])[y0:y1, x0:x1]
    for instance in p["instances"]:
        bx0, by0, bx1, by1 = instance["box"]
        canvas[by0:by1, bx0:bx1] = paste_instance(crop, bx1 - bx0, by1 - by0, instance["flip"])
    return canvas


def covered_share(box: list[float], pasted: list[list[int]]) -> float:
    """The share of ``box``'s area under the pasted boxes (which never overlap each other)."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    under = 0.0
    for p in pasted:
        w = min(box[2], p[2]) - max(box[0], p[0])
        h = min(box[3], p[3]) - max(box[1], p[1])
        under += max(0, w) * max(0, h)
    return under / area if area > 0 else 1.0


def records(seed: int = SEED, count: int = COUNT) -> list[ImageRecord]:
    """One record per composite: the pasted boxes first (the object's classes), then the
    background's own boxes that stay at least half visible (the background's classes).
    ``classes`` are the pasted object's: it is what the composite is labelled as."""
    embedded = _embedded()
    taken: set[str] = set()
    out = []
    for index in range(count):
        p = plan(seed, index)
        obj, bg = embedded[p["object"]][0], embedded[p["background"]][0]
        pasted = [i["box"] for i in p["instances"]]
        kept = [list(b) for b in bg.boxes if covered_share(b, pasted) <= MAX_COVER]
        name, n = OBJECTS[p["object"]], len(pasted)
        out.append(
            ImageRecord(
                id=safe_id(f"composite-{index:02d}-{name.replace(' ', '-')}-x{n}", taken),
                source=p["source"],
                label=f"{name} ×{n} on {p['background']}",
                classes=list(obj.classes),
                boxes=[list(b) for b in pasted] + kept,
                box_classes=[list(obj.classes) for _ in pasted] + [list(bg.classes) for _ in kept],
                box_labels=[name] * n + [bg.label] * len(kept),
                credit=f"object: {obj.credit}; background: {bg.credit}",
            )
        )
    return out


GENERATORS[PREFIX] = sys.modules[__name__]  # data.load_photo draws "composite:…" sources here
