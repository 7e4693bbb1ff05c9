"""Pointing game, energy pointing game, box localisation and mask IoU, by hand."""

import numpy as np
import pytest

from evaluation.metrics import (
    box_localisation,
    energy_pointing_game,
    largest_component_box,
    mask_iou,
    pointing_game,
    pointing_game_hit,
    relevance_mass,
    relevance_rank,
)


def peak(shape, y, x):
    m = np.zeros(shape)
    m[y, x] = 1.0
    return m


def test_pointing_game_hit_uses_torchray_strict_distance():
    box = [(30, 0, 40, 40)]  # columns 30..39
    sal = peak((40, 40), 20, 20)  # 10 px left of the box
    assert pointing_game_hit(sal, box) is True  # 10 < 15
    assert pointing_game_hit(sal, box, tolerance=11) is True
    assert pointing_game_hit(sal, box, tolerance=10) is False  # exactly 10 px away: a miss
    assert pointing_game_hit(peak((40, 40), 20, 35), box, tolerance=0) is False  # 0 < 0 fails
    assert pointing_game_hit(peak((40, 40), 20, 35), box, tolerance=1) is True  # inside
    # diagonal distance: nearest box pixel of (0, 0) in a box at (3, 4) is 5 px away
    assert pointing_game_hit(peak((40, 40), 0, 0), [(3, 4, 10, 10)], tolerance=5) is False
    assert pointing_game_hit(peak((40, 40), 0, 0), [(3, 4, 10, 10)], tolerance=5.01) is True


def test_pointing_game_hit_ties_all_or_first():
    sal = np.zeros((40, 40))
    sal[0, 0] = sal[35, 35] = 1.0  # two maxima: (0, 0) far from the box, (35, 35) inside
    box = [(30, 30, 40, 40)]
    assert pointing_game_hit(sal, box) is False  # not every maximum is within tolerance
    assert pointing_game_hit(sal, box, ties="first") is False  # first in raster order: (0, 0)
    sal[0, 0], sal[39, 39] = 0.0, 1.0
    assert pointing_game_hit(sal, box) is True  # both maxima inside
    sal = np.zeros((40, 40))
    sal[31, 31] = sal[39, 0] = 1.0  # first in raster order inside, second 30 px away
    assert pointing_game_hit(sal, box) is False
    assert pointing_game_hit(sal, box, ties="first") is True
    with pytest.raises(ValueError):
        pointing_game_hit(sal, box, ties="any")


@pytest.mark.parametrize("value", [0.0, 0.7, -2.0])
def test_pointing_game_constant_and_all_zero_maps(value):
    flat = np.full((40, 40), value)
    assert pointing_game_hit(flat, [(0, 0, 10, 10)]) is False  # every pixel is a maximum
    assert pointing_game_hit(flat, [(0, 0, 40, 40)]) is True  # box covering the image
    assert pointing_game_hit(flat, [(0, 0, 10, 10)], ties="first") is True  # (0, 0) is in it


def test_pointing_game_image_smaller_than_tolerance():
    box = [(0, 0, 1, 1)]  # one corner pixel
    # farthest pixel of a 10 x 10 image is sqrt(81 + 81) = 12.7 < 15 px away
    assert pointing_game_hit(peak((10, 10), 9, 9), box) is True
    assert pointing_game_hit(np.zeros((10, 10)), box) is True
    assert pointing_game_hit(peak((10, 10), 9, 9), box, tolerance=12) is False


def test_pointing_game_needs_a_box_and_a_finite_map():
    with pytest.raises(ValueError):
        pointing_game_hit(np.zeros((5, 5)), [(10, 10, 20, 20)])  # box outside the map
    bad = np.zeros((5, 5))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError):
        pointing_game_hit(bad, [(0, 0, 5, 5)])


def test_pointing_game_is_mean_of_per_class_accuracy():
    # class 0: 1 of 2; class 1: 1 of 1; class 2: 1 of 1 -> (0.5 + 1 + 1) / 3, not 3 / 4
    assert pointing_game([True, False, True, True], [0, 0, 1, 2]) == pytest.approx(250 / 3)
    assert pointing_game([False, False], ["cat", "dog"]) == 0.0
    with pytest.raises(ValueError):
        pointing_game([], [])
    with pytest.raises(ValueError):
        pointing_game([True], [0, 1])


def test_energy_pointing_game_by_hand():
    sal = np.array(
        [
            [1.0, 2.0, 0.0, 0.0],
            [3.0, 4.0, 0.0, -5.0],  # the negative value is rectified away
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 10.0],
        ]
    )
    box = [(0, 0, 2, 2)]  # the top-left 2 x 2 block: energy 10 of 20
    assert energy_pointing_game(sal, box) == pytest.approx(0.5)
    # union of overlapping boxes: the bottom-right pixel added once
    assert energy_pointing_game(sal, box + [(3, 3, 4, 4), (2, 2, 4, 4)]) == pytest.approx(1.0)
    assert energy_pointing_game(sal, [(0, 0, 4, 4)]) == pytest.approx(1.0)  # box covers image


def test_energy_pointing_game_flat_maps():
    assert energy_pointing_game(np.zeros((4, 4)), [(0, 0, 2, 2)]) == 0.0  # no energy: 0
    assert energy_pointing_game(-np.ones((4, 4)), [(0, 0, 2, 2)]) == 0.0
    # constant map: the box's share of the area, 4 of 16 pixels
    assert energy_pointing_game(np.full((4, 4), 3.0), [(0, 0, 2, 2)]) == pytest.approx(0.25)


def two_blobs():
    sal = np.full((10, 10), 0.1)  # below 15 % of the maximum: off
    sal[1:4, 1:4] = 1.0  # 9 pixels, the largest component
    sal[7:9, 7:9] = 0.5  # 4 pixels
    return sal


def test_box_localisation_by_hand():
    sal = two_blobs()
    assert largest_component_box(sal) == (1, 1, 4, 4)
    # ground truth one column wider: IoU 9 / 12
    assert box_localisation(sal, [(1, 1, 5, 4)]) == (pytest.approx(0.75), True)
    # a big box: 9 / 36, a miss; the best of several boxes counts
    assert box_localisation(sal, [(0, 0, 6, 6)]) == (pytest.approx(0.25), False)
    assert box_localisation(sal, [(0, 0, 6, 6), (1, 1, 4, 4)]) == (pytest.approx(1.0), True)
    # at 60 % of the maximum the 0.5 blob goes too; at 5 % everything is one component
    assert largest_component_box(sal, 0.6) == (1, 1, 4, 4)
    assert largest_component_box(sal, 0.05) == (0, 0, 10, 10)


def test_box_localisation_threshold_is_strict_and_components_8_connected():
    sal = np.zeros((6, 6))
    sal[0, 0] = sal[1, 1] = sal[2, 2] = 1.0  # a diagonal: one 8-connected component
    sal[5, 0] = sal[5, 1] = 0.5  # exactly 50 % of the maximum
    assert largest_component_box(sal, 0.5) == (0, 0, 3, 3)
    assert box_localisation(sal, [(0, 0, 3, 3)], fraction=0.5) == (pytest.approx(1.0), True)
    # at 0.4 the two half-value pixels are on, but the diagonal (3 pixels) is still largest
    assert largest_component_box(sal, 0.4) == (0, 0, 3, 3)


def test_box_localisation_flat_maps():
    assert box_localisation(np.zeros((8, 8)), [(0, 0, 8, 8)]) == (0.0, False)  # selects nothing
    assert box_localisation(-np.ones((8, 8)), [(0, 0, 8, 8)]) == (0.0, False)
    # a constant positive map selects the whole image: its box is the image
    assert box_localisation(np.ones((8, 8)), [(0, 0, 8, 8)]) == (1.0, True)  # box covers image
    assert box_localisation(np.ones((8, 8)), [(0, 0, 8, 4)]) == (0.5, True)  # IoU 0.5 is a hit
    assert box_localisation(np.ones((8, 8)), [(0, 0, 7, 4)]) == (pytest.approx(28 / 64), False)
    with pytest.raises(ValueError):
        box_localisation(np.ones((8, 8)), [(20, 20, 30, 30)])


def test_mask_iou_by_hand():
    sal = np.zeros((4, 4))
    sal[0, :] = 1.0  # 4 pixels on
    sal[1, 0] = 0.1  # below 15 %: off
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 2:] = mask[1, 2:] = True  # 4 pixels, 2 shared
    assert mask_iou(sal, mask) == pytest.approx(2 / 6)
    assert mask_iou(sal, mask, threshold=0.05) == pytest.approx(2 / 7)  # the 0.1 pixel joins
    assert mask_iou(sal, sal > 0.5) == 1.0
    assert mask_iou(np.zeros((4, 4)), mask) == 0.0  # nothing selected
    assert mask_iou(np.ones((4, 4)), mask) == pytest.approx(4 / 16)  # constant: whole image
    with pytest.raises(ValueError):
        mask_iou(sal, np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError):
        mask_iou(sal, np.ones((3, 4), dtype=bool))


def test_relevance_mass_and_rank_by_hand():
    sal = np.zeros((4, 4))
    sal[0, :] = [4.0, 3.0, 2.0, 1.0]
    sal[3, 3] = -5.0  # negative evidence: not mass, and ranked last
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 2:] = mask[1, 2:] = True  # 4 pixels: holds the 2.0 and 1.0
    assert relevance_mass(sal, mask) == pytest.approx(3 / 10)
    # K = 4: the top 4 pixels are row 0, two of them in the mask
    assert relevance_rank(sal, mask) == pytest.approx(2 / 4)
    assert relevance_mass(sal, np.ones((4, 4), dtype=bool)) == 1.0  # mask covers the image
    assert relevance_rank(sal, np.ones((4, 4), dtype=bool)) == 1.0
    # edge cases: all zero / constant maps
    assert relevance_mass(np.zeros((4, 4)), mask) == 0.0  # no positive value: worst
    assert relevance_rank(np.zeros((4, 4)), mask) == pytest.approx(4 / 16)  # all tied: K/N
    assert relevance_mass(np.ones((4, 4)), mask) == pytest.approx(4 / 16)
    assert relevance_rank(np.full((4, 4), 7.0), mask) == pytest.approx(4 / 16)
    # ties at the K-th value share the remaining places: K = 2, top value 9 in the mask,
    # then three pixels tied at 1 (one in the mask) share one place
    tie = np.zeros((2, 4))
    tie[0] = [9.0, 1.0, 1.0, 1.0]
    small = np.zeros((2, 4), dtype=bool)
    small[0, :2] = True
    assert relevance_rank(tie, small) == pytest.approx((1 + 1 / 3) / 2)
    with pytest.raises(ValueError):
        relevance_mass(sal, np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError):
        relevance_rank(sal, np.ones((3, 4), dtype=bool))


def test_pointing_game_equals_the_distance_transform_of_the_box_raster():
    """The hit test measures, box by box, the distance from each maximum to the boxes'
    raster; a Euclidean distance transform of the whole raster gives the same answer
    (random maps with ties, boxes partly or wholly outside the map, both tie rules)."""
    from scipy import ndimage

    from evaluation.metrics import box_mask, pointing_game_hit

    rng = np.random.default_rng(0)
    checked = 0
    for case in range(600):
        h, w = (int(v) for v in rng.integers(5, 40, 2))
        m = np.round(rng.random((h, w)), 1) if case % 3 else np.zeros((h, w))
        boxes = []
        for _ in range(int(rng.integers(1, 4))):
            (x0, x1), (y0, y1) = (
                sorted(rng.uniform(-5, w + 5, 2)),
                sorted(rng.uniform(-5, h + 5, 2)),
            )
            boxes.append((x0, y0, x1, y1))
        region = box_mask((h, w), boxes)
        if not region.any():
            continue
        tolerance = float(rng.uniform(0, 12))
        distance = ndimage.distance_transform_edt(~region)
        first = np.zeros(m.shape, dtype=bool)
        first[np.unravel_index(np.argmax(m), m.shape)] = True
        for ties, at in (("all", m == m.max()), ("first", first)):
            expected = bool((distance[at] < tolerance).all())
            assert pointing_game_hit(m, boxes, tolerance, ties) == expected, (case, ties)
            checked += 1
    assert checked > 500


def test_a_box_wholly_above_the_map_covers_nothing():
    from evaluation.metrics import box_mask

    assert not box_mask((8, 8), [(1.0, -4.0, 5.0, -2.0)]).any()  # not rows 0..5 (end -2)
