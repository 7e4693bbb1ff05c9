"""One batch of images as every unit sees it: read, decoded, predicted, with its targets.

``load_batch`` reads each record (an unreadable image becomes a table row with its
error, never an exception), saves the photos the site shows, and runs the one prediction
pass; the ``Batch`` it returns travels through the units whole.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from . import data, figures
from .models import probabilities
from .store import PIXEL_LAYER, batch_name

DISPLAY_SIDE = 384  # long side of photos and overlays in the site


@dataclass(frozen=True)
class Item:
    """A readable image of the batch: its record (boxes clipped), pixels and display photo."""

    record: data.ImageRecord
    rgb: np.ndarray  # the photo at its own resolution
    photo: np.ndarray  # as the site shows it (``display_photo``)


@dataclass
class Batch:
    """The images of one batch: table rows for all, model inputs for the readable ones."""

    index: int
    rows: list[dict]  # images.csv rows, one per record (read or not)
    items: list[Item]
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # exact object masks, by id
    pixels: np.ndarray | None = None  # [N, H, W, 3] float32 in [0, 1] at the input size
    x: torch.Tensor | None = None  # the normalised input [N, 3, H, W], in the run's layout
    probs: torch.Tensor | None = None  # the model's probabilities [N, classes], on the CPU
    predictions: list[dict] = field(default_factory=list)  # predictions.csv rows (top 5)
    targets: torch.Tensor | None = None  # the class each map explains [N]

    @property
    def name(self) -> str:
        return batch_name(self.index)

    @property
    def ids(self) -> list[str]:
        return [item.record.id for item in self.items]


def load_batch(ctx, index: int, records: list[data.ImageRecord]) -> Batch:
    """Read, decode and predict one batch (``ctx``: the run's ``Context``)."""
    batch = Batch(index, [], [])
    with ctx.phases("load and decode images"):
        for record in records:
            row, item = load_record(ctx, record, batch.masks)
            batch.rows.append(row)
            if item is not None:
                batch.items.append(item)
        if not batch.items:
            return batch
        size = ctx.spec.input_size
        batch.pixels = np.stack([data.model_input(item.rgb, size) for item in batch.items])
        batch.x = ctx.normalise(batch.pixels).contiguous(memory_format=ctx.layout)
    with ctx.timer("predict", PIXEL_LAYER, len(batch.items)), torch.inference_mode():
        batch.probs = probabilities(ctx.forward_model(batch.x), ctx.spec.output).cpu()
    batch.predictions = top5(ctx.spec.class_names, batch.ids, batch.probs)
    batch.targets = choose_targets(ctx.target, batch)
    return batch


def load_record(ctx, record: data.ImageRecord, masks: dict) -> tuple[dict, Item | None]:
    """The record's table row, and its pixels and display photo (both saved) unless it is
    skipped or unreadable: any error here is the image's, never the run's. Its exact
    object mask, if the data set has one, goes into ``masks``."""
    row = {
        "image": record.id,
        "source": record.source,
        "label": record.label,
        "classes": " ".join(map(str, record.classes)),
        "boxes": json.dumps(record.boxes),
        "credit": record.credit,
    }
    if record.skip:
        return {**row, "status": "skipped", "error": record.skip}, None
    try:
        rgb, note, boxes = data.load_photo(record)
        boxes, box_classes, dropped = usable_boxes(
            boxes, rgb.shape[1], rgb.shape[0], record.box_classes
        )
        record = dataclasses.replace(record, boxes=boxes, box_classes=box_classes)
        mask = data.load_mask(record, ctx.spec.input_size)
        if mask is not None and not mask.any():
            empty = f"mask '{record.mask}' is empty at the model's input size: no mask scores"
            dropped, mask = "; ".join(filter(None, [dropped, empty])), None
        if mask is not None:
            masks[record.id] = mask
        note = "; ".join(filter(None, [note, dropped]))
        photo = display_photo(rgb)
        ctx.store.save_image(f"photos/{record.id}.jpg", photo)
        scale = (photo.shape[1] / rgb.shape[1], photo.shape[0] / rgb.shape[0])
        ctx.store.save_image(
            f"photos/{record.id}.boxes.jpg", figures.draw_boxes(photo, boxes, scale)
        )
    except data.DataError as err:
        return {**row, "status": "failed", "error": str(err)}, None
    except Exception as err:  # noqa: BLE001 - one bad image never stops the run
        message = f"cannot use '{record.source}': {type(err).__name__}: {err}"
        return {**row, "status": "failed", "error": message}, None
    size = {"width": rgb.shape[1], "height": rgb.shape[0]}
    return {**row, "status": "ok", "error": "", "note": note, **size}, Item(record, rgb, photo)


def top5(class_names: list[str], ids: list[str], probs: torch.Tensor) -> list[dict]:
    """The rows of ``predictions.csv``: each image's five most probable classes."""
    top_p, top_i = probs.topk(5, dim=1)
    return [
        {
            "image": image,
            "rank": rank,
            "class_id": cls,
            "class_name": class_names[cls],
            "probability": prob,
        }
        for image, p, i in zip(ids, top_p.tolist(), top_i.tolist(), strict=True)
        for rank, (prob, cls) in enumerate(zip(p, i, strict=True), start=1)
    ]


def choose_targets(rule: str | int, batch: Batch) -> torch.Tensor:
    """The class each map explains: ``--target`` (default: the prediction)."""
    predicted = batch.probs.argmax(1)
    if rule == "predicted":
        return predicted
    if rule == "label":  # the first annotated class, else the prediction
        return torch.tensor(
            [
                item.record.classes[0] if item.record.classes else int(p)
                for item, p in zip(batch.items, predicted, strict=True)
            ]
        )
    if rule == "labels":  # the annotated class (one per record): its most probable id
        return torch.tensor(
            [
                max(item.record.classes, key=lambda c: float(p[c]))
                if item.record.classes
                else int(p.argmax())
                for item, p in zip(batch.items, batch.probs, strict=True)
            ]
        )
    if str(rule).startswith("topk:"):  # each record's rank among the likeliest classes
        order = batch.probs.argsort(1, descending=True)
        return torch.stack([order[n, item.record.rank] for n, item in enumerate(batch.items)])
    return torch.full_like(predicted, rule)


def display_photo(rgb: np.ndarray) -> np.ndarray:
    """The photo as the site shows it: long side at most DISPLAY_SIDE; a small one (the
    112 px synthetic images) enlarged by a whole factor, pixels kept sharp, so its maps
    and boxes can be seen."""
    h, w = rgb.shape[:2]
    if 2 * max(h, w) <= DISPLAY_SIDE:
        k = DISPLAY_SIDE // max(h, w)
        return rgb.repeat(k, axis=0).repeat(k, axis=1)
    scale = min(1.0, DISPLAY_SIDE / max(h, w))
    if scale == 1.0:
        return rgb
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return (figures.resize_rgb(rgb, size)).astype(np.uint8)


def usable_boxes(
    boxes: list, width: int, height: int, box_classes: list | None = None
) -> tuple[list, list, str]:
    """Boxes clipped to the image, with their ``box_classes`` (if given) kept alongside;
    the ones with no area left are dropped and named."""
    kept, classes, dropped = [], [], []
    for n, box in enumerate(boxes):
        x0, y0, x1, y1 = box
        clipped = [max(0, x0), max(0, y0), min(width, x1), min(height, y1)]
        if clipped[2] - clipped[0] >= 1 and clipped[3] - clipped[1] >= 1:
            kept.append(clipped)
            classes += [box_classes[n]] if box_classes else []
        else:
            dropped.append(str(box))
    if not dropped:
        return kept, classes, ""
    return kept, classes, f"box {', '.join(dropped)} outside the {width}x{height} image: ignored"


def class_boxes(record: data.ImageRecord, target: int) -> list:
    """The boxes of the explained class: those whose ``box_classes`` hold ``target`` (VOC
    images with several classes, composites). A record without per-box classes, or a target
    that no box shows (a wrong prediction), is scored against every box: what the image
    is annotated with."""
    if not record.box_classes:
        return record.boxes
    pairs = zip(record.boxes, record.box_classes, strict=True)
    return [box for box, classes in pairs if target in classes] or record.boxes
