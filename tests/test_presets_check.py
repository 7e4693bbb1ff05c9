"""The fast-preset check (``evaluation.presets``) on a tiny case: identical settings agree
exactly, a clearly shorter one does not, and the curve comparison is exact at equal steps."""

from __future__ import annotations

import math

import numpy as np
import torch

from evaluation import metrics as M
from evaluation import presets_agreement as agreement
from evaluation.presets import OUT
from reportgen.context import make_probabilities

from .conftest import TinyGapNet

SIDE = 32


def tiny_case() -> tuple[TinyGapNet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyGapNet().eval()
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(x).argmax(1)
    return model, x, targets


def test_pearson_matches_numpy_and_flags_flat_maps():
    a, b = np.random.default_rng(0).random((2, 5, 7))
    assert abs(agreement.pearson(a, b) - np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 1e-12
    assert math.isnan(agreement.pearson(np.ones((4, 4)), b[:4, :4]))


def test_map_agreement_is_one_for_identical_settings_and_below_for_fewer_masks():
    model, x, targets = tiny_case()
    same = agreement.map_agreement(
        model, x, targets, "rise", fast={"masks": 50}, paper={"masks": 50}, cells=4, batch_size=128
    )
    assert len(same) == 2
    assert all(abs(r - 1.0) < 1e-6 for r in same), same

    shorter = agreement.map_agreement(
        model, x, targets, "rise", fast={"masks": 50}, paper={"masks": 400}, cells=4, batch_size=128
    )
    assert len(shorter) == 2
    assert all(np.isfinite(shorter)), shorter
    assert all(-1.0 <= r < 0.9 for r in shorter), shorter  # clearly different (r = 0.35)
    # the settings reach the technique: 50 masks differ from 400 masks, same seed
    few = {"cells": 4, "batch_size": 128}
    fifty = agreement.compute_maps(model, x, targets, "rise", {"masks": 50, **few})
    four_hundred = agreement.compute_maps(model, x, targets, "rise", {"masks": 400, **few})
    assert fifty.shape == four_hundred.shape == (2, SIDE, SIDE)
    assert not torch.allclose(fifty, four_hundred)


def test_curve_agreement_is_exact_at_equal_steps_and_uses_the_pipeline_step():
    model, x, targets = tiny_case()
    mean = torch.zeros(1, 3, 1, 1)
    std = torch.ones(1, 3, 1, 1)
    probabilities = make_probabilities(model, mean, std, torch.device("cpu"), 128)
    rng = np.random.default_rng(2)
    images = [rng.random((SIDE, SIDE, 3)).astype(np.float32) for _ in range(2)]
    maps = [
        {"random": rng.random((SIDE, SIDE)), "grad": rng.normal(size=(SIDE, SIDE))}
        for _ in range(2)
    ]
    tg = targets.tolist()

    equal = agreement.curve_agreement(probabilities, images, maps, tg, steps=10, paper_steps=10)
    for mode in ("insertion", "deletion"):
        assert equal[mode]["pairs"] == 4
        assert abs(equal[mode]["pearson"] - 1.0) < 1e-9
        assert abs(equal[mode]["spearman"] - 1.0) < 1e-9
        assert equal[mode]["mean_abs_diff"] == 0.0

    # 100 steps is the metric's default step (1 % of the pixels, rounded up)
    aucs = agreement.curve_aucs(probabilities, images, maps, tg, steps=100, modes=("deletion",))
    by_default = M.insertion_deletion(
        probabilities, images[0], maps[0]["random"], tg[0], mode="deletion"
    )
    assert M.curve_step((SIDE, SIDE), 100) == math.ceil(SIDE * SIDE / 100)
    assert aucs["deletion"][0] == by_default.auc

    coarse = agreement.curve_agreement(
        probabilities, images, maps, tg, steps=3, paper_steps=10, modes=("deletion",)
    )
    assert coarse["deletion"]["mean_abs_diff"] > 0  # 3 steps is a different curve
    assert -1.0 <= coarse["deletion"]["pearson"] <= 1.0


def test_committed_measurements_back_the_fast_presets():
    """The measurement on the default photos (``evaluation/bench/presets``) is what the
    registrations use: the synthesis step counts it chose, Extremal Perturbation's steps,
    and bfloat16 only for the techniques whose maps it compared, with maps and scores that
    agree with float32's."""
    import json

    from reportgen import techniques

    results = json.loads(OUT.read_text())
    for name in ("filter_vis", "inversion"):
        measured = results["synthesis"][name]
        assert measured["chosen"] == techniques.get(name).preset("fast")["steps"], name
    assert results["synthesis"]["class_model"]["chosen"] is None  # not shortened: see why
    # Extremal Perturbation: the fewest steps agreeing with the paper mask at 90 % of the
    # paper setting's own reproducibility (its mirrored photo) or more
    ep = results["maps"]["extremal_perturbation"]
    bar = 0.9 * ep["noise_floor"]["mean_r"]
    fewest = min(c["value"] for c in ep["candidates"] if c["mean_r"] >= bar)
    assert techniques.get("extremal_perturbation").preset("fast")["iterations"] == fewest
    assert "steps" not in techniques.get("class_model").preset("fast")
    precision = results["precision"]
    bf16 = {t.name for t in techniques.REGISTRY.values() if t.bf16}
    assert set(precision["maps"]) == bf16
    assert min(m["min_r"] for m in precision["maps"].values()) >= 0.98
    assert min(s["spearman"] for s in precision["scores"].values()) >= 0.95
