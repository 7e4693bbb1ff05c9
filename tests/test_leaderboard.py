"""The leaderboard's statistics: class-balanced pointing game, Wilcoxon + Holm marks."""

import numpy as np
import pandas as pd
import pytest

from evaluation.leaderboard import image_classes, leaderboard


def rows(method: str, metric: str, values, images=None) -> list[dict]:
    images = images or [f"im{i}" for i in range(len(values))]
    return [
        {
            "image": im,
            "model": "m",
            "layer": "input",
            "method": method,
            "metric": metric,
            "value": v,
        }
        for im, v in zip(images, values, strict=True)
    ]


def test_pointing_game_is_the_mean_of_per_class_accuracies():
    labels = pd.Series(["cat", "cat", "cat", "dog"], index=["im0", "im1", "im2", "im3"])
    metrics = pd.DataFrame(rows("a", "pointing_game", [100.0, 100.0, 100.0, 0.0]))
    (entry,), _ = leaderboard(metrics, labels)
    mean, lo, hi = entry.stats["pointing_game"]
    assert mean == pytest.approx(50.0)  # (100 + 0) / 2, not 75
    # the CI is of the per-class mean in each resample: never outside the values' range
    assert 0.0 <= lo <= mean <= hi <= 100.0


def test_per_class_key_is_the_annotated_classes_not_the_label_wording():
    images = pd.DataFrame(
        {
            "image": ["a", "b", "c", "d"],
            "label": ["cat ×3 on china", "cat ×1 on coffee", "", float("nan")],
            "classes": ["281 282", "281 282", float("nan"), ""],
        }
    )
    assert image_classes(images).tolist() == ["281 282", "281 282", "c", "d"]


def test_a_consistently_better_method_is_marked_and_a_tie_is_not():
    rng = np.random.default_rng(0)
    base = rng.uniform(40, 60, 10)
    metrics = pd.DataFrame(
        rows("best", "average_drop", base - 20)
        + rows("worse", "average_drop", base)
        + rows("same", "average_drop", base - 20 + rng.normal(0, 0.5, 10))
    )
    entries, tables = leaderboard(metrics)
    matrix, pvalues = tables["average_drop"]
    assert [e.method for e in entries][2] == "worse"
    by_name = {e.method: e for e in entries}
    assert by_name["worse"].versus_best < 0.05
    top = entries[0].method
    other = "same" if top == "best" else "best"
    assert by_name[other].versus_best > 0.05
    assert matrix.loc["best@input", "worse@input"] == 100.0
    assert pvalues.loc["best@input", "worse@input"] == pvalues.loc["worse@input", "best@input"]


def test_published_rows_set_ours_beside_each_published_figure():
    from evaluation.leaderboard import Entry, published_rows
    from evaluation.published import PUBLISHED

    entries = [
        Entry("gradcam", "bn2", 12, {"average_drop": (40.0, 30.0, 50.0)}, 50.0),
        Entry("gradcam", "blocks.5", 12, {"average_drop": (10.0, 5.0, 15.0)}, 50.0),
        Entry("saliency", "input", 12, {"pointing_game": (80.0, 70.0, 90.0)}, 50.0),
    ]
    rows = published_rows(entries, "bn2")
    assert len(rows) == len(PUBLISHED)
    drops = [r for r in rows if r["method"] == "gradcam" and r["metric"] == "Average Drop %"]
    assert {r["model"] for r in drops} == {"VGG-16", "ResNet-50", "ResNet-18"}
    assert all(r["ours"] == (40.0, 30.0, 50.0) and r["images"] == 12 for r in drops)  # bn2 only
    pointing = [r for r in rows if r["method"] == "saliency" and r["metric"] == "Pointing game %"]
    assert pointing[0]["ours"] == (80.0, 70.0, 90.0) and pointing[0]["published"] == 76.3
    assert all(r["ours"] is None for r in rows if r["method"] == "scorecam")


def test_every_column_marks_its_best_and_the_rows_significantly_worse():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.8, 12)
    metrics = pd.DataFrame(
        rows("good", "insertion_auc", base + 0.2)  # higher is better: best, clearly
        + rows("bad", "insertion_auc", base)
        + rows("close", "insertion_auc", base + 0.2 + rng.normal(0, 0.01, 12))
        + rows("good", "deletion_auc", base)  # lower is better: "bad" is best here
        + rows("bad", "deletion_auc", base - 0.1)
        + rows("close", "deletion_auc", base + rng.normal(0, 0.01, 12))
    )
    entries, tables = leaderboard(metrics)
    by = {e.method: e for e in entries}
    assert "deletion_auc" in by["bad"].best and "deletion_auc" not in by["good"].best
    top = next(e for e in entries if "insertion_auc" in e.best)
    assert top.method in ("good", "close")
    assert by["bad"].versus["insertion_auc"] < 0.05  # every image 0.2 lower: real
    other = by["close" if top.method == "good" else "good"]
    assert other.versus["insertion_auc"] > 0.05  # within noise of the best: not marked
    assert "insertion_auc" not in top.versus
    wins, pvalues = tables["insertion_auc"]
    assert wins.loc["good@input", "bad@input"] == 100.0
    assert wins.loc["bad@input", "good@input"] == 0.0
    assert wins.loc["bad@input", "good@input"] + wins.loc["good@input", "bad@input"] == 100.0
    assert pvalues.loc["good@input", "bad@input"] == pvalues.loc["bad@input", "good@input"]


def test_rows_tied_for_the_best_are_all_marked_best():
    """Two rows with the same value on every image share the best mean rank: both are the
    best of the column (neither is picked arbitrarily), the third is not."""
    base = np.linspace(0.3, 0.7, 10)
    metrics = pd.DataFrame(
        rows("first", "insertion_auc", base + 0.2)
        + rows("twin", "insertion_auc", base + 0.2)
        + rows("worse", "insertion_auc", base)
    )
    entries, _ = leaderboard(metrics)
    by = {e.method: e for e in entries}
    assert "insertion_auc" in by["first"].best and "insertion_auc" in by["twin"].best
    assert "insertion_auc" not in by["worse"].best
    assert "insertion_auc" not in by["first"].versus and "insertion_auc" not in by["twin"].versus


def test_rows_with_the_same_rectified_map_are_grouped():
    """Equal up to a positive scale on every image groups rows of one layer; a map equal on
    one image only, a negated map (rectified away) or another layer's does not join."""
    from evaluation.leaderboard import same_map_groups

    rng = np.random.default_rng(0)
    base = {image: rng.normal(size=(7, 7)) for image in ("a", "b")}
    maps = {}
    for image, m in base.items():
        maps[image, "cam@l"] = m
        maps[image, "gradcam@l"] = 3.0 * m
        maps[image, "hirescam@l"] = 0.5 * m
        maps[image, "other@l"] = m if image == "a" else -m
        maps[image, "cam@k"] = m
    keys = [("cam", "l"), ("other", "l"), ("gradcam", "l"), ("hirescam", "l"), ("cam", "k")]
    groups = same_map_groups(lambda image, key: maps.get((image, key)), keys, ["a", "b"])
    assert groups == [[("cam", "l"), ("gradcam", "l"), ("hirescam", "l")]]
    maps["b", "hirescam@l"] = maps["b", "hirescam@l"] + 1e-2 * rng.normal(size=(7, 7))
    groups = same_map_groups(lambda image, key: maps.get((image, key)), keys, ["a", "b"])
    assert groups == [[("cam", "l"), ("gradcam", "l")]]


def test_each_cell_counts_the_images_it_rests_on():
    """A metric scored on 3 of a row's 10 images (say, the ones with boxes) counts 3, so the
    index can grey that cell with its count."""
    metrics = pd.DataFrame(
        rows("a", "average_drop", np.linspace(10, 50, 10))
        + rows("a", "pointing_game", [100.0, 0.0, 100.0], images=["im0", "im4", "im7"])
    )
    (entry,), _ = leaderboard(metrics)
    assert entry.images == 10
    assert entry.counts == {"average_drop": 10, "pointing_game": 3}
