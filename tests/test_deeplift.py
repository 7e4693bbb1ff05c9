"""DeepLIFT's Rescale rule (reportgen/techniques/deeplift.py) against captum's DeepLift on
three architectures, and summation to delta by hand."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from reportgen import techniques
from reportgen.techniques.deeplift import deeplift, deeplift_attributions
from reportgen.techniques.gradient import black_image

from .conftest import assert_correlated, runner_up

captum_attr = pytest.importorskip("captum.attr")
captum_deep_lift = pytest.importorskip("captum.attr._core.deep_lift")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def captum_deeplift(model, x, targets, reference, monkeypatch) -> torch.Tensor:
    """captum's DeepLift with the Rescale rule for ReLU6 too: captum's rule is written for
    any element-wise activation, and its table lists ReLU but not ReLU6 (it would pass
    ReLU6 the plain gradient)."""
    table = captum_deep_lift.SUPPORTED_NON_LINEAR
    monkeypatch.setitem(table, nn.ReLU6, table[nn.ReLU])
    return captum_attr.DeepLift(model).attribute(x, reference, target=targets)


def plain_cnn() -> nn.Module:
    """A CNN with a ReLU and a Tanh, every activation a module of its own."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.Tanh(),  # rescaled by both (captum's Sigmoid and Tanh rules are its ReLU's)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()


def mobilenet_v2() -> nn.Module:
    """Randomly initialised, its batch norms' statistics set on random images (untouched,
    its scores are of order 1e-9: every difference would vanish in rounding)."""
    torch.manual_seed(4)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10).train()
    for norm in model.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.momentum = None  # the statistics of this one batch, not 10 % of them
    with torch.no_grad():
        model(torch.randn(16, 3, 96, 96))
    return model.eval()


@pytest.fixture(params=["efficientnet_lite0", "mobilenet_v2", "plain_cnn"])
def case(request):
    if request.param == "efficientnet_lite0":
        model, _ = request.getfixturevalue("lite0")
    else:
        model = {"mobilenet_v2": mobilenet_v2, "plain_cnn": plain_cnn}[request.param]()
    torch.manual_seed(5)
    x = torch.randn(2, 3, 96, 96)
    return request.param, model, x, torch.tensor(runner_up(model, x))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_deeplift_matches_captum(case, monkeypatch):
    """Per input element, ours and captum's agree (same reference: the black image)."""
    arch, model, x, targets = case
    reference = black_image(x, MEAN, STD)
    ours = deeplift_attributions(model, x, targets, reference)
    theirs = captum_deeplift(model, x, targets, reference, monkeypatch)
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-5)
    assert_correlated(f"deeplift {arch}", ours.sum(1), theirs.sum(1), floor=0.999)


def test_deeplift_sums_to_the_difference_of_the_scores(case):
    """Summation to delta: with only element-wise non-linearities (ReLU6 in Lite0 and
    MobileNetV2, residual sums, batch norm, average pooling) the map adds up to
    S(x) − S(x′) exactly; the plain gradient times the difference does not."""
    arch, model, x, targets = case
    maps = techniques.get("deeplift").run(model, x, targets, mean=MEAN, std=STD)
    with torch.no_grad():
        scores = model(x).gather(1, targets[:, None])[:, 0]
        base = model(black_image(x, MEAN, STD)).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(maps.sum((1, 2)), scores - base, rtol=1e-3, atol=1e-4)
    inp = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(inp).gather(1, targets[:, None]).sum(), inp)
    linear = ((x - black_image(x, MEAN, STD)) * grad).sum((1, 2, 3))
    assert not torch.allclose(linear, scores - base, rtol=1e-2), arch


class SharedRelu(nn.Module):
    """One ReLU module called twice (as torchvision's ResNet blocks do), and its twin with
    two modules, which captum needs."""

    def __init__(self, shared: bool):
        super().__init__()
        torch.manual_seed(6)
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.relu2 = self.relu if shared else nn.ReLU()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        y = self.relu2(self.conv2(self.relu(self.conv1(x))))
        return self.fc(y.mean((2, 3)))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_module_called_twice_gets_the_rule_at_each_call(monkeypatch):
    """Also where the image equals the reference (its top half): there Δx = 0 and the rule
    takes the activation's derivative, as captum does."""
    x = torch.randn(3, 3, 12, 12)
    x[..., :6, :] = 0.0
    targets = torch.tensor([0, 2, 3])
    ours = deeplift(SharedRelu(shared=True), x, targets)
    twin = SharedRelu(shared=False).eval()
    theirs = captum_deeplift(twin, x, targets, torch.zeros_like(x), monkeypatch).sum(1)
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-6)


def test_a_model_without_activation_modules_is_told_what_to_do():
    class Functional(nn.Module):
        def forward(self, x):
            return torch.relu(x).mean((2, 3))

    with pytest.raises(ValueError, match="F.relu in forward"):
        deeplift(Functional(), torch.randn(1, 3, 4, 4), [0])
