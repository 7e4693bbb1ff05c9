"""Cascading and independent model-parameter randomisation (Adebayo et al. 2018): the statistics
(evaluation/sanity.py) and the randomisation (reportgen/randomisation.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from evaluation.sanity import similarities, spearman, ssim, summary
from reportgen import techniques
from reportgen.randomisation import (
    cascading_randomisation,
    independent_randomisation,
    random_logit,
    randomisation_steps,
    randomised,
)
from reportgen.techniques.baselines import sobel_edges
from reportgen.techniques.cam import cam_maps, upsample

RESNET18_STEPS = [
    "fc",
    "layer4.1",
    "layer4.0",
    "layer3.1",
    "layer3.0",
    "layer2.1",
    "layer2.0",
    "layer1.1",
    "layer1.0",
    "conv1+bn1",
]


def tiny_explain(model, x, targets) -> dict[str, torch.Tensor]:
    """Grad-CAM at the tiny net's last conv (up-sampled) and saliency."""
    cam = cam_maps(model, x, targets, ["features.2"], ["gradcam"], "fc")[("gradcam", "features.2")]
    return {
        "gradcam": upsample(cam, x.shape[-2:]),
        "saliency": techniques.get("saliency").run(model, x, targets),
    }


def test_steps_of_resnet18_run_from_the_logits_to_the_stem():
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    assert randomisation_steps(model, torch.rand(2, 3, 64, 64)) == RESNET18_STEPS


def test_steps_of_a_plain_sequence_are_its_parameterised_layers(tiny, batch):
    assert randomisation_steps(tiny, batch) == ["fc", "features.2", "features.0"]


@pytest.mark.slow
def test_steps_of_efficientnet_lite0_go_block_by_block(lite0):
    model, spec = lite0
    steps = randomisation_steps(model, torch.rand(1, 3, *spec.input_size))
    assert steps[:3] == ["classifier", "conv_head+bn2", "blocks.6.0"]
    assert steps[-2:] == ["blocks.0.0", "conv_stem+bn1"]
    assert len(steps) == 19  # 16 blocks in 7 stages, head, stem, classifier


def test_step_zero_is_the_trained_model(tiny, batch):
    rows = cascading_randomisation(tiny, batch, torch.tensor([0, 1, 2]), tiny_explain)
    first = [r for r in rows if r["step"] == 0]
    assert len(first) == 2 * 3 and {r["block"] for r in first} == {"none"}
    assert all(r["spearman"] == 1.0 and r["ssim"] == pytest.approx(1.0) for r in first)
    assert {r["block"] for r in rows} == {"none", "fc", "features.2", "features.0"}


def test_given_trained_maps_stand_for_step_zero(tiny, batch):
    """The run makes the trained model's maps once and hands them to both randomisations
    and the random-logit test: the rows are those ``explain`` would give, with one call
    fewer (step 0 is not explained again)."""
    targets = torch.tensor([0, 1, 2])
    calls = []

    def counted(model, x, t):
        calls.append(1)
        return tiny_explain(model, x, t)

    for variant in (cascading_randomisation, independent_randomisation):
        rows = variant(tiny, batch, targets, counted, seed=3)
        made = len(calls)
        trained = tiny_explain(tiny, batch, targets)
        assert variant(tiny, batch, targets, counted, seed=3, trained=trained) == rows
        assert len(calls) == 2 * made - 1
        calls.clear()
    rows = random_logit(tiny, batch, targets, counted, seed=1)
    given = random_logit(tiny, batch, targets, counted, seed=1, target_maps=trained)
    assert given == rows and len(calls) == 3


def test_the_model_is_left_as_it_was_and_a_seed_repeats(tiny, batch):
    tiny.train()
    tiny.features[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    rng = torch.get_rng_state()
    targets = torch.tensor([0, 1, 2])
    rows = cascading_randomisation(tiny, batch, targets, tiny_explain, seed=3)
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())
    assert tiny.training and all(m.training for m in tiny.modules())
    assert [p.requires_grad for p in tiny.parameters()] == [False, True, True, True, True, True]
    assert torch.equal(torch.get_rng_state(), rng)
    assert cascading_randomisation(tiny, batch, targets, tiny_explain, seed=3) == rows
    assert cascading_randomisation(tiny, batch, targets, tiny_explain, seed=4) != rows


def test_randomised_resets_only_the_given_blocks_and_is_cumulative():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    model.layer4[1].bn1.running_mean.fill_(3.0)
    model.layer3[1].bn1.running_mean.fill_(3.0)
    one = randomised(model, ["fc", "layer4.1"], seed=0)
    assert not one.training
    assert not torch.equal(one.fc.weight, model.fc.weight)
    assert not torch.equal(one.layer4[1].conv1.weight, model.layer4[1].conv1.weight)
    assert torch.equal(one.layer4[0].conv1.weight, model.layer4[0].conv1.weight)
    # BatchNorm: weights and running statistics back to their initial values
    assert torch.equal(one.layer4[1].bn1.running_mean, torch.zeros(512))
    assert torch.equal(one.layer3[1].bn1.running_mean, torch.full((256,), 3.0))
    assert torch.equal(model.layer4[1].bn1.running_mean, torch.full((512,), 3.0))
    # a block's random weights do not depend on the other blocks chosen
    alone = randomised(model, ["layer4.1"], seed=0)
    assert torch.equal(alone.layer4[1].conv1.weight, one.layer4[1].conv1.weight)
    assert torch.equal(alone.fc.weight, model.fc.weight)
    other = randomised(model, ["layer4.1"], seed=1)
    assert not torch.equal(other.layer4[1].conv1.weight, one.layer4[1].conv1.weight)


def test_independent_randomisation_changes_one_block_at_a_time(tiny, batch):
    """Step k's model differs from the trained one in block k only, with the weights the
    cascade gives that block; the first step (the output layer) is the cascade's."""
    trained = {k: v.clone() for k, v in tiny.state_dict().items()}
    changed: list[set[str]] = []

    def explain(model, x, targets):
        state = model.state_dict()
        changed.append(
            {k.rsplit(".", 1)[0] for k in state if not torch.equal(state[k], trained[k])}
        )
        return tiny_explain(model, x, targets)

    targets = torch.tensor([0, 1, 2])
    rows = independent_randomisation(tiny, batch, targets, explain, seed=2)
    assert changed == [set(), {"fc"}, {"features.2"}, {"features.0"}]
    assert all(torch.equal(v, trained[k]) for k, v in tiny.state_dict().items())
    cascade = cascading_randomisation(tiny, batch, targets, tiny_explain, seed=2)
    assert [r for r in rows if r["step"] <= 1] == [r for r in cascade if r["step"] <= 1]
    alone = randomised(tiny, ["features.0"], seed=2)
    both = randomised(tiny, ["fc", "features.2", "features.0"], seed=2)
    assert torch.equal(alone.features[0].weight, both.features[0].weight)
    assert torch.equal(alone.fc.weight, tiny.fc.weight)
    # each step's rows compare that step's maps with the trained ones
    last = independent_randomisation(tiny, batch, targets, tiny_explain, seed=2)
    maps, reference = tiny_explain(alone, batch, targets), tiny_explain(tiny, batch, targets)
    rho = [r["spearman"] for r in last if r["step"] == 3 and r["method"] == "gradcam"]
    expected = [
        spearman(maps["gradcam"][i].detach(), reference["gradcam"][i].detach()) for i in range(3)
    ]
    assert rho == pytest.approx(expected)


def test_a_map_that_ignores_the_model_keeps_spearman_one(tiny, batch):
    def explain(model, x, targets):
        return {"edges": sobel_edges(model, x), "shifted_mean": x.mean(1) + 0.3}

    for check in (cascading_randomisation, independent_randomisation):
        rows = check(tiny, batch, torch.tensor([0, 1, 2]), explain)
        assert len(rows) == 4 * 2 * 3  # steps (trained + 3) x methods x images
        assert all(r["spearman"] == 1.0 and r["ssim"] == pytest.approx(1.0) for r in rows)


def test_gradcam_falls_apart_when_the_weights_are_destroyed(small_resnet):
    model, x = small_resnet
    with torch.no_grad():
        targets = model(x).argmax(1)

    def explain(m, x, targets):
        maps = cam_maps(m, x, targets, ["layer4"], ["gradcam"], "fc")
        return {"gradcam": maps[("gradcam", "layer4")]}

    curve = summary(cascading_randomisation(model, x, targets, explain))["gradcam"]
    assert [(s, b) for s, b, *_ in curve] == list(enumerate(["none", *RESNET18_STEPS]))
    # measured (seed 0, 4x4 maps, 3 images): spearman 1, 0.22, 0.12, -0.21 ... -0.04
    # at steps none, fc, layer4.1, layer4.0 ... conv1+bn1; ssim 0.00 at fc, -0.01 at the end
    by_block = {b: (r, s) for _, b, r, s in curve}
    assert by_block["none"] == (1.0, pytest.approx(1.0))
    assert by_block["fc"][0] < 0.5 and by_block["layer4.0"][0] < 0.5
    assert by_block["conv1+bn1"][0] < 0.5 and by_block["conv1+bn1"][1] < 0.5


@pytest.mark.parametrize("variant", [cascading_randomisation, independent_randomisation])
def test_explaining_every_third_step_keeps_the_full_cascade_s_points(small_resnet, variant):
    """The fast preset explains at every third step: the blocks are still re-initialised
    one by one, so each step explained gives exactly the rows of the full cascade (here
    every third of ResNet-18's 10 steps: 1, 4, 7 and the last)."""
    model, x = small_resnet
    with torch.no_grad():
        targets = model(x).argmax(1)

    def explain(m, x, targets):
        cam = cam_maps(m, x, targets, ["layer4"], ["gradcam"], "fc")[("gradcam", "layer4")]
        return {"gradcam": cam, "saliency": techniques.get("saliency").run(m, x, targets)}

    full = variant(model, x, targets, explain, seed=5)
    calls = []
    sparse = variant(model, x, targets, lambda *a: calls.append(1) or explain(*a), seed=5, every=3)
    assert sorted({r["step"] for r in sparse}) == [0, 1, 4, 7, 10] and len(calls) == 5
    assert {r["block"] for r in sparse if r["step"] == 10} == {RESNET18_STEPS[-1]}
    assert sparse == [r for r in full if r["step"] in (0, 1, 4, 7, 10)]


@pytest.mark.parametrize("shape", [(56, 56), (7, 7), (5, 9), (4, 4), (3, 9)])
def test_batched_similarities_match_scipy_and_skimage(shape):
    """All pairs at once give what scipy's spearmanr (average ranks) and skimage's SSIM
    (uniform window, data_range 1) give pair by pair, ties and signs included."""
    from scipy import stats
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    now = np.round(rng.normal(size=(6, *shape)), 1)  # rounding: many exact ties
    then = np.round(rng.normal(size=(6, *shape)), 1)
    then[1] = -now[1]  # same magnitudes
    then[2] = now[2] + 0.3 * rng.normal(size=shape)
    now[3] = np.maximum(now[3], 0)  # a rectified map: a large tie at zero
    rho, ss = similarities(now, then)
    for i in range(len(now)):
        a, b = np.abs(now[i]), np.abs(then[i])
        expected = 1.0 if np.array_equal(a, b) else stats.spearmanr(a.ravel(), b.ravel())[0]
        assert rho[i] == pytest.approx(expected, abs=1e-12)
        unit = [(m - m.min()) / (m.max() - m.min()) for m in (a, b)]
        window = min(7, min(shape) if min(shape) % 2 else min(shape) - 1)
        reference = structural_similarity(*unit, data_range=1.0, win_size=window)
        assert ss[i] == pytest.approx(reference, abs=1e-12)


def test_constant_and_small_maps_give_finite_values():
    rng = np.random.default_rng(0)
    flat, noise = np.zeros((5, 5)), rng.random((5, 5))
    assert spearman(flat, flat) == 1.0  # nothing changed
    assert spearman(flat, noise) == 0.0 and spearman(noise, flat + 2.0) == 0.0
    assert ssim(flat, flat) == pytest.approx(1.0)
    assert np.isfinite(ssim(flat, noise))
    for shape in [(1, 1), (2, 5), (4, 4), (7, 7), (3, 9)]:
        a, b = rng.random(shape), rng.random(shape)
        assert ssim(a, a) == pytest.approx(1.0)
        assert np.isfinite(ssim(a, b)) and np.isfinite(spearman(a, b))


def test_magnitudes_are_compared():
    a = np.arange(16.0).reshape(4, 4) - 8.0
    assert spearman(a, -a) == 1.0 and ssim(a, -a) == pytest.approx(1.0)
    assert spearman(np.arange(9.0), np.arange(9.0)[::-1]) == pytest.approx(-1.0)


def test_constant_maps_in_a_cascade_are_finite(tiny, batch):
    def explain(model, x, targets):
        first = model.features[0].weight[0, 0, 0, 0].item()  # changes at the last step
        flat = torch.full((x.shape[0], 4, 4), first)
        return {"flat": flat, "ramp": torch.arange(16.0).reshape(4, 4) * first + flat}

    rows = cascading_randomisation(tiny, batch, torch.tensor([0, 1, 2]), explain)
    assert all(np.isfinite(r["spearman"]) and np.isfinite(r["ssim"]) for r in rows)
    flat = {r["step"]: r["spearman"] for r in rows if r["method"] == "flat"}
    assert flat == {0: 1.0, 1: 1.0, 2: 1.0, 3: 0.0}  # two different flat maps: no ranking


def test_summary_averages_images_per_step():
    rows = [
        {"step": s, "block": b, "method": "m", "image": i, "spearman": v, "ssim": v / 2}
        for s, b, values in [(1, "fc", [0.2, 0.4]), (0, "none", [1.0, 1.0])]
        for i, v in enumerate(values)
    ]
    assert summary(rows) == {
        "m": [(0, "none", 1.0, 0.5), (1, "fc", pytest.approx(0.3), pytest.approx(0.15))]
    }


def test_random_logit_separates_class_blind_maps_from_class_maps(tiny, batch):
    """Sixt et al. 2020: a class-independent map (edges) is identical for any class; the
    tiny net's CAM weights differ per class, so its map for another class differs. The
    other class is never the target, and a seed repeats the draw."""
    targets = torch.tensor([0, 1, 2])

    def explain(model, x, targets):
        maps = cam_maps(model, x, targets, ["features.2"], ["cam"], "fc")
        return {"cam": maps[("cam", "features.2")], "edges": sobel_edges(model, x)}

    rows = random_logit(tiny, batch, targets, explain, seed=1)
    assert len(rows) == 2 * 3
    assert all(r["other"] != int(targets[r["image"]]) for r in rows)
    edges = [r for r in rows if r["method"] == "edges"]
    assert all(r["spearman"] == 1.0 and r["ssim"] == pytest.approx(1.0) for r in edges)
    cams = [r for r in rows if r["method"] == "cam"]
    assert max(r["spearman"] for r in cams) < 0.99
    assert random_logit(tiny, batch, targets, explain, seed=1) == rows


@pytest.mark.parametrize("quality", ["fast", "paper"])
def test_costly_methods_take_the_first_and_last_steps_of_the_run_cascade(tmp_path, quality):
    """In a run, RISE and Occlusion (hundreds of passes a map) are checked on the first
    image after the cascade's last step (paper preset: its first step too), labelled as the
    cascade labels them."""
    import pandas as pd

    from reportgen.cli import main

    out = tmp_path / "run"
    args = ["--data", "synthetic", "--limit", "4", "--methods", "gradcam,rise,occlusion"]
    args += ["--quality", quality]
    args += ["--set", "rise.masks=16", "--set", "occlusion.stride=32", "--metrics", "sanity"]
    assert main(["run", "--out", str(out), *args]) == 0
    sanity = pd.read_csv(out / "data" / "sanity.csv")
    cascade = sanity[sanity.method.str.startswith("gradcam")].drop_duplicates("step")
    for method in ("rise@input", "occlusion@input"):
        rows = sanity[sanity.method == method]
        assert rows.image.nunique() == 1
        first = [1] if quality == "paper" else []
        assert sorted(rows.step) == [0, *first, cascade.step.max()]
        labels = dict(zip(cascade.step, cascade.block, strict=True))
        assert all(labels[s] == b for s, b in zip(rows.step, rows.block, strict=True))
        assert rows[rows.step == 0].spearman.item() == 1.0


def test_the_run_s_stored_maps_are_the_check_s_step_zero(tmp_path, monkeypatch):
    """The trained model's maps are the ones the run stored, not made again: the check
    explains the trained (folded) model once, for the random-logit test's other classes,
    and every randomised model once."""
    from collections import Counter

    from reportgen.cli import main
    from reportgen.learned import sanity as check

    models = []
    real = check.compute

    def spy(model, *args, **kwargs):
        models.append(model)  # kept: no id reused
        return real(model, *args, **kwargs)

    monkeypatch.setattr(check, "compute", spy)
    args = ["--data", "synthetic", "--limit", "4", "--methods", "gradcam,saliency"]
    assert main(["run", "--out", str(tmp_path / "run"), *args, "--metrics", "sanity"]) == 0
    assert models and max(Counter(id(m) for m in models).values()) == 1
