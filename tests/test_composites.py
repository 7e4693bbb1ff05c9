"""The composites data set: deterministic, boxes exact, the balance the report relies on."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reportgen.data import load_rgb
from reportgen.sources import composites
from reportgen.sources.folders import read_manifest


@pytest.fixture(scope="module")
def made() -> list[tuple]:
    """The default composites: (record, plan) pairs."""
    return [(r, composites.plan(*composites.parse(r.source))) for r in composites.records()]


def test_parse_and_its_errors_name_the_source():
    assert composites.parse("composite:0:7") == (0, 7)
    assert composites.parse("composite:12:345") == (12, 345)
    for bad in ["composite:0", "composite:-1:3", "composite:a:1", "skimage.data.chelsea", ""]:
        with pytest.raises(ValueError, match=re.escape(f"'{bad}'")):
            composites.parse(bad)


def test_same_source_same_composite():
    assert composites.records() == composites.records()
    assert composites.plan(0, 5) == composites.plan(0, 5)
    a, b = composites.render("composite:0:5"), composites.render("composite:0:5")
    assert a.dtype == np.uint8 and np.array_equal(a, b)
    assert composites.plan(1, 5) != composites.plan(0, 5)  # the seed matters


def test_balance_and_labels(made):
    assert len(made) == composites.COUNT == 24
    counts = [len(p["instances"]) for _, p in made]
    assert sum(n >= 2 for n in counts) >= 8
    for many in (False, True):  # every object alone and as several instances
        shown = {p["object"] for (_, p), n in zip(made, counts, strict=True) if (n > 1) == many}
        assert shown == set(composites.OBJECTS)
    for (record, p), n in zip(made, counts, strict=True):
        assert 1 <= n <= p["wanted"] <= 3
        assert f"×{n} on {p['background']}" in record.label  # says what was pasted, truly
        assert record.id.endswith(f"-x{n}") and re.fullmatch(r"[A-Za-z0-9._-]+", record.id)
    assert len({r.id.lower() for r, _ in made}) == len(made)


def test_boxes_inside_disjoint_and_classed(made):
    embedded = {r.id: r for r in read_manifest()[1]}
    for record, p in made:
        width, height = p["size"]
        n = len(p["instances"])
        pasted, rest = record.boxes[:n], record.boxes[n:]
        assert pasted == [i["box"] for i in p["instances"]]
        for x0, y0, x1, y1 in record.boxes:
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        for i, a in enumerate(pasted):
            assert all(isinstance(v, int) for v in a)
            longer = max(a[2] - a[0], a[3] - a[1])  # 25-45 % of the shorter side, +-1 px
            assert 0.25 * min(width, height) - 1 <= longer <= 0.45 * min(width, height) + 1
            for b in pasted[i + 1 :]:  # disjoint: apart along x or along y
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
        obj, bg = embedded[p["object"]], embedded[p["background"]]
        assert not set(obj.classes) & set(bg.classes)
        assert record.classes == obj.classes
        assert record.box_classes == [obj.classes] * n + [bg.classes] * len(rest)
        assert all(box in bg.boxes for box in rest)  # the background's own, at most half hidden


def test_covered_share_by_hand():
    box = [0, 0, 10, 10]
    assert composites.covered_share(box, []) == 0.0
    assert composites.covered_share(box, [[5, 0, 20, 10]]) == 0.5
    assert composites.covered_share(box, [[0, 0, 5, 4], [0, 6, 5, 10]]) == 0.4
    assert composites.covered_share(box, [[-5, -5, 15, 15]]) == 1.0


def test_place_falls_back_to_fewer_instances():
    rng = np.random.default_rng(0)
    # a 100 x 100 image holds one 60 x 60 instance, never two
    assert len(composites.place([(60, 60)] * 3, 100, 100, rng)) == 1
    assert composites.place([(120, 10)], 100, 100, rng) == []
    two = composites.place([(40, 40), (40, 40)], 100, 100, rng)
    assert len(two) == 2


def test_pixels_are_the_crop_resized_and_flipped(made):
    # the first composite with a flipped instance, recomputed from the embedded photos
    record, p = next((r, p) for r, p in made if any(i["flip"] for i in p["instances"]))
    embedded = {r.id: r for r in read_manifest()[1]}
    image = composites.render(record.source)
    background = load_rgb(embedded[p["background"]])
    assert image.shape == (*p["size"][::-1], 3) == background.shape
    x0, y0, x1, y1 = embedded[p["object"]].boxes[0]
    crop = Image.fromarray(load_rgb(embedded[p["object"]])[y0:y1, x0:x1])
    outside = np.ones(image.shape[:2], dtype=bool)
    for instance in p["instances"]:
        bx0, by0, bx1, by1 = instance["box"]
        pasted = crop.resize((bx1 - bx0, by1 - by0), Image.Resampling.LANCZOS)
        if instance["flip"]:
            pasted = pasted.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        assert np.array_equal(image[by0:by1, bx0:bx1], np.asarray(pasted))
        outside[by0:by1, bx0:bx1] = False
    assert np.array_equal(image[outside], background[outside])


def test_readme_table_matches_the_code(made):
    readme = Path(__file__).parents[1] / "datasets" / "composites.md"
    rows = [line for line in readme.read_text().splitlines() if line.startswith("| `composite-")]
    assert len(rows) == len(made)
    for row, (record, p) in zip(rows, made, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        n = len(p["instances"])
        flipped = "yes" if any(i["flip"] for i in p["instances"]) else "no"
        assert cells[0] == f"`{record.id}`"
        assert cells[1:4] == [composites.OBJECTS[p["object"]], str(n), p["background"]]
        assert cells[4].split()[0] == str(len(record.boxes) - n) and cells[5] == flipped
