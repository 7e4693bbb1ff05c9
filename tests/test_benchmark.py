"""``reportgen benchmark``: every set into its own report, their rankings side by side."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from reportgen.benchmark import SETS, scored_methods
from reportgen.cli import main


@pytest.mark.slow
def test_benchmark_builds_each_set_and_a_side_by_side_page(tmp_path):
    out = tmp_path / "bench"
    quick = ["--limit", "4", "--methods", "gradcam,gradcampp,saliency,baseline_random",
             "--metrics", "faithfulness,localisation", "--curve-steps", "4"]  # fmt: skip
    assert main(["benchmark", "--out", str(out), "--", *quick]) == 0
    page = (out / "index.html").read_text()
    for s in SETS:
        assert (out / s.name / "index.html").is_file()
        assert f'href="{s.name}/index.html"' in page
        rankings = pd.read_csv(out / s.name / "data" / "rankings.csv")
        assert set(rankings.n_images) == {4}
    # every method appears once per headline metric table, with its rank in each set
    assert page.count("<td>gradcampp</td>") == len(re.findall(r"<h2 id=", page)) >= 1
    assert "mean rank" in page


def test_the_benchmark_runs_every_scored_method():
    from reportgen.techniques import REGISTRY

    names = scored_methods()
    assert "gradcam" in names and "rise" in names and "filter_vis" not in names
    assert all(REGISTRY[n].scored for n in names)
