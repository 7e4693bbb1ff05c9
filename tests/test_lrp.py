"""Layer-wise relevance propagation (reportgen/techniques/lrp.py) against zennit's
composites with its canonizers, on ResNet-18 and a VGG-style CNN with batch norm."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reportgen import techniques
from reportgen.models import folded_copy

from .conftest import assert_correlated, runner_up

composites = pytest.importorskip("zennit.composites")
canonizers = pytest.importorskip("zennit.canonizers")
zennit_torchvision = pytest.importorskip("zennit.torchvision")

# our technique and zennit's composite of the same rules
PAIRS = [("lrp", "EpsilonPlusFlat"), ("lrp_alpha_beta", "EpsilonAlpha2Beta1")]


def vgg_style() -> nn.Module:
    """Convolutions with batch norm (statistics drawn so that folding matters), max and
    average pooling and a two-layer classifier, as in VGG-11-BN, small."""
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 32),
        nn.ReLU(),
        nn.Linear(32, 6),
    ).eval()
    with torch.no_grad():
        for norm in (model[1], model[5]):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(-1.0, 1.5)
            norm.bias.uniform_(-0.2, 0.2)
    return model


def zennit_relevance(model, x, targets, composite: str, canonizer) -> torch.Tensor:
    twin = copy.deepcopy(model)
    with getattr(composites, composite)(canonizers=[canonizer]).context(twin) as ruled:
        inp = x.clone().requires_grad_(True)
        scores = ruled(inp)
        onehot = torch.zeros_like(scores).scatter_(1, targets[:, None], 1.0)
        (relevance,) = torch.autograd.grad(scores, inp, onehot)
    return relevance.sum(1)


@pytest.fixture(params=["resnet18", "vgg_style"])
def case(request):
    if request.param == "resnet18":
        model, x = request.getfixturevalue("small_resnet")
        x, canonizer = x[:2], zennit_torchvision.ResNetCanonizer()
    else:
        model, canonizer = vgg_style(), canonizers.SequentialMergeBatchNorm()
        torch.manual_seed(8)
        x = torch.randn(2, 3, 32, 32)
    return request.param, model, x, torch.tensor(runner_up(model, x)), canonizer


@pytest.mark.parametrize("name, composite", PAIRS)
def test_lrp_matches_zennit(case, name, composite):
    arch, model, x, targets, canonizer = case
    ours = techniques.get(name).run(model, x, targets)
    theirs = zennit_relevance(model, x, targets, composite, canonizer)
    scale = theirs.abs().max()
    torch.testing.assert_close(ours / scale, theirs / scale, rtol=1e-3, atol=1e-4)
    assert_correlated(f"{name} {arch}", ours, theirs, floor=0.9999)


def test_lrp_runs_on_lite0_with_its_residual_sums_split(lite0):
    """On EfficientNet-Lite0 (no zennit canonizer: its residual sums are found as the model
    adds them): the same map whether its batch norms come folded or not, finite and not
    the plain gradient; the rules leave the model as it was."""
    model, _ = lite0
    torch.manual_seed(9)
    x = torch.randn(2, 3, 96, 96)
    targets = torch.tensor(runner_up(model, x))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = techniques.get("lrp").run(model, x, targets)
    folded, count = folded_copy(model, (96, 96))
    assert count > 0
    torch.testing.assert_close(techniques.get("lrp").run(folded, x, targets), maps)
    assert torch.isfinite(maps).all() and maps.abs().amax() > 0
    gradient = techniques.get("input_x_gradient").run(model, x, targets)
    assert not torch.allclose(maps, gradient, rtol=0.1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
