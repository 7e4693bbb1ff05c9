"""Users' own folders: every awkward file is converted (with a note) or skipped (with a reason
naming it), ids stay safe and unique, and manifests cannot mislabel or escape."""

from __future__ import annotations

import json
import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reportgen import data, sources
from reportgen.sources import folders
from tests.badinputs import CASES, NOTES, REASONS, make_bad_folder

CLASS_NAMES = [f"class {i}" for i in range(1000)]
SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, data.ImageRecord]]:
    """The bad folder, what each file should give, and its records by relative name."""
    root = tmp_path_factory.mktemp("bad")
    outcomes = make_bad_folder(root)
    records = folders.folder_records(root, CLASS_NAMES)
    return root, outcomes, {Path(r.source).relative_to(root).as_posix(): r for r in records}


def load(bad, name: str) -> tuple[np.ndarray, str, list]:
    return data.load_photo(bad[2][name])


@pytest.mark.parametrize("name", list(CASES))
def test_each_file_is_converted_skipped_or_ignored(bad, name):
    root, outcomes, records = bad
    if name not in outcomes:
        pytest.skip("this file system ignores case, so the clashing name was not written")
    outcome = outcomes[name]
    if outcome == "ignored":
        assert name not in records
        return
    if outcome == "skipped":
        with pytest.raises(data.DataError) as raised:
            data.load_photo(records[name])
        assert Path(name).name in str(raised.value) and REASONS[name] in str(raised.value)
        return
    rgb, note, _ = data.load_photo(records[name])
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.flags.c_contiguous
    assert (note == "") if outcome == "ok" else (NOTES[name] in note), note
    assert (data.load_rgb(records[name]) == rgb).all()


def test_converted_pixels_are_right(bad):
    assert (load(bad, "grey.png")[0] == 100).all()
    rgba = load(bad, "rgba.png")[0]
    assert (rgba[:, :32] == 255).all() and (rgba[:, 32:] == (200, 0, 0)).all()
    palette = load(bad, "palette.png")[0]
    assert (palette[:, :32] == (0, 0, 255)).all() and (palette[:, 32:] == (0, 160, 0)).all()
    transparent = load(bad, "palette_transparent.png")[0]
    assert (transparent[:, :32] == 255).all() and (transparent[:, 32:] == (0, 160, 0)).all()
    for name in ("grey16.png", "grey16.tif"):  # scaled, not clipped: 32768 -> 128, not 255
        grey = load(bad, name)[0]
        assert (grey[:, :32] == 255).all() and (grey[:, 32:] == 128).all(), name
    assert (load(bad, "rgb16.png")[0] == (255, 128, 0)).all()
    cmyk = load(bad, "cmyk.jpg")[0].astype(int)
    assert (cmyk[..., 0] > 230).all() and (cmyk[..., 1:] < 25).all()  # red
    gif = load(bad, "animated.gif")[0]
    assert (gif == (255, 0, 0)).all()  # the first frame


def test_exif_orientation_turns_the_photo(bad):
    rgb = load(bad, "exif_rotated.jpg")[0].astype(int)  # stored 64x48: red left, blue right
    assert rgb.shape == (64, 48, 3)  # width and height swapped
    assert (rgb[:28, :, 0] > 200).all() and (rgb[36:, :, 2] > 200).all()  # left went to the top


def test_huge_photo_is_reduced_while_decoding(bad):
    tracemalloc.start()
    rgb, note, _ = load(bad, "huge.jpg")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rgb.shape == (4000, 4000, 3) and note == "reduced from 8000x8000 to 4000x4000 on load"
    assert peak < 8000 * 8000 * 3 * 0.75  # never a full-size array (192 MB), let alone float
    assert np.abs(rgb[::500, ::500].astype(int) - (90, 120, 150)).max() <= 3


def test_reduction_keeps_the_crop_on_the_same_pixels(bad, monkeypatch):
    monkeypatch.setattr(data, "MAX_SIDE", 32)  # plain.png is 64x48: reduced 2x by block averaging
    record = bad[2]["plain.png"]
    full = np.asarray(Image.open(record.source))
    rgb, note, _ = data.load_photo(record)
    assert rgb.shape == (24, 32, 3) and "reduced from 64x48 to 32x24 on load" in note
    cropped = data.load_photo(data.ImageRecord("c", record.source, crop=[8, 24, 16, 48]))[0]
    assert cropped.shape == (8, 16, 3)
    expected = full[8:24, 16:48].reshape(8, 2, 16, 2, 3).mean(axis=(1, 3))
    assert np.abs(cropped - expected).max() <= 1


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_warning_band_is_refused_too(bad, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 48 - 1)  # PIL only warns up to 2x
    with pytest.raises(data.DataError, match=r"plain\.png.*bomb limit.*64x48 = 3072 pixels > 3071"):
        load(bad, "plain.png")


def test_ids_are_safe_and_unique_ignoring_case(bad):
    root, _, records = bad
    ids = [r.id for r in records.values()]
    assert len({i.lower() for i in ids}) == len(ids)
    out = (root / "out" / "photos").resolve()
    for image_id in ids:
        assert SAFE_ID.fullmatch(image_id), image_id
        assert (out / f"{image_id}.jpg").resolve().parent == out
    assert records["notes.txt"].id == "notes.txt"  # skipped files keep their suffix
    assert records["sub dir/nested.png"].label == "sub dir"


def test_safe_id_edge_cases():
    taken: set[str] = set()
    assert [data.safe_id(t, taken) for t in ("A", "a", "a", "../..", "", ".env")] == [
        "A",
        "a-2",
        "a-3",
        "image",
        "image-2",
        "env",
    ]
    long = [data.safe_id("x" * 300, taken) for _ in range(12)]
    assert all(len(i) <= 100 and SAFE_ID.fullmatch(i) for i in long)
    assert len(set(long)) == 12 and long[-1].endswith("-12")


def write_manifest(folder: Path, images: list[dict]) -> Path:
    folder.mkdir(exist_ok=True)
    Image.new("RGB", (64, 48)).save(folder / "x.png")
    path = folder / "manifest.json"
    path.write_text(json.dumps({"name": "mine", "images": images}))
    return path


def test_manifest_ids_cannot_escape(tmp_path):
    path = write_manifest(
        tmp_path, [{"id": "../../x", "path": "x.png"}, {"id": "X", "path": "x.png"}]
    )
    _, records = folders.read_manifest(path, 1000)
    assert [r.id for r in records] == ["x", "X-2"]
    assert data.load_photo(records[0])[0].shape == (48, 64, 3)


def test_manifest_class_out_of_range_is_refused(tmp_path):
    path = write_manifest(tmp_path, [{"id": "cat", "path": "x.png", "classes": [281, 5000]}])
    with pytest.raises(data.DataError, match=r"manifest\.json.*'cat'.*5000.*0\.\.999"):
        folders.read_manifest(path, 1000)
    with pytest.raises(data.DataError, match="5000"):
        sources.dataset(str(tmp_path), CLASS_NAMES)
    assert folders.read_manifest(path)[1][0].classes == [281, 5000]  # no range given: not checked
    write_manifest(tmp_path, [{"id": "cat", "path": "x.png", "classes": ["281"]}])
    with pytest.raises(data.DataError, match="'281' is not an integer"):
        folders.read_manifest(path, 1000)
    path.write_text("{not json")
    with pytest.raises(data.DataError, match=r"cannot read manifest .*manifest\.json"):
        folders.read_manifest(path, 1000)


def test_folder_without_images_is_refused_and_hidden_files_never_count(tmp_path):
    (tmp_path / ".git").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / ".git" / "x.png")
    Image.new("RGB", (8, 8)).save(tmp_path / ".hidden.png")
    (tmp_path / "notes.txt").write_text("no photos here")
    with pytest.raises(data.DataError, match="holds no images"):
        folders.folder_records(tmp_path, CLASS_NAMES)


def test_make_bad_folder_is_fast_and_deterministic(tmp_path):
    start = time.perf_counter()
    first = make_bad_folder(tmp_path / "one")
    seconds = time.perf_counter() - start
    second = make_bad_folder(tmp_path / "two")
    assert first == second and seconds < 2
    for name in first:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_a_run_over_the_bad_folder_reports_every_file(bad, tmp_path):
    """End to end: exit 0, one row per file with its status and reason or conversion, both
    listed on the index page, every page's links resolving, nothing written outside --out."""
    import pandas as pd

    from reportgen.cli import main
    from tests.sitecheck import check_site

    root, outcomes, records = bad
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out"
    argv = ["run", "--data", str(root), "--out", str(out), "--methods", "gradcam,saliency"]
    # metrics of the map alone: one row per explained image without the model passes of
    # the other groups (22 images; those groups have their own end-to-end tests)
    argv += ["--metrics", "complexity", "--batch-size", "4"]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "out"])
    images = pd.read_csv(out / "data" / "images.csv", keep_default_na=False)
    by_file = {
        Path(s).relative_to(root).as_posix(): row
        for s, row in images.set_index("source").iterrows()
    }
    assert set(by_file) == {name for name, what in outcomes.items() if what != "ignored"}
    index = (out / "index.html").read_text()
    for name, outcome in outcomes.items():
        if outcome == "ignored":
            continue
        row = by_file[name]
        if outcome == "skipped":
            assert row.status in ("skipped", "failed") and REASONS[name] in row.error, name
            assert REASONS[name].replace("'", "&#39;") in index, name
        else:
            assert row.status == "ok", (name, row.error)
            assert (out / "images" / f"{row.image}.html").is_file(), name
            if outcome == "converted":
                assert NOTES[name] in row.note and NOTES[name] in index, name
    assert check_site(out) == []
    metrics = pd.read_csv(out / "data" / "metrics.csv")
    ok = {row.image for row in by_file.values() if row.status == "ok"}
    assert set(metrics.image) == ok


def test_a_folder_of_nothing_readable_exits_1(tmp_path, capsys):
    from reportgen.cli import main

    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    argv = ["run", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--methods", "saliency"]
    assert main(argv) == 1
    assert "0 of 2 images explained" in capsys.readouterr().out
    (tmp_path / "broken.jpg").unlink()
    (tmp_path / "empty.png").unlink()
    (tmp_path / "notes.txt").write_text("text")
    assert main(argv) == 2
    assert "holds no images" in capsys.readouterr().err


def test_boxes_follow_a_photo_reduced_on_load(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (8192, 64), (10, 20, 30)).save(path)
    record = data.ImageRecord("wide", str(path), boxes=[[4096, 0, 8192, 64]])
    rgb, note, boxes = data.load_photo(record)
    assert rgb.shape[:2] == (32, 4096) and "reduced from 8192x64" in note
    assert boxes == [[2048, 0, 4096, 32]]
