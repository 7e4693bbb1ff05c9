"""Our maps against the reference libraries: same model, layer, input and targets.

Per-image Pearson correlation >= 0.99 after each side's own normalisation, on two
architectures (a torchvision ResNet-18 and the default EfficientNet-Lite0) and two
layers each.
"""

import pytest
import torch

import reportgen
from reportgen.capture import Capture
from reportgen.techniques.cam import cam_maps

from .conftest import assert_correlated, pearson, runner_up

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
torchcam_methods = pytest.importorskip("torchcam.methods")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


@pytest.fixture(scope="module")
def resnet(small_resnet):
    model, x = small_resnet
    return model, x, {"layer4": "layer4", "layer3": "layer3"}, "fc"


@pytest.fixture(scope="module")
def efficientnet(lite0):
    model, spec = lite0
    torch.manual_seed(2)
    x = torch.randn(2, 3, 224, 224)
    return model, x, {"bn2": "bn2", "blocks.5": "blocks.5"}, spec.classifier


@pytest.fixture(params=["resnet", "efficientnet"])
def case(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize(
    "method, peer",
    [
        ("gradcam", "GradCAM"),
        ("gradcampp", "GradCAMPlusPlus"),
        ("xgradcam", "XGradCAM"),
        ("layercam", "LayerCAM"),
        ("hirescam", "HiResCAM"),
    ],
)
def test_gradient_cams_match_pytorch_grad_cam(case, method, peer):
    model, x, layers, _ = case
    targets = runner_up(model, x)
    for name in layers:
        layer = dict(model.named_modules())[name]
        with getattr(pytorch_grad_cam, peer)(model=model, target_layers=[layer]) as cam:
            theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        ours = reportgen.explain(model, x, method, layer=name, target=targets).numpy()
        assert_correlated(f"{method} {name}", ours, theirs)


def test_cam_matches_torchcam(case):
    model, x, layers, classifier = case
    name = next(iter(layers))  # CAM is defined at the layer feeding GAP + linear only
    targets = runner_up(model, x)
    with torchcam_methods.CAM(model, target_layer=name, fc_layer=classifier) as extractor:
        scores = model(x)
        (theirs,) = extractor(class_idx=targets, scores=scores)
    ours = cam_maps(model, x, targets, [name], ["cam"], classifier)[("cam", name)]
    # torchcam min-max normalises the signed CAM, as we keep it (no ReLU in Zhou et al.)
    assert_correlated(f"cam {name}", ours, theirs)


def test_eigencam_matches_pytorch_grad_cam_projection_up_to_sign(case):
    """Same first principal component as pytorch-grad-cam's SVD projection; our sign is
    fixed by convention (positive correlation with the channel-summed activation)."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    model, x, layers, _ = case
    for name in layers:
        ours = cam_maps(model, x, [0] * len(x), [name], ["eigencam"])[("eigencam", name)]
        with torch.no_grad(), Capture(model, [name]) as capture:
            model(x)
        acts = capture.outputs[name]
        theirs = get_2d_projection(acts.numpy())
        for a, b, act in zip(ours.numpy(), theirs, acts.sum(1).numpy(), strict=True):
            assert abs(pearson(a, b)) >= 0.99
            assert pearson(a, act) > 0, "sign convention: follows the summed activation"
