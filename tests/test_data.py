"""The embedded photos and user folders."""

import numpy as np
import pytest
from PIL import Image

from reportgen import data
from reportgen.sources import folders


def test_embedded_manifest_loads_every_photo_with_boxes_inside():
    meta, records = folders.read_manifest()
    assert len(records) >= 12 and len({r.id for r in records}) == len(records)
    for record in records:
        rgb = data.load_rgb(record)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert record.classes and record.boxes, record.id
        for x0, y0, x1, y1 in record.boxes:
            assert 0 <= x0 < x1 <= rgb.shape[1] and 0 <= y0 < y1 <= rgb.shape[0], record.id


def test_to_rgb_converts_grey_rgba_16bit_and_float():
    assert data.to_rgb(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    rgba = np.zeros((2, 2, 4), np.uint8)  # transparent black on white -> white
    assert (data.to_rgb(rgba) == 255).all()
    assert data.to_rgb(np.full((2, 2), 65535, np.uint16)).max() == 255
    assert data.to_rgb(np.ones((2, 2, 3))).max() == 255


def test_folder_layout_gives_labels(tmp_path):
    (tmp_path / "tabby").mkdir()
    (tmp_path / "7").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "tabby" / "a cat.jpg")
    Image.new("L", (8, 8)).save(tmp_path / "7" / "b.png")
    (tmp_path / "notes.txt").write_text("not an image")
    records = folders.folder_records(tmp_path, ["tench", "tabby, tabby cat"] + ["x"] * 10)
    assert [(r.id, r.classes) for r in records] == [
        ("7_b", [7]),
        ("notes.txt", []),
        ("tabby_a_cat", [1]),
    ]
    assert [bool(r.skip) for r in records] == [False, True, False]
    assert "not an image file (suffix '.txt')" in records[1].skip
    with pytest.raises(data.DataError, match="not an image file"):
        data.load_photo(records[1])
    (tmp_path / "12").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "12" / "c.png")
    with pytest.raises(data.DataError, match=r"12'.* out of range 0\.\.11"):
        folders.folder_records(tmp_path, ["tench", "tabby, tabby cat"] + ["x"] * 10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="holds no images"):
        folders.folder_records(tmp_path / "empty", [])


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(data.DataError, match="broken.jpg"):
        data.load_rgb(data.ImageRecord(id="broken", source=str(bad)))
