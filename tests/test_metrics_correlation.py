"""Faithfulness correlation (Bhatt et al. 2020): by hand, and against Quantus with the
same random subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.metrics.correlation import (
    faithfulness_correlation,
    infidelity,
    random_subsets,
    square_removals,
    without,
)


def test_subsets_and_black_images():
    rng = np.random.default_rng(0)
    subsets = random_subsets(100, 7, rng, share=0.1)
    assert subsets.shape == (7, 10)
    assert all(len(set(row)) == 10 for row in subsets)  # without replacement
    image = np.ones((10, 10, 3))
    out = without(image, subsets)
    assert out.shape == (7, 10, 10, 3)
    for run, row in enumerate(subsets):
        flat = out[run].reshape(100, 3)
        assert (flat[row] == 0).all() and flat.sum() == 3 * 90


def test_by_hand():
    saliency = np.arange(4.0).reshape(2, 2)
    subsets = np.array([[0, 1], [2, 3], [1, 3]])  # sums 1, 5, 4
    assert faithfulness_correlation(saliency, subsets, np.array([0.1, 0.5, 0.4])) == (
        pytest.approx(1.0)
    )
    assert faithfulness_correlation(saliency, subsets, np.array([0.5, 0.1, 0.2])) == (
        pytest.approx(-1.0)
    )
    # a flat map predicts nothing
    assert faithfulness_correlation(np.ones((2, 2)), subsets, np.array([0.1, 0.5, 0.4])) == 0.0


class Linear(torch.nn.Module):
    """Two classes from a 1 x 6 x 6 image; class 0's logit is a weighted pixel sum."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(2, 36))

    def forward(self, x):
        return x.flatten(1) @ self.w.T


def test_agrees_with_quantus_on_the_same_subsets(monkeypatch):
    quantus = pytest.importorskip("quantus")
    model = Linear().eval()
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (3, 1, 6, 6)).astype(np.float32)
    x[:, 0, 0, 0] = 0.0  # Quantus's "black" is the image's minimum: make it 0 as ours
    y = np.array([0, 1, 0])
    a = rng.normal(0, 1, (3, 1, 6, 6)).astype(np.float32)
    runs, size = 30, 5
    rng = np.random.default_rng(3)
    drawn = [[rng.choice(36, size, replace=False) for _ in x] for _ in range(runs)]
    queue = [row for per_run in drawn for row in per_run]  # Quantus: runs outer, images inner
    monkeypatch.setattr(np.random, "choice", lambda *args, **kwargs: queue.pop(0))
    theirs = quantus.FaithfulnessCorrelation(
        nr_runs=runs, subset_size=size, perturb_baseline="black", normalise=False, abs=False,
        return_aggregate=False, disable_warnings=True,
    )(model=model, x_batch=x, y_batch=y, a_batch=a.copy(), softmax=True, device="cpu")  # fmt: skip
    assert queue == []

    def probabilities(images: np.ndarray) -> np.ndarray:  # [n, 6, 6, 1] -> softmax
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(images).permute(0, 3, 1, 2)), 1).numpy()

    ours = []
    for i in range(len(x)):
        subsets = np.stack([drawn[r][i] for r in range(runs)])
        image = x[i].transpose(1, 2, 0)
        full = probabilities(image[None])[0, y[i]]
        drops = full - probabilities(without(image, subsets))[:, y[i]]
        ours.append(faithfulness_correlation(a[i, 0], subsets, drops))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_square_removals():
    rng = np.random.default_rng(0)
    image = np.full((14, 14, 3), 0.5)
    perturbed, removed = square_removals(image, 5, rng)
    assert perturbed.shape == (5, 14, 14, 3) and removed.shape == (5, 14, 14)
    for p, r in zip(perturbed, removed, strict=True):
        black = (p == 0).all(-1)
        assert black.sum() == 4  # side round(14 / 7) = 2
        np.testing.assert_allclose(r, black * 1.5)  # 0.5 per channel, summed


def test_infidelity_by_hand():
    removed = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])  # three perturbations
    saliency = np.array([[2.0, 1.0]])
    # a = 2, 1, 3; drops proportional to a: the map predicts them exactly
    assert infidelity(saliency, removed, np.array([0.2, 0.1, 0.3])) == pytest.approx(0.0)
    # a flat map predicts only drops proportional to the squares' sums
    assert infidelity(np.zeros((1, 2)), removed, np.array([0.2, 0.1, 0.3])) == 1.0


def test_infidelity_agrees_with_captum_normalised():
    """captum.metrics.infidelity(normalize=True) with the same perturbations, the map
    broadcast over colour channels; ours divides by the drops' mean square."""
    from captum.metrics import infidelity as captum_infidelity

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 1, (8, 8, 3)).astype(np.float32)
    saliency = rng.normal(0, 1, (8, 8)).astype(np.float32)
    runs, target = 12, 1
    perturbed, removed = square_removals(image, runs, np.random.default_rng(5), share=3 / 8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    batch = torch.from_numpy(perturbed).permute(0, 3, 1, 2)
    perturbations = x - batch

    def perturb(inputs):  # captum draws one perturbation per call: hand out ours in order
        i = perturb.calls
        perturb.calls += 1
        return perturbations[i : i + 1], batch[i : i + 1]

    perturb.calls = 0

    def forward(inputs):
        return torch.softmax(model(inputs), 1)

    attribution = torch.from_numpy(saliency)[None, None].expand(1, 3, 8, 8)
    theirs = captum_infidelity(
        forward, perturb, x, attribution, target=target, n_perturb_samples=runs,
        max_examples_per_batch=1, normalize=True,
    ).item()  # fmt: skip
    with torch.no_grad():
        probs = forward(torch.cat([x, batch])).numpy()[:, target]
    drops = probs[0] - probs[1:]
    ours = infidelity(saliency, removed, drops)
    assert ours * (drops**2).mean() == pytest.approx(theirs, rel=1e-4)
