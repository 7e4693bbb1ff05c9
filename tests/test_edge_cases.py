"""Numerical edge cases have defined results: no crash, no NaN in the leaderboard."""

import numpy as np
import pandas as pd
import pytest
import torch

from evaluation.metrics import average_drop, drop_per_image, loc_delta, normalise_map
from reportgen import techniques
from reportgen.batch import class_boxes, usable_boxes
from reportgen.cli import main
from reportgen.data import ImageRecord


def test_zero_probability_drops_nothing():
    assert drop_per_image([0.0, 0.5], [0.2, 0.25]).tolist() == [0.0, 50.0]
    assert average_drop([0.0], [0.0]) == 0.0


@pytest.mark.parametrize("value", [0.0, 3.0, -2.0])
def test_constant_and_zero_maps_normalise_to_zero(value):
    flat = np.full((4, 4), value)
    assert (normalise_map(flat) == 0).all()
    # nothing is above any threshold: no pixel inside, none outside
    assert loc_delta(flat, [(0, 0, 2, 2)], 0.0) == 0.0


def test_boxes_outside_the_image_are_clipped_or_dropped():
    boxes = [[-5, -5, 10, 10], [50, 50, 60, 60], [3, 3, 3, 9]]
    kept, classes, note = usable_boxes(boxes, 20, 20)
    assert kept == [[0, 0, 10, 10]] and classes == []
    assert "[50, 50, 60, 60]" in note and "[3, 3, 3, 9]" in note and "20x20" in note
    # per-box classes stay with their boxes
    kept, classes, _ = usable_boxes(boxes, 20, 20, [[1], [2], [3]])
    assert kept == [[0, 0, 10, 10]] and classes == [[1]]


def test_class_boxes_are_the_explained_class_s():
    record = ImageRecord(
        id="a",
        source="a.jpg",
        classes=[1, 2],
        boxes=[[0, 0, 4, 4], [5, 5, 9, 9], [1, 1, 2, 2]],
        box_classes=[[1], [2, 7], [1]],
    )
    assert class_boxes(record, 1) == [[0, 0, 4, 4], [1, 1, 2, 2]]
    assert class_boxes(record, 7) == [[5, 5, 9, 9]]
    assert class_boxes(record, 3) == record.boxes  # not annotated: every box
    plain = ImageRecord(id="b", source="b.jpg", classes=[1], boxes=[[0, 0, 4, 4]])
    assert class_boxes(plain, 1) == class_boxes(plain, 5) == [[0, 0, 4, 4]]


def nan_maps(model, x, targets, **_):
    """Half the map NaN, one value +Inf: what a NaN gradient produces."""
    maps = torch.ones(x.shape[0], *x.shape[-2:])
    maps[:, : x.shape[-2] // 2] = float("nan")
    maps[:, -1, -1] = float("inf")
    return maps


def test_nan_and_inf_maps_are_zeroed_and_counted(tmp_path, monkeypatch):
    technique = techniques.Technique(
        "nan_maps", "NaN maps", "baseline", "test", "", "half NaN", "none", nan_maps
    )
    monkeypatch.setitem(techniques.REGISTRY, "nan_maps", technique)
    argv = ["run", "--out", str(tmp_path), "--limit", "2", "--methods", "nan_maps,saliency"]
    assert main(argv) == 0
    metrics = pd.read_csv(tmp_path / "data" / "metrics.csv")
    ours = metrics[metrics.method == "nan_maps"].set_index(["image", "metric"]).value
    assert (ours.xs("nonfinite", level="metric") == 224 * 112 + 1).all()
    assert ours.notna().all()
    assert "nonfinite" not in set(metrics[metrics.method == "saliency"].metric)
    raw = np.load(tmp_path / "data" / "maps" / "chelsea" / "nan_maps@input.npz")["map"]
    assert np.isfinite(raw).all() and raw[0, 0] == 0 and raw[-2, 0] == 1
    board = (tmp_path / "index.html").read_text()
    assert ">nan<" not in board.lower()


def test_templates_escape_names_from_the_data():
    from reportgen.render import environment

    page = environment().get_template("base.html")
    assert page.environment.autoescape is True or page.environment.autoescape("x.html")
    assert environment().from_string("{{ x }}").render(x="<b>&\"'") == "&lt;b&gt;&amp;&#34;&#39;"
