"""``reportgen compare``: two run folders hold the same report, or it says what differs."""

from pathlib import Path

import pandas as pd

from reportgen.cli import main
from reportgen.compare import differences


def folder(root: Path, metrics: list[dict], pages: list[str], seconds: float = 1.0) -> Path:
    (root / "data").mkdir(parents=True)
    pd.DataFrame(metrics).to_csv(root / "data" / "metrics.csv", index=False)
    pd.DataFrame([{"method": "gradcam", "seconds": seconds}]).to_csv(
        root / "data" / "timings.csv", index=False
    )
    for page in pages:
        (root / page).parent.mkdir(parents=True, exist_ok=True)
        (root / page).write_text("<html></html>")
    return root


ROWS = [
    {"image": "a", "method": "gradcam", "metric": "average_drop", "value": 12.5},
    {"image": "b", "method": "gradcam", "metric": "average_drop", "value": None},
    {"image": "a", "method": "saliency", "metric": "average_drop", "value": 40.0},
]


def test_same_report_whatever_the_row_order_and_the_timings(tmp_path):
    a = folder(tmp_path / "a", ROWS, ["index.html", "images/a.html"])
    b = folder(tmp_path / "b", ROWS[::-1], ["images/a.html", "index.html"], seconds=9.0)
    assert differences(a, b) == []
    assert main(["compare", str(a), str(b)]) == 0


def test_a_changed_value_a_missing_row_and_a_missing_page_are_named(tmp_path):
    changed = [dict(r) for r in ROWS]
    changed[0]["value"] = 12.6
    a = folder(tmp_path / "a", ROWS, ["index.html", "images/a.html"])
    b = folder(tmp_path / "b", changed, ["index.html"])
    found = differences(a, b)
    assert any("metrics.csv: value: 1 of 3 values differ (largest by 0.1)" in f for f in found)
    assert any("images/a.html" in f for f in found)
    assert differences(a, b, rtol=0.01) == [f for f in found if "html" in f]
    c = folder(tmp_path / "c", ROWS[:2], ["index.html", "images/a.html"])
    assert differences(a, c) == ["metrics.csv: 3 rows != 2 rows"]
    assert main(["compare", str(a), str(c)]) == 1
