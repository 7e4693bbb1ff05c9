"""The ``settings`` metric group: the insertion / deletion games again with another
substrate or fewer steps, each equal to the game called directly with that setting, and
how far each moves the ranking."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from evaluation import catalogue
from evaluation import metrics as M
from evaluation.rankings import agreement_rows, setting_moves
from reportgen.scoring import settings_variants


def probabilities(images: np.ndarray) -> np.ndarray:
    """A fixed 'model': class 0 follows the top-left quarter's red, class 1 the rest."""
    a = images[:, :8, :8, 0].mean((1, 2))
    b = images[..., 1].mean((1, 2))
    logits = np.stack([4 * a, 4 * b], axis=1)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_each_variant_is_the_game_with_its_setting_changed():
    rng = np.random.default_rng(0)
    inputs = rng.uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    maps = rng.normal(size=(3, 16, 16))
    classes = np.array([0, 1, 0])
    ctx = SimpleNamespace(probabilities=probabilities, rows=5, curve_steps=8, curve_spacing=1.5)
    values: list[dict] = [{} for _ in inputs]
    settings_variants(ctx, inputs, maps, classes, values)
    variants = catalogue.of_group("settings")
    assert {m.id for m in variants} == set(values[0])
    for k in range(3):
        mean = inputs[k].mean((0, 1))
        expected = {
            "deletion_auc_blur": dict(mode="deletion", step=32, substrate="blur"),
            "deletion_auc_mean": dict(mode="deletion", step=32, substrate=mean),
            "insertion_auc_mean": dict(mode="insertion", step=32, substrate=mean),
            "deletion_auc_half": dict(mode="deletion", step=64),
            "insertion_auc_half": dict(mode="insertion", step=64),
        }
        for metric, kw in expected.items():
            curve = M.insertion_deletion(  # spaced as the run's own curves
                probabilities, inputs[k], maps[k], classes[k], spacing=1.5, **kw
            )
            assert values[k][metric] == pytest.approx(curve.auc), metric


def test_setting_moves_compare_each_variant_with_its_metric():
    rows = []
    for i, method in enumerate(["a", "b", "c", "d"]):
        for image in range(3):
            rows.append(("deletion_auc", method, 0.1 * i + 0.01 * image))
            # the blur variant reverses the order of a and b
            rows.append(("deletion_auc_blur", method, [0.2, 0.1, 0.3, 0.4][i] + 0.01 * image))
    metrics = pd.DataFrame(
        [{"metric": m, "method": x, "layer": "input", "image": 0, "value": v} for m, x, v in rows]
    )
    agreement = pd.DataFrame(agreement_rows(metrics, "d"))
    (move,) = setting_moves(metrics, agreement)
    assert move["metric"].id == "deletion_auc_blur" and move["base"].id == "deletion_auc"
    assert move["tau"] == pytest.approx(4 / 6)  # one discordant pair of six
    assert (move["best_base"], move["best"]) == ("a@input", "b@input")
    assert "deletion_auc_blur" not in {m.id for m in catalogue.ranked()}  # not a column


def test_a_variant_without_its_metric_is_left_out_and_the_verdict_ignores_variants():
    from evaluation.rankings import agreement_verdict

    rows = [
        {"metric": m, "method": x, "layer": "input", "image": 0, "value": v}
        for m in ("deletion_auc_blur", "deletion_auc_half", "insertion_auc")
        for x, v in (("a", 0.1), ("b", 0.3), ("c", 0.2))
    ]
    metrics = pd.DataFrame(rows)
    agreement = pd.DataFrame(agreement_rows(metrics, "d"))
    assert setting_moves(metrics, agreement) == []  # deletion_auc itself was not scored
    assert agreement_verdict(agreement, {}) == ""  # its only pairs involve variants
