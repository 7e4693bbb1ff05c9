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


def test_lrp_runs_on_lite0_with_its_residual_sums_split(lite0, monkeypatch):
    """On EfficientNet-Lite0 (no zennit canonizer: its residual sums are found as the model
    adds them, one per block with a shortcut): the same map whether its batch norms come
    folded or not, finite and not the plain gradient; the rules leave the model as it was."""
    from reportgen.techniques import lrp as module

    model, _ = lite0
    sums, split = [], module._Sum.apply
    monkeypatch.setattr(module._Sum, "apply", lambda a, b: sums.append(1) or split(a, b))
    torch.manual_seed(9)
    x = torch.randn(2, 3, 96, 96)
    targets = torch.tensor(runner_up(model, x))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = techniques.get("lrp").run(model, x, targets)
    shortcuts = sum(bool(getattr(m, "has_skip", False)) for m in model.modules())
    assert shortcuts > 0 and len(sums) == shortcuts
    folded, count = folded_copy(model, (96, 96))
    assert count > 0
    torch.testing.assert_close(techniques.get("lrp").run(folded, x, targets), maps)
    assert torch.isfinite(maps).all() and maps.abs().amax() > 0
    gradient = techniques.get("input_x_gradient").run(model, x, targets)
    assert not torch.allclose(maps, gradient, rtol=0.1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_lrp_leaves_attention_to_the_gradient_and_checks_the_scores():
    """A module that reads a linear layer's weight itself (attention reads ``out_proj``)
    still runs; a model whose sums the rules cannot follow is refused, not mis-explained."""

    class Attending(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(10)
            self.conv = nn.Conv2d(3, 8, 4, stride=4)
            self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            tokens = self.conv(x).flatten(2).transpose(1, 2)
            mixed, _ = self.attention(tokens, tokens, tokens)
            return self.head(mixed.mean(1))

    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 2)

        def forward(self, x):
            y = self.conv(x)
            y.add_(self.conv(x))  # a sum whose result is dropped: the rules cannot follow it
            return self.head(y.mean((2, 3)))

    x = torch.randn(2, 3, 16, 16)
    maps = techniques.get("lrp").run(Attending().eval(), x, torch.tensor([0, 2]))
    assert maps.shape == (2, 16, 16) and torch.isfinite(maps).all()
    with pytest.raises(ValueError, match="changed InPlace's output"):
        techniques.get("lrp").run(InPlace().eval(), x, torch.tensor([0, 1]))
