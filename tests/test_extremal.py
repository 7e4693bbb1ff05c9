"""Extremal perturbation: the masks agree with TorchRay's ``extremal_perturbation`` (the
authors' code) on two architectures, the smooth mask's hand-written backward pass is the
derivative of its forward pass, and the blur pyramid reads the levels it should."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from reportgen.capture import preserved_state
from reportgen.techniques import extremal
from reportgen.techniques.extremal import (
    AREA_GROWTH,
    LEARNING_RATE,
    BlurPyramid,
    SmoothMask,
    _SoftMaximum,
    extremal_perturbation,
    optimise_masks,
)

from .conftest import assert_correlated, runner_up

torchray = pytest.importorskip("torchray.attribution.extremal_perturbation")

ITERATIONS = 300  # the mask has settled near its area (at 32 px, TorchRay's later steps,
# with λ in the thousands, amplify rounding differences into different oscillations)


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v2"])
def case(request):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, request.param)(weights=None, num_classes=10).eval()
    with torch.no_grad():  # logits of a trained model's scale, so the reward matters
        list(model.modules())[-1].weight.mul_(100.0)
    torch.manual_seed(1)
    return request.param, model, torch.rand(2, 3, 32, 32)


def test_masks_match_torchray(case):
    """TorchRay's schedule per step (a run of ours shorter than the paper's 800 steps
    compresses it; the next test checks that 800 steps take it unchanged)."""
    arch, model, x = case
    targets = runner_up(model, x)
    with preserved_state(model), torch.enable_grad():
        for p in model.parameters():
            p.requires_grad_(False)
        ours = optimise_masks(
            model,
            x,
            torch.tensor(targets),
            area=0.1,
            iterations=ITERATIONS,
            levels=8,
            max_blur=20.0,
            step=7,
            sigma=21.0,
            jitter=True,
            progress=False,
            lr=LEARNING_RATE,
            growth=AREA_GROWTH,
        )
    theirs = []
    for i, t in enumerate(targets):  # TorchRay takes one image; it freezes the model's weights
        mask, _ = torchray.extremal_perturbation(
            copy.deepcopy(model), x[i : i + 1], t, areas=[0.1], max_iter=ITERATIONS
        )
        theirs.append(mask[0, 0])
    theirs = torch.stack(theirs)
    assert_correlated(f"extremal perturbation {arch}", ours, theirs, floor=0.9999)
    assert (ours - theirs).abs().max() < 1e-4
    assert ours.max() < 0.9 and ours.std() > 0.01, "the mask moved from its start (≈ 1)"


def test_paper_steps_take_torchray_schedule_and_shorter_runs_compress_it(monkeypatch):
    seen = []

    def record(model, x, classes, **kw):
        seen.append((kw["iterations"], kw["lr"], kw["growth"]))
        return torch.zeros(len(x), *x.shape[2:])

    monkeypatch.setattr(extremal, "optimise_masks", record)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.rand(3, 3, 16, 16)
    extremal_perturbation(model, x, [0, 1, 1], batch_size=2)
    extremal_perturbation(model, x, [0, 1, 1], iterations=100)
    assert seen[:2] == [(800, LEARNING_RATE, AREA_GROWTH)] * 2  # two groups of at most 2
    assert seen[2][:2] == (100, 8 * LEARNING_RATE)
    assert np.isclose(seen[2][2] ** 100, AREA_GROWTH**800)  # λ ends where the paper's does
    assert all(p.requires_grad for p in model.parameters()), "weights' flags restored"


def test_soft_maximum_backward_is_its_derivative():
    torch.manual_seed(0)
    nodes = torch.rand(2, 9, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(4, 9, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda n: _SoftMaximum.apply(n, weight), (nodes,))


def test_soft_maximum_shifts_its_exponentials_only_where_they_could_overflow():
    """Nodes in [0, 1] (every mask's) take ``exp`` unshifted: the value and gradient equal
    a float64 softmax's to float32 rounding; nodes of 1000 (``c·a`` up to 20000,
    ``exp`` far past float32) take the shift and stay finite."""
    torch.manual_seed(0)
    weight = torch.rand(6, 9)
    for scale, shifted, tolerance in ((1.0, False, 1e-5), (1000.0, True, 1e-2)):
        nodes = (scale * torch.rand(2, 9, 7)).requires_grad_(True)
        assert extremal._needs_shift(extremal.COLDNESS * weight, nodes) is shifted
        out = _SoftMaximum.apply(nodes, weight)
        (grad,) = torch.autograd.grad(out.sum(), nodes)
        assert torch.isfinite(out).all() and torch.isfinite(grad).all()
        exact = nodes.detach().double().requires_grad_(True)
        a = extremal.COLDNESS * weight.double()[None, :, :, None] * exact[:, None]
        reference = (torch.softmax(a, 2) * a).sum(2) / extremal.COLDNESS
        (expected,) = torch.autograd.grad(reference.sum(), exact)
        assert torch.allclose(out.double(), reference, rtol=1e-5, atol=1e-5 * scale)
        # at c·a ~ 2e4, float32's rounding of ``a − out`` is multiplied by c = 20
        assert torch.allclose(grad.double(), expected, rtol=1e-4, atol=tolerance)


def test_soft_maximum_is_the_largest_weighted_node_when_one_dominates():
    """With coldness 20, a node far above the others is (nearly) the pixel's value: its
    share of the softmax is 1 − 2e^−10 at a lead of 0.5."""
    nodes = torch.tensor([[[1.0], [0.0], [0.0]]])
    weight = torch.tensor([[1.0, 1.0, 1.0], [0.5, 1.0, 1.0]])
    out = _SoftMaximum.apply(nodes, weight)[0, :, 0]
    assert torch.allclose(out, torch.tensor([1.0, 0.5]), atol=1e-4)


def test_smooth_mask_is_a_blob_at_its_node():
    """One node on: the mask is a round blob centred on the node's pixel (``step · index``:
    the margin is cropped), 1 within σ/2 of it, falling off further out; every node on:
    nearly 1 everywhere (a soft maximum of kernels that reach 1 within σ/2 of a node)."""
    smooth = SmoothMask((30, 40), step=5, sigma=8.0, device="cpu")
    params = torch.zeros(1, 1, *smooth.grid)
    params[0, 0, 3, 4] = 1.0
    mask, full = smooth(params)
    assert mask.shape == (1, 1, 30, 40)
    assert full.shape[-2] > 30 and full.shape[-1] > 40  # the margin
    ys, xs = torch.meshgrid(torch.arange(30.0), torch.arange(40.0), indexing="ij")
    weights = mask[0, 0] / mask.sum()
    centre = float((weights * ys).sum()), float((weights * xs).sum())
    assert np.allclose(centre, (15, 20), atol=0.1)  # the crop cuts the blob's tails
    assert mask[0, 0, 15, 20] > 0.99 and mask[0, 0, 15 + 3, 20] > 0.99
    assert mask[0, 0, 15, 20 + 12] < mask[0, 0, 15, 20 + 6] < mask[0, 0, 15, 20 + 2]
    everything, _ = smooth(smooth.params(torch.zeros(1)))
    assert everything.min() > 0.9


def test_pyramid_reads_the_levels_linearly():
    x = torch.zeros(1, 1, 41, 41)
    x[0, 0, 20, 20] = 1.0
    pyramid = BlurPyramid(x, levels=3, max_blur=2.0)
    keep, blur = torch.ones(1, 1, 41, 41), torch.zeros(1, 1, 41, 41)
    assert torch.allclose(pyramid(keep), x)
    blurred = pyramid(blur)  # σ = 2: the impulse spread, its mass kept
    assert blurred[0, 0, 20, 20] < 0.05 and np.isclose(float(blurred.sum()), 1.0, atol=1e-4)
    halfway = pyramid(torch.full((1, 1, 41, 41), 0.75))  # between level 1 (σ = 1) and the image
    level1 = BlurPyramid(x, levels=2, max_blur=1.0)(blur)
    assert torch.allclose(halfway, 0.5 * level1 + 0.5 * x, atol=1e-6)


def test_bad_settings_name_the_setting():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.rand(1, 3, 16, 16)
    for key, value in (("area", 1.5), ("iterations", 0), ("step", 0), ("levels", 1)):
        with pytest.raises(ValueError, match=key):
            extremal_perturbation(model, x, [0], **{key: value})
