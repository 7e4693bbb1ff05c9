"""Explainers from outside the package: a user's function and captum attributions run,
are scored and shown like the built-ins; their failures are theirs, not the run's."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reportgen import techniques
from reportgen.cli import main
from reportgen.store import Store

PLUGINS = "tests.plugins:input_times_gradient,tests.plugins:layer_energy,captum:InputXGradient"
BAD = "tests.plugins:broken,tests.plugins:wrong_shape"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("captum")
    out = tmp_path_factory.mktemp("plugins")
    argv = ["run", "--out", str(out), "--data", "synthetic", "--limit", "3"]
    argv += ["--methods", f"gradcam,{PLUGINS},{BAD}", "--metrics", "faithfulness,complexity"]
    assert main(argv) == 0
    return out


def test_plugins_are_scored_and_shown_like_built_ins(site):
    metrics = pd.read_csv(site / "data" / "metrics.csv")
    scored = set(zip(metrics.method, metrics.layer, strict=True))
    layer = metrics[metrics.method == "gradcam"].layer.iloc[0]
    assert ("tests.plugins.input_times_gradient", "input") in scored
    assert ("tests.plugins.layer_energy", layer) in scored  # a layer parameter: CAM layers
    assert ("captum.InputXGradient", "input") in scored
    page = (site / "methods" / "tests.plugins.input_times_gradient.html").read_text()
    assert "plug-in: tests.plugins:input_times_gradient" in page
    assert "Input × gradient of the target logit" in page
    assert "tests.plugins.input_times_gradient" in (site / "index.html").read_text()


def test_a_plugin_equals_the_captum_attribution_it_reimplements(site):
    store = Store(site)
    for image in store.read_table("images").image:
        ours = store.load_map(image, "tests.plugins.input_times_gradient@input")
        theirs = store.load_map(image, "captum.InputXGradient@input")
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_a_failing_plugin_is_its_own_problem(site):
    run = json.loads((site / "data" / "run.json").read_text())
    problems = " ".join(run["problems"])
    assert "plug-in tests.plugins:broken failed: KeyError" in problems
    assert "plug-in tests.plugins:wrong_shape returned maps of shape (4, 4, 4)" in problems


def test_bad_plugin_names_exit_2(capsys, tmp_path):
    for name, message in (
        ("tests.plugins:missing", "cannot import 'missing' from 'tests.plugins'"),
        ("captum:LayerGradCam", "not a captum input attribution; valid:"),
    ):
        assert main(["run", "--out", str(tmp_path), "--methods", name]) == 2
        assert message in capsys.readouterr().err
    assert techniques.get("tests.plugins:input_times_gradient").family == "plugin"
