"""FullGrad: its terms add up to the score on a ReLU network, and its map agrees with
pytorch-grad-cam's where pytorch-grad-cam finds the bias layers (torchvision's ResNet-18
and MobileNetV2)."""

import pytest
import torch
from torch import nn

import reportgen
from reportgen.techniques.fullgrad import completeness_gap, full_gradients

from .conftest import assert_correlated, runner_up

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


def random_norms(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters drawn at random, so every batch norm has
    an implicit bias that matters (fresh ones have β = μ = 0)."""
    torch.manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return model


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v2"])
def case(request):
    import torchvision

    torch.manual_seed(0)
    model = random_norms(getattr(torchvision.models, request.param)(weights=None, num_classes=10))
    # A random head's logits are tiny, and so are many channels' |∇z S ⊙ b|: pytorch-grad-cam
    # min-max scales each with 1e-7 added to the range, which then shrinks them (MobileNetV2:
    # r 0.980 unscaled). Scaled like a trained model's logits, the maps agree (0.9998).
    with torch.no_grad():
        list(model.modules())[-1].weight.mul_(1000.0)
    torch.manual_seed(1)
    return request.param, model.eval(), torch.rand(2, 3, 96, 96)


def test_fullgrad_matches_pytorch_grad_cam(case):
    arch, model, x = case
    targets = runner_up(model, x)
    with pytorch_grad_cam.FullGrad(model=model, target_layers=[]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    ours = reportgen.explain(model, x, "fullgrad", target=targets)
    assert_correlated(f"fullgrad {arch}", ours, theirs)


def test_the_terms_add_up_to_the_score(case):
    """The full-gradient decomposition (the paper's completeness): exact for piecewise-linear
    networks whose only constants are biases: ResNet-18's ReLUs, and MobileNetV2's ReLU6
    while no unit reaches 6 (its clip would be a constant no layer holds)."""
    arch, model, x = case
    targets = runner_up(model, x)
    _, _, scores = full_gradients(model, x, targets)
    gap = completeness_gap(model, x, targets)
    assert scores.abs().min() > 1.0  # a score worth splitting
    torch.testing.assert_close(gap, torch.zeros_like(gap), atol=1e-5 * scores.abs().max(), rtol=0)


def test_batch_norms_are_counted_whatever_module_applies_them(lite0):
    """On Lite0 each norm also applies its ReLU6 (timm's BatchNormAct2d): folded into the
    convolution before it, its bias is counted at the affine output, and the model is
    left as it was."""
    model, _ = lite0
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs, terms, _ = full_gradients(model, x, [1])
    assert inputs.shape == x.shape
    maps = [t for t in terms if t.dim() == 4]
    assert len(maps) >= 40  # one per batch norm after a convolution (49 in Lite0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
