"""RISE deletion / insertion and ROAD, on fake models whose output is known exactly."""

import numpy as np
import pytest
from scipy import ndimage

from evaluation.metrics import (
    insertion_deletion,
    noisy_linear_impute,
    rise_blur,
    rise_kernel,
    road,
    road_order,
)


class MeanModel:
    """Two classes: p0 = the image's mean brightness, p1 = 1 - p0. Records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, images):
        images = np.asarray(images)
        self.calls.append(images.copy())
        p0 = images.reshape(len(images), -1).mean(1)
        return np.stack([p0, 1 - p0], 1)


def grey(values):
    """A [H, W, 3] image with the same value in every channel."""
    return np.repeat(np.asarray(values, dtype=float)[..., None], 3, axis=-1)


IMAGE = grey([[0.8, 0.4], [0.2, 0.6]])
SALIENCY = np.array([[1.0, 4.0], [3.0, 2.0]])  # order: (0,1)=.4, (1,0)=.2, (1,1)=.6, (0,0)=.8


def test_deletion_curve_and_auc_by_hand():
    model = MeanModel()
    curve = insertion_deletion(model, IMAGE, SALIENCY, 0, mode="deletion", step=1)
    # means as pixels are zeroed: 2.0/4, 1.6/4, 1.4/4, 0.8/4, 0
    assert curve.values == pytest.approx([0.5, 0.4, 0.35, 0.2, 0.0])
    assert curve.fractions == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    # trapezoid: 0.25 * (0.5/2 + 0.4 + 0.35 + 0.2 + 0/2)
    assert curve.auc == pytest.approx(0.3)
    assert len(model.calls) == 1 and model.calls[0].shape == (5, 2, 2, 3)  # one batch
    # the other class's curve is the complement
    assert insertion_deletion(
        MeanModel(), IMAGE, SALIENCY, 1, mode="deletion", step=1
    ).auc == pytest.approx(0.7)


def test_insertion_curve_on_a_constant_substrate():
    model = MeanModel()
    curve = insertion_deletion(model, IMAGE, SALIENCY, 0, mode="insertion", step=1, substrate=0.1)
    # start all 0.1, then .4, .2, .6, .8 put back: 0.4/4, 0.7/4, 0.8/4, 1.3/4, 2.0/4
    assert curve.values == pytest.approx([0.1, 0.175, 0.2, 0.325, 0.5])
    assert curve.auc == pytest.approx(0.25 * (0.05 + 0.175 + 0.2 + 0.325 + 0.25))
    assert np.allclose(model.calls[0][-1], IMAGE)  # ends on the image itself


def test_partial_last_step_and_default_step():
    curve = insertion_deletion(MeanModel(), IMAGE, SALIENCY, 0, mode="deletion", step=3)
    # ceil(4 / 3) = 2 steps: 3 pixels, then the last 1
    assert curve.fractions == pytest.approx([0, 0.75, 1])
    assert curve.values == pytest.approx([0.5, 0.2, 0.0])
    assert curve.auc == pytest.approx(0.75 * 0.35 + 0.25 * 0.1)
    image = grey(np.ones((10, 20)))  # 200 pixels: 1 % rounds up to 2 pixels per step
    default = insertion_deletion(MeanModel(), image, np.ones((10, 20)), 0, mode="deletion")
    assert len(default.values) == 101 and default.fractions[1] == pytest.approx(0.01)


def test_spaced_steps_crowd_at_the_start_by_hand():
    """``spacing=2`` on 100 pixels in 4 steps of 25: point i at 100 · (i/4)² pixels (6.25
    rounds up to 7), the AUC the trapezoid over those shares; a curve that falls in
    its first pixels (a 0.9 drop over the first 10 %) is followed closer than by 4 even
    steps, measured against the 100-step curve."""
    image = grey(np.full((10, 10), 0.5))
    image[0, :] = 1.0  # the 10 brightest pixels: deleting them first drops p0 fast
    saliency = image[..., 0] + np.linspace(0, 1e-3, 100).reshape(10, 10)  # no ties
    spaced = insertion_deletion(MeanModel(), image, saliency, 0, mode="deletion", step=25,
                                spacing=2)  # fmt: skip
    assert spaced.fractions == pytest.approx([0, 0.07, 0.25, 0.57, 1.0])
    assert spaced.auc == pytest.approx(np.trapezoid(spaced.values, spaced.fractions))
    even = insertion_deletion(MeanModel(), image, saliency, 0, mode="deletion", step=25)
    fine = insertion_deletion(MeanModel(), image, saliency, 0, mode="deletion", step=1)
    assert abs(spaced.auc - fine.auc) < abs(even.auc - fine.auc) / 2
    # spacing 1 is RISE's even grid, and a spacing must be positive
    plain = insertion_deletion(MeanModel(), image, saliency, 0, mode="deletion", step=25,
                               spacing=1)  # fmt: skip
    assert plain.fractions == pytest.approx([0, 0.25, 0.5, 0.75, 1]) and plain.auc == even.auc
    with pytest.raises(ValueError, match="spacing"):
        insertion_deletion(MeanModel(), image, saliency, 0, mode="deletion", spacing=0)


def test_each_image_is_one_batch_unless_batch_size_is_given():
    model = MeanModel()
    whole = insertion_deletion(model, IMAGE, SALIENCY, 0, mode="deletion", step=1)
    chunked = MeanModel()
    parts = insertion_deletion(chunked, IMAGE, SALIENCY, 0, mode="deletion", step=1, batch_size=2)
    assert [len(c) for c in model.calls] == [5]
    assert [len(c) for c in chunked.calls] == [2, 2, 1]
    assert parts.values == pytest.approx(whole.values)


def test_ties_are_taken_in_raster_order():
    model = MeanModel()
    insertion_deletion(model, IMAGE, np.ones((2, 2)), 0, mode="deletion", step=1)
    first_gone = [np.argwhere(img[..., 0] == 0).tolist() for img in model.calls[0][1:3]]
    assert first_gone == [[[0, 0]], [[0, 0], [0, 1]]]


def test_insertion_defaults_to_the_rise_blur():
    model = MeanModel()
    image = grey(np.arange(12.0).reshape(3, 4) / 12)
    insertion_deletion(model, image, np.ones((3, 4)), 0, mode="insertion", step=4)
    assert np.allclose(model.calls[0][0], rise_blur(image))
    model = MeanModel()
    insertion_deletion(model, image, np.ones((3, 4)), 0, mode="deletion", step=4)
    assert np.allclose(model.calls[0][-1], 0.0)  # deletion ends on zeros
    model = MeanModel()
    mean_colour = np.array([0.485, 0.456, 0.406])
    insertion_deletion(model, image, np.ones((3, 4)), 0, mode="deletion", substrate=mean_colour)
    assert np.allclose(model.calls[0][-1], mean_colour)


def test_rise_blur_kernel_and_border():
    k = rise_kernel()
    assert k.shape == (11, 11) and k.sum() == pytest.approx(1.0)
    dirac = np.zeros((11, 11))
    dirac[5, 5] = 1
    assert np.allclose(k, ndimage.gaussian_filter(dirac, 5))  # RISE's gkern(11, 5)
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1])
    blurred = rise_blur(grey(np.full((20, 20), 0.5)))
    assert blurred[10, 10] == pytest.approx([0.5] * 3)  # >= 5 px from every edge: unchanged
    # zero padding: a corner keeps only the kernel's quarter that lies inside the image
    assert blurred[0, 0, 0] == pytest.approx(0.5 * k[5:, 5:].sum())


def test_insertion_deletion_rejects_bad_input():
    with pytest.raises(ValueError):
        insertion_deletion(MeanModel(), IMAGE, np.ones((3, 3)), 0, mode="deletion")
    with pytest.raises(ValueError):
        insertion_deletion(MeanModel(), IMAGE, SALIENCY, 0, mode="both")
    with pytest.raises(ValueError):
        insertion_deletion(MeanModel(), IMAGE, SALIENCY, 0, mode="deletion", step=0)
    with pytest.raises(ValueError):
        insertion_deletion(lambda x: np.ones((1, 2)), IMAGE, SALIENCY, 0, mode="deletion")


# --------------------------------------------------------------------------- ROAD


def test_imputation_centre_pixel_by_hand():
    image = np.array([[0.0, 1.0, 0.0], [1.0, 9.0, 1.0], [0.0, 1.0, 0.0]])[..., None]
    removed = np.zeros((3, 3), dtype=bool)
    removed[1, 1] = True
    out = noisy_linear_impute(image, removed, noise=0)
    # four sides at 1/6 each, four diagonals (value 0) at 1/12 each
    assert out[1, 1, 0] == pytest.approx(4 / 6)
    out[1, 1, 0] = 9.0
    assert np.array_equal(out, image)  # kept pixels untouched


def test_imputation_renormalises_at_the_border():
    image = np.array([[0.0, 0.3, 0.9], [0.6, 0.5, 0.2], [0.1, 0.4, 0.8]])[..., None]
    removed = np.zeros((3, 3), dtype=bool)
    removed[0, 0] = True
    # corner: right (1/6) 0.3, below (1/6) 0.6, diagonal (1/12) 0.5, over 5/12
    expected = (0.3 / 6 + 0.6 / 6 + 0.5 / 12) / (5 / 12)
    assert noisy_linear_impute(image, removed, noise=0)[0, 0, 0] == pytest.approx(expected)


def test_imputation_solves_removed_neighbours_together():
    image = np.array([[0.3, 5.0, 5.0, 0.9]])[..., None]  # one row: only left/right neighbours
    removed = np.array([[False, True, True, False]])
    # x = (a + y) / 2 and y = (x + b) / 2  ->  x = (2a + b) / 3, y = (a + 2b) / 3
    out = noisy_linear_impute(image, removed, noise=0)
    assert out[0, :, 0] == pytest.approx([0.3, 0.5, 0.7, 0.9])


def test_imputation_is_exact_on_constant_and_linear_images():
    rng = np.random.default_rng(1)
    constant = np.full((6, 7, 3), 0.25)
    removed = rng.random((6, 7)) < 0.7  # borders and corners included
    removed[0, 0] = False  # at least one pixel kept
    assert np.allclose(noisy_linear_impute(constant, removed, noise=0), constant)
    ys, xs = np.mgrid[0:6, 0:7]
    linear = np.stack([0.1 * ys + 0.05 * xs, 0.02 * xs, 1 - 0.1 * ys], axis=-1)
    interior = np.zeros((6, 7), dtype=bool)
    interior[1:5, 1:6] = True  # symmetric weights reproduce a linear image away from the border
    assert np.allclose(noisy_linear_impute(linear, interior, noise=0), linear)


def test_imputation_noise_is_seeded_and_only_on_removed_pixels():
    image = np.full((20, 20, 3), 0.5)
    removed = np.zeros((20, 20), dtype=bool)
    removed[2:18, 2:18] = True
    a = noisy_linear_impute(image, removed, noise=0.01, seed=3)
    assert np.array_equal(a, noisy_linear_impute(image, removed, noise=0.01, seed=3))
    assert not np.array_equal(a, noisy_linear_impute(image, removed, noise=0.01, seed=4))
    assert np.array_equal(a[~removed], image[~removed])
    deviation = a[removed] - 0.5
    assert 0.008 < deviation.std() < 0.012 and abs(deviation.mean()) < 0.002
    with pytest.raises(ValueError):
        noisy_linear_impute(image, np.ones((20, 20), dtype=bool))


def test_road_order_sums_channels_and_breaks_ties_by_seeded_noise():
    sal = np.arange(12.0).reshape(3, 4)
    assert road_order(sal).tolist() == list(range(11, -1, -1))
    assert road_order(np.stack([sal, sal], -1)).tolist() == list(range(11, -1, -1))
    flat = np.ones((3, 4))
    assert road_order(flat, 5).tolist() == road_order(flat, 5).tolist()
    assert sorted(road_order(flat, 5).tolist()) == list(range(12))


def test_road_morf_and_lerf_remove_the_right_pixels_in_one_call():
    rng = np.random.default_rng(0)
    image = rng.random((5, 5, 3))
    sal = np.arange(25.0).reshape(5, 5)  # pixel i has relevance i
    fractions = (0.2, 0.4)
    for order, gone in (("morf", [range(20, 25), range(15, 25)]), ("lerf", [range(5), range(10)])):
        model = MeanModel()
        result = road(model, image, sal, 0, order=order, fractions=fractions, noise=0)
        assert len(model.calls) == 1 and model.calls[0].shape == (2, 5, 5, 3)
        for batch_image, indices in zip(model.calls[0], gone, strict=True):
            removed = np.zeros(25, dtype=bool)
            removed[list(indices)] = True
            expected = noisy_linear_impute(image, removed.reshape(5, 5), noise=0)
            assert np.allclose(batch_image, expected)
        means = [img.mean() for img in model.calls[0]]
        assert result.values == pytest.approx(means)
        assert result.mean == pytest.approx(np.mean(means))
        assert result.fractions == pytest.approx(fractions)
        assert result.correct.tolist() == [m > 0.5 for m in means]


def test_road_is_reproducible_for_a_seed_and_checks_fractions():
    image = np.random.default_rng(2).random((6, 6, 3))
    sal = np.random.default_rng(3).random((6, 6))
    a = road(MeanModel(), image, sal, 0, seed=7)
    assert len(a.values) == 9
    assert np.array_equal(a.values, road(MeanModel(), image, sal, 0, seed=7).values)
    assert not np.array_equal(a.values, road(MeanModel(), image, sal, 0, seed=8).values)
    with pytest.raises(ValueError):
        road(MeanModel(), image, sal, 0, fractions=(0.5, 1.0))
    with pytest.raises(ValueError):
        road(MeanModel(), image, sal, 0, order="random")
