"""The Pascal VOC and ILSVRC2012-val loaders, on the tiny fixtures of make_fixtures.py."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from reportgen import data, sources
from reportgen.cli import main
from reportgen.sources import annotated

FIXTURES = Path(__file__).parent / "fixtures"
VOC = FIXTURES / "voc"
IMAGENET = FIXTURES / "imagenet"
CLASSES = [f"class {i}" for i in range(1000)]  # an ImageNet-1k model's class count
CAT, DOG = list(range(281, 286)), list(range(151, 269))  # the shipped mapping


def summary(records):
    return [(r.id, r.label, r.classes, r.boxes, bool(r.skip)) for r in records]


def test_voc_val_split_with_boxes_made_0_based():
    name, records = sources.dataset(str(VOC), CLASSES)
    assert name == "VOC-style 'voc' val (5 images, 1 skipped)"
    assert summary(records) == [
        ("2008_000001", "cat", CAT, [[10, 5, 60, 50]], False),
        ("2008_000002", "dog", DOG, [[4, 9, 40, 60], [49, 11, 90, 66]], False),
        ("2008_000003", "person", [], [[19, 4, 70, 72]], False),  # no ImageNet person
        ("2008_000004", "cat, dog", CAT + DOG, [[0, 0, 48, 40]], False),  # difficult dog: no box
        ("2008_000005", "", [], [], True),
    ]
    # each box keeps its object's classes, so a map is scored against its own class's boxes
    assert [r.box_classes for r in records[:4]] == [[CAT], [DOG, DOG], [[]], [CAT]]
    assert records[0].source == str(VOC / "JPEGImages" / "2008_000001.jpg")
    missing = VOC / "JPEGImages" / "2008_000005.jpg"
    assert records[4].skip == (
        f"image '{missing}' not found (annotation '{VOC / 'Annotations' / '2008_000005.xml'}')"
    )
    with pytest.raises(data.DataError, match="2008_000005.jpg' not found"):
        data.load_photo(records[4])


def test_voc_falls_back_to_trainval_then_every_annotation(tmp_path):
    root = tmp_path / "VOC2012"
    shutil.copytree(VOC, root)
    (root / "ImageSets/Main/val.txt").unlink()
    name, records = sources.dataset(str(root), CLASSES)
    assert name == "VOC2012 trainval (6 images, 1 skipped)"
    assert (records[5].id, records[5].label, records[5].classes) == (
        "2008_000006",
        "horse",
        [339, 603],
    )
    shutil.rmtree(root / "ImageSets")
    name, records = sources.dataset(str(root), CLASSES)
    assert name == "VOC2012 all annotated (6 images, 1 skipped)"


def test_voc_unreadable_xml_costs_that_file_only(tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(VOC, root)
    bad = root / "Annotations" / "2008_000002.xml"
    bad.write_text("<annotation><object>")
    _, records = sources.dataset(str(root), CLASSES)
    assert [bool(r.skip) for r in records] == [False, True, False, False, True]
    assert records[1].skip.startswith(f"cannot read annotation '{bad}'")


def test_voc_own_mapping_file_is_used_and_checked(tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(VOC, root)
    mapping = root / "imagenet_classes.json"
    mapping.write_text('{"cat": [7], "dog": [8, 9]}')
    _, records = sources.dataset(str(root), CLASSES)
    assert [r.classes for r in records[:4]] == [[7], [8, 9], [], [7, 8, 9]]
    mapping.write_text('{"cat": [281, 1000]}')
    with pytest.raises(data.DataError, match=r"imagenet_classes.json', class 'cat'.*1000"):
        sources.dataset(str(root), CLASSES)
    mapping.write_text('{"cat": [281,')
    with pytest.raises(data.DataError, match=r"cannot read mapping file '.*imagenet_classes.json'"):
        sources.dataset(str(root), CLASSES)


def test_shipped_mapping_is_in_range_and_maps_person_to_nothing():
    mapping = annotated.read_class_mapping(None, 1000)
    assert len(mapping) == 20 and mapping["person"] == [] and mapping["cat"] == CAT
    assert mapping["dog"] == DOG


def test_imagenet_val_xml_beside_and_in_bbox_folder():
    name, records = sources.dataset(str(IMAGENET), CLASSES)
    assert name == "ImageNet val 'imagenet', 3 with boxes (3 images)"
    assert summary(records) == [
        ("ILSVRC2012_val_00000001", "tabby, tabby cat", [281], [[0, 4, 80, 60]], False),
        ("ILSVRC2012_val_00000002", "Chihuahua", [151], [[9, 9, 50, 70]], False),
        (
            "ILSVRC2012_val_00000003",
            "tench, Tinca tinca",
            [0],
            [[4, 4, 40, 30], [49, 39, 95, 70]],
            False,
        ),
    ]


def test_imagenet_unknown_synset_and_missing_xml(tmp_path):
    root = tmp_path / "val"
    shutil.copytree(IMAGENET, root)
    bad = root / "ILSVRC2012_val_00000002.xml"
    bad.write_text(bad.read_text().replace("n02085620", "n99999999"))
    (root / "bbox" / "ILSVRC2012_val_00000003.xml").unlink()
    _, records = sources.dataset(str(root), CLASSES)
    assert records[1].skip == f"annotation '{bad}': 'n99999999' is not an ImageNet-1k synset"
    assert summary(records)[2] == ("ILSVRC2012_val_00000003", "", [], [], False)
    with pytest.raises(data.DataError, match="model has 10 classes"):
        sources.dataset(str(root), CLASSES[:10])


@pytest.mark.parametrize("folder", [VOC, IMAGENET], ids=["voc", "imagenet"])
def test_run_scores_the_pointing_game(folder, tmp_path):
    argv = ["run", "--data", str(folder), "--methods", "gradcam", "--metrics", "localisation"]
    assert main([*argv, "--limit", "3", "--out", str(tmp_path)]) == 0
    metrics = pd.read_csv(tmp_path / "data" / "metrics.csv")
    pointed = set(metrics[metrics.metric == "pointing_game"].image)
    _, records = sources.dataset(str(folder), CLASSES)
    assert {r.id for r in records[:3] if r.classes} <= pointed


def test_target_labels_explains_each_annotated_class_on_its_own_boxes(tmp_path):
    """``--target labels`` (TorchRay's pointing-game protocol): a row per image and class
    with boxes, each map explaining one of that class's ids and scored on that class's
    boxes; the pointing game is the mean over classes of each class's hit rate, by hand."""
    from evaluation.leaderboard import image_classes, leaderboard

    root = tmp_path / "voc"
    shutil.copytree(VOC, root)
    xml = root / "Annotations" / "2008_000004.xml"  # its dog, difficult in the fixture, counts
    xml.write_text(xml.read_text().replace("<difficult>1</difficult>", "<difficult>0</difficult>"))
    _, records = sources.dataset(str(root), CLASSES)
    pairs = data.class_pairs(records)
    assert [(r.id, r.label, r.boxes) for r in pairs if r.id.startswith("2008_000004")] == [
        ("2008_000004.cat", "cat", [[0, 0, 48, 40]]),
        ("2008_000004.dog", "dog", [[49, 29, 96, 72]]),
    ]
    assert [r.id for r in pairs][:2] == ["2008_000001", "2008_000002"]  # one class: same id
    out = tmp_path / "out"
    argv = ["run", "--data", str(root), "--methods", "saliency", "--metrics", "localisation"]
    assert main([*argv, "--target", "labels", "--out", str(out)]) == 0
    metrics = pd.read_csv(out / "data" / "metrics.csv")
    explained = metrics[metrics.metric == "target"].set_index("image").value
    assert explained["2008_000004.cat"] in CAT and explained["2008_000004.dog"] in DOG
    assert explained["2008_000001"] in CAT and explained["2008_000002"] in DOG
    images = pd.read_csv(out / "data" / "images.csv")
    assert set(images[images.status == "ok"].image) == {r.id for r in pairs if not r.skip}
    hits = metrics[metrics.metric == "pointing_game"].set_index("image").value
    labelled = {r.id: r.label for r in pairs if r.classes and not r.skip}
    per_class = pd.Series({i: hits[i] for i in labelled}).groupby(labelled).mean()
    ok = images[images.status == "ok"]
    scored = metrics[metrics.image.isin(labelled)]
    entries, _ = leaderboard(scored, image_classes(ok[ok.image.isin(labelled)]))
    assert entries[0].stats["pointing_game"][0] == pytest.approx(per_class.mean())
    assert set(per_class.index) == {"cat", "dog"}


def test_target_topk_explains_each_of_the_k_likeliest_classes(tmp_path):
    """``--target topk:3``: three rows per image, ``<id>``, ``<id>.top2``, ``<id>.top3``,
    whose maps explain the image's 1st, 2nd and 3rd most probable class (from the run's own
    predictions table); a bad K is refused by name."""
    out = tmp_path / "out"
    argv = ["run", "--limit", "2", "--methods", "saliency", "--metrics", "complexity"]
    assert main([*argv, "--target", "topk:3", "--out", str(out)]) == 0
    metrics = pd.read_csv(out / "data" / "metrics.csv")
    explained = metrics[metrics.metric == "target"].set_index("image").value
    predictions = pd.read_csv(out / "data" / "predictions.csv")
    for image in ("chelsea", "coffee"):
        for rank, row in enumerate([image, f"{image}.top2", f"{image}.top3"]):
            top = predictions[predictions.image == row].sort_values("probability").iloc[::-1]
            assert explained[row] == top.class_id.iloc[rank]
    assert "3 most probable classes" in (out / "index.html").read_text()
    assert main([*argv, "--target", "topk:0", "--out", str(tmp_path / "bad")]) == 2
