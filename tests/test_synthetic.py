"""The synthetic set: exact, deterministic ground truth; and the committed CNN that reads it."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from scipy import ndimage

from reportgen import synthetic_model
from reportgen.sources import synthetic
from reportgen.sources.synthetic import CLASSES, SIZE, Sample, sample

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
GOLDEN = "e8482307d58569385ba215ab7f3a205cd47dd10067f580c833e85326d04a43a8"  # see its test


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return [sample(synthetic.EVAL_SEED, i) for i in range(200)]


def centres(samples: list[Sample]) -> np.ndarray:
    """Box centres of every instance, [M, 2] as (x, y) in px."""
    return np.array([[(x0 + x1) / 2, (y0 + y1) / 2] for s in samples for x0, y0, x1, y1 in s.boxes])


def test_same_arguments_same_image():
    a, b, other = sample(1, 5), sample(1, 5), sample(1, 6)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.mask, b.mask)
    assert a.boxes == b.boxes and a.label == b.label
    assert not np.array_equal(a.rgb, other.rgb)
    assert not np.array_equal(sample(2, 5).rgb, a.rgb)  # the seed matters too


def test_images_are_those_the_weights_were_trained_and_scored_on():
    """A checksum of the first evaluation images: a change to the drawing code, or a numpy
    whose random streams differ, would silently change every metric on this set."""
    digest = hashlib.sha256()
    for i in range(12):
        s = sample(synthetic.EVAL_SEED, i)
        digest.update(s.rgb.tobytes())
        digest.update(s.mask.tobytes())
    assert digest.hexdigest() == GOLDEN


def test_types_and_shapes():
    s = sample(0, 0)
    assert s.rgb.shape == (SIZE, SIZE, 3) and s.rgb.dtype == np.uint8
    assert s.mask.shape == (SIZE, SIZE) and s.mask.dtype == bool
    assert isinstance(s.label, int) and all(isinstance(v, int) for b in s.boxes for v in b)


def test_each_box_is_one_connected_component_of_the_mask(samples):
    for i, s in enumerate(samples):
        assert s.mask.any() and 0 <= s.label < len(CLASSES), i
        components, count = ndimage.label(s.mask, structure=EIGHT_CONNECTED)
        assert count == len(s.boxes), f"image {i}: {count} components, {len(s.boxes)} boxes"
        tight = [
            [xs.start, ys.start, xs.stop, ys.stop] for ys, xs in ndimage.find_objects(components)
        ]
        assert sorted(tight) == sorted(s.boxes), i


def test_classes_and_instances_are_mixed(samples):
    first = samples[:60]
    assert {s.label for s in first} == set(range(len(CLASSES)))
    share = np.mean([len(s.boxes) == 2 for s in first])
    assert 0.15 <= share <= 0.35, share
    assert {len(s.boxes) for s in samples} == {1, 2}


def test_objects_are_20_to_40_percent_of_the_side(samples):
    extent = np.array([max(x1 - x0, y1 - y0) for s in samples for x0, y0, x1, y1 in s.boxes])
    assert extent.min() >= 0.15 * SIZE and extent.max() <= 0.5 * SIZE
    assert 0.2 * SIZE <= np.median(extent) <= 0.4 * SIZE


def test_placement_is_spread_not_centred(samples):
    """A centre-bias map must not be a good guess: centres average out in the middle, but
    spread over most of the image."""
    xy = centres(samples)
    assert np.all(np.abs(xy.mean(axis=0) - SIZE / 2) <= 0.15 * SIZE), xy.mean(axis=0)
    assert np.all(xy.std(axis=0) >= 0.17 * SIZE), xy.std(axis=0)  # uniform on [22, 90]: 0.18
    near_middle = np.all(np.abs(xy - SIZE / 2) <= 0.1 * SIZE, axis=1).mean()
    assert near_middle < 0.15, near_middle


def test_a_centred_map_scores_near_chance(samples):
    """Share of a centred Gaussian's energy inside the mask, against the share a flat map
    puts there (the mask's area): close, so only a map that finds the object can do well."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    centred = np.exp(-((xx - SIZE / 2) ** 2 + (yy - SIZE / 2) ** 2) / (2 * (SIZE / 4) ** 2))
    in_mask = np.mean([centred[s.mask].sum() / centred.sum() for s in samples])
    flat = np.mean([s.mask.mean() for s in samples])
    assert in_mask < 1.6 * flat, (in_mask, flat)


def test_parse_and_render():
    assert synthetic.parse("synthetic:1:17") == (1, 17)
    assert np.array_equal(synthetic.render("synthetic:1:17"), sample(1, 17).rgb)
    assert np.array_equal(synthetic.mask("synthetic:1:17"), sample(1, 17).mask)


@pytest.mark.parametrize(
    "bad", ["synthetic:1", "synthetic:a:2", "synthetic:1:2:3", "synthetic:1:-2", "embedded:1:2", ""]
)
def test_parse_errors_name_the_source(bad):
    with pytest.raises(ValueError, match=f"'{bad}'"):
        synthetic.parse(bad)


def test_model_layers_fit_the_cam_setting():
    model = synthetic_model.SmallCNN().eval()
    modules = dict(model.named_modules())
    assert (
        synthetic_model.CAM_LAYER in modules
        and set(synthetic_model.FEATURE_LAYERS) <= modules.keys()
    )
    assert isinstance(model.classifier, torch.nn.Linear)
    seen = {}
    hook = modules[synthetic_model.CAM_LAYER].register_forward_hook(
        lambda _m, _i, out: seen.setdefault("out", out)
    )
    logits = model(torch.zeros(2, 3, SIZE, SIZE))
    hook.remove()
    assert logits.shape == (2, len(CLASSES))
    assert seen["out"].shape[2:] == (14, 14) and seen["out"].min() >= 0  # after the ReLU


def test_committed_weights_classify_the_evaluation_set():
    model = synthetic_model.load_model()
    assert not model.training
    assert synthetic_model.accuracy(model, synthetic.EVAL_IMAGES) >= 0.9


def test_load_model_from_a_path(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(synthetic_model.SmallCNN().state_dict(), path)
    assert isinstance(synthetic_model.load_model(str(path)), synthetic_model.SmallCNN)


def test_short_training_runs_and_repeats_exactly():
    threads, rng_state = torch.get_num_threads(), torch.random.get_rng_state()
    first, accuracy = synthetic_model.train(seed=0, images=64, epochs=1, progress=False)
    second, _ = synthetic_model.train(seed=0, images=64, epochs=1, progress=False)
    assert isinstance(first, synthetic_model.SmallCNN) and not first.training
    assert 0 <= accuracy <= 1
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # the global settings and random state are as before
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng_state)


def test_main_saves_a_small_state_dict(tmp_path, capsys):
    out = tmp_path / "w.pt"
    synthetic_model.main(["--out", str(out), "--images", "32", "--epochs", "1"])
    assert "held-out accuracy" in capsys.readouterr().out
    assert out.stat().st_size < 1_000_000
    synthetic_model.load_model(out)


@pytest.mark.slow
def test_default_training_reaches_the_committed_accuracy():
    _, accuracy = synthetic_model.train(progress=False)
    assert accuracy >= 0.9
