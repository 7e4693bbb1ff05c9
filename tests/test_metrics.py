"""Each metric against values computed by hand from the definitions in README's Metrics section."""

import numpy as np
import pytest

from evaluation.metrics import (
    average_drop,
    bootstrap_ci,
    explanation_images,
    group_mean,
    increase_in_confidence,
    loc_delta,
    masked_confidence,
    normalise_map,
    win_rate,
)


def test_average_drop_by_hand():
    full = [0.8, 0.5, 0.2]
    masked = [0.4, 0.6, 0.05]
    # (0.4/0.8 + 0 + 0.15/0.2) / 3 * 100 = (0.5 + 0 + 0.75) / 3 * 100
    assert average_drop(full, masked) == pytest.approx(125 / 3)


def test_increase_in_confidence_by_hand():
    assert increase_in_confidence([0.8, 0.5, 0.2, 0.3], [0.4, 0.6, 0.25, 0.3]) == pytest.approx(50)


def test_win_rate_is_strict_share():
    # A's drop smaller on images 0 and 2, tie on 3, larger on 1
    assert win_rate([10, 50, 0, 5], [20, 40, 30, 5]) == pytest.approx(50)
    with pytest.raises(ValueError):
        win_rate([1, 2], [1])


def test_loc_delta_by_hand():
    sal = np.zeros((10, 10))
    sal[2:6, 2:6] = 1.0  # 16 pixels at the maximum
    sal[8, 8] = 0.2  # one weak pixel outside the box
    box = [(2, 2, 7, 7)]  # x0, y0, x1, y1 -> 25 pixels, rows/cols 2..6
    # delta 0: 17 pixels on; 16 inside; 1 outside -> 16 / (25 + 1)
    assert loc_delta(sal, box, 0.0) == pytest.approx(16 / 26)
    # delta 0.25 drops the weak pixel -> 16 / 25
    assert loc_delta(sal, box, 0.25) == pytest.approx(16 / 25)


def test_loc_delta_uses_union_of_boxes():
    sal = np.ones((4, 4))
    sal[3, 3] = 0.0  # 15 pixels on after thresholding
    boxes = [(0, 0, 2, 2), (1, 1, 3, 3)]  # union of 4 + 4 - 1 = 7 pixels, all on
    assert loc_delta(sal, boxes, 0.5) == pytest.approx(7 / (7 + 8))


def test_explanation_image_is_map_times_image():
    images = np.full((1, 2, 2, 3), 0.5)
    sal = np.array([[[-1.0, 0.0], [2.0, 4.0]]])  # ReLU -> [0, 0, 2, 4] -> [0, 0, .5, 1]
    e = explanation_images(images, sal)
    assert np.allclose(e[0, :, :, 1], [[0, 0], [0.25, 0.5]])
    assert np.allclose(normalise_map(np.zeros((3, 3))), 0)


def test_masked_confidence_picks_each_items_target():
    def probabilities(x):
        # class 0 probability = mean brightness, class 1 = the rest
        p0 = x.reshape(len(x), -1).mean(1)
        return np.stack([p0, 1 - p0], 1)

    images = np.ones((2, 2, 2, 3))
    sal = np.array([[[0, 1], [1, 1]], [[0, 0], [0, 1]]], dtype=float)
    out = masked_confidence(probabilities, images, sal, [0, 1])
    assert out == pytest.approx([0.75, 0.75])


def test_bootstrap_ci_brackets_the_mean_and_is_deterministic():
    values = np.arange(100, dtype=float)
    lo, hi = bootstrap_ci(values)
    assert lo < values.mean() < hi
    assert (lo, hi) == bootstrap_ci(values)
    assert bootstrap_ci([3.0, 3.0]) == (3.0, 3.0)


def test_grouped_bootstrap_is_of_the_mean_of_group_means():
    values, groups = [100.0, 100.0, 100.0, 0.0], ["cat", "cat", "cat", "dog"]
    assert group_mean(values, groups) == 50.0
    lo, hi = bootstrap_ci(values, groups=groups)
    # a resample holding no dog (p = 0.75^4 = 32 %) gives 100, no cat (0.4 %) gives 0,
    # every other 50: so the 95 % interval is [50, 100], never beyond the values' range
    assert (lo, hi) == (50.0, 100.0)
    assert bootstrap_ci([7.0, 7.0, 7.0], groups=["a", "b", "b"]) == (7.0, 7.0)


def test_score_cam_mode_keeps_the_top_half_of_the_map():
    images = np.ones((1, 2, 2, 3))
    sal = np.array([[[0.0, 1.0], [2.0, 4.0]]])  # normalised [0, .25, .5, 1]: top 2 are .5, 1
    e = explanation_images(images, sal, mode="score-cam")
    assert np.allclose(e[0, :, :, 0], [[0, 0], [0.5, 1.0]])
    # the default is unchanged: the whole normalised map
    assert np.allclose(explanation_images(images, sal)[0, :, :, 0], [[0, 0.25], [0.5, 1.0]])
    with pytest.raises(ValueError):
        explanation_images(images, sal, mode="gradcam")


def test_score_cam_mode_counts_pixels_rounds_up_and_breaks_ties_in_raster_order():
    images = np.ones((1, 1, 3, 3))
    # normalised [0, .5, 1]; ceil(1.5) = 2 pixels kept: .5 and 1
    odd = explanation_images(images, np.array([[[2.0, 3.0, 4.0]]]), mode="score-cam")
    assert np.allclose(odd[0, 0, :, 0], [0, 0.5, 1.0])
    # three tied maxima, two kept: the first two in raster order
    images = np.ones((1, 2, 2, 3))
    tied = explanation_images(images, np.array([[[0.0, 1.0], [1.0, 1.0]]]), mode="score-cam")
    assert np.allclose(tied[0, :, :, 0], [[0, 1], [1, 0]])
    assert np.allclose(explanation_images(images, np.zeros((1, 2, 2)), mode="score-cam"), 0)


def test_masked_confidence_score_cam_mode():
    def probabilities(x):
        p0 = x.reshape(len(x), -1).mean(1)
        return np.stack([p0, 1 - p0], 1)

    images = np.ones((1, 2, 2, 3))
    sal = np.array([[[0.0, 1.0], [2.0, 4.0]]])
    # kept weights [0, 0, .5, 1] -> mean .375; the default keeps [0, .25, .5, 1] -> .4375
    assert masked_confidence(probabilities, images, sal, [0], mode="score-cam") == pytest.approx(
        [0.375]
    )
    assert masked_confidence(probabilities, images, sal, [0]) == pytest.approx([0.4375])
