"""The metric catalogue: every score a run records is declared there, and a metric added
there alone (with its function) is computed, ranked and shown."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from evaluation import catalogue
from reportgen.cli import main, parser


def test_entries_are_complete_and_consistent():
    ids = [m.id for m in catalogue.CATALOGUE]
    assert len(ids) == len(set(ids))
    for m in catalogue.CATALOGUE:
        assert m.needs in catalogue.NEEDS, m
        assert m.group in catalogue.GROUPS or m.needs == "record", m
        assert (m.score is not None) == (m.needs in ("map", "mask")), m
        if m.ranked:
            assert m.better in ("higher", "lower") and m.heading and m.paper, m
    assert set(catalogue.DEFAULT_GROUPS) <= set(catalogue.GROUPS)
    assert catalogue.get("loc_0.75").heading == "Loc(0.75)"
    with pytest.raises(KeyError, match="catalogue"):
        catalogue.get("no_such_metric")


def _gini(saliency: np.ndarray) -> float:
    """Sparseness as the Gini index of |map| (Chalasani et al. 2020): 0 for a flat map."""
    v = np.sort(np.abs(saliency).ravel())
    n = v.size
    total = v.sum()
    return float(((2 * np.arange(1, n + 1) - n - 1) * v).sum() / (n * total)) if total else 0.0


@pytest.fixture(scope="module")
def added(tmp_path_factory):
    """A run with one metric added to the catalogue only (what CONTRIBUTING.md's recipe
    asks for: its function, its entry, its test)."""
    extra = catalogue.Metric(
        "gini_sparseness",
        "localisation",
        "Sparseness (Gini)",
        "Gini",
        "higher",
        "Chalasani et al. 2020",
        needs="map",
        digits=3,
        score=_gini,
    )
    patch = pytest.MonkeyPatch()
    patch.setattr(catalogue, "CATALOGUE", (*catalogue.CATALOGUE, extra))
    out = tmp_path_factory.mktemp("catalogue")
    argv = ["run", "--data", "synthetic", "--limit", "4", "--methods", "gradcam,baseline_centre"]
    try:
        assert main([*argv, "--metrics", "localisation", "--out", str(out)]) == 0
        helped = parser().format_help() + _run_help()
    finally:
        patch.undo()
    return out, helped


def _run_help() -> str:
    sub = next(a for a in parser()._actions if a.dest == "command")
    return sub.choices["run"].format_help()


def test_every_recorded_score_is_declared(added):
    out, _ = added
    metrics = pd.read_csv(out / "data" / "metrics.csv")
    for metric in set(metrics.metric) - {"gini_sparseness"}:
        catalogue.get(metric)  # raises for an undeclared one


def test_a_metric_added_to_the_catalogue_is_computed_ranked_and_shown(added):
    out, helped = added
    metrics = pd.read_csv(out / "data" / "metrics.csv")
    rows = metrics[metrics.metric == "gini_sparseness"]
    assert len(rows) == 8  # 4 images x 2 methods
    centre = rows[rows.method == "baseline_centre"].value
    assert np.allclose(centre, centre.iloc[0]) and 0 < centre.iloc[0] < 1  # same map each time
    index = (out / "index.html").read_text()
    assert "Sparseness (Gini)" in index
    image = next((out / "images").glob("*.html")).read_text()
    assert "Gini</dt>" in image
    assert "gini_sparseness" in " ".join(helped.split())


def test_gini_by_hand():
    assert _gini(np.ones((4, 4))) == 0
    one_hot = np.zeros((4, 4))
    one_hot[1, 2] = 5
    assert _gini(one_hot) == pytest.approx(15 / 16)


def test_metric_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        catalogue.CATALOGUE[0].id = "x"


def test_list_metrics_prints_the_catalogue(capsys):
    from reportgen.cli import main as cli

    assert cli(["list", "metrics"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert list(rows) == [m.id for m in catalogue.CATALOGUE]
    assert "lower" in rows["average_drop"] and "mask" in rows["mask_iou"]
