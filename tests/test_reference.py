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

from .conftest import GRADIENT_CAM_PEERS, assert_correlated, pearson, runner_up

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
    return model, x, {"bn2": "bn2", "blocks.5.3.bn2": "blocks.5.3.bn2"}, spec.classifier


@pytest.fixture(params=["resnet", "efficientnet"])
def case(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize(
    "method, peer",
    GRADIENT_CAM_PEERS,
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


# --- Deliberate differences, pinned: each side's behaviour on a hand-built case ------------


def signed_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Activations and gradients of one image, 2 channels of 2 x 2: channel 0 non-negative,
    channel 1 signed with Σ A = 0 exactly."""
    acts = torch.tensor([[[[1.0, 2.0], [0.5, 0.0]], [[1.0, -1.0], [2.0, -2.0]]]])
    grads = torch.tensor([[[[0.5, 1.0], [0.25, 2.0]], [[1.0, 0.5], [-1.0, 0.25]]]])
    return acts, grads


def test_gradcampp_and_xgradcam_weights_equal_the_peers_where_activations_are_non_negative():
    from pytorch_grad_cam import GradCAMPlusPlus, XGradCAM

    from reportgen.techniques.cam import Captured, gradcampp_formula, xgradcam_formula

    acts, grads = signed_case()
    acts, grads = acts[:, :1], grads[:, :1]  # the non-negative channel alone
    for formula, peer in ((gradcampp_formula, GradCAMPlusPlus), (xgradcam_formula, XGradCAM)):
        weights = peer.get_cam_weights(None, None, None, None, acts.numpy(), grads.numpy())
        theirs = torch.relu((torch.from_numpy(weights)[:, :, None, None] * acts).sum(1))
        ours = formula(Captured(acts, grads, None))
        torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-6)


def test_gradcampp_and_xgradcam_at_a_signed_channel_differ_from_the_peers_by_design():
    """Where the formula divides by zero (a signed channel: Σ A = 0) we give the weight 0;
    pytorch-grad-cam divides by its epsilon and the channel's weight explodes. Both are
    the same formula's answer to an ill-posed case, which is why the site flags it."""
    from pytorch_grad_cam import GradCAMPlusPlus, XGradCAM

    from reportgen.techniques.cam import Captured, gradcampp_formula, xgradcam_formula

    acts, grads = signed_case()
    # XGrad-CAM: channel 1 sums to exactly 0
    theirs = XGradCAM.get_cam_weights(None, None, None, None, acts.numpy(), grads.numpy())
    assert abs(theirs[0, 1]) > 1e6  # (A g summed) / 1e-7
    total = acts.sum(dim=(2, 3), keepdim=True)
    share = torch.where(total != 0, acts / torch.where(total != 0, total, 1.0), 0.0)
    ours_w = (share * grads).sum(dim=(2, 3))
    assert ours_w[0, 1] == 0 and ours_w[0, 0] > 0
    ours = xgradcam_formula(Captured(acts, grads, None))
    torch.testing.assert_close(ours, torch.relu(ours_w[0, 0] * acts[:, 0]))
    # Grad-CAM++: with Σ A = 0 the denominator is 2 g²; make it vanish instead with Σ A = -2
    acts[0, 1, 1, 1] = -4.0  # Σ A of channel 1: -2; at g = 1, 2 g² + Σ A g³ = 0
    theirs = GradCAMPlusPlus.get_cam_weights(None, None, None, None, acts.numpy(), grads.numpy())
    assert theirs[0, 1] > 1e5  # 1² / 1e-6 at the position where g = 1
    ours = gradcampp_formula(Captured(acts, grads, None))
    g2 = grads[0, 1] ** 2
    denom = 2 * g2 + (-2.0) * g2 * grads[0, 1]
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1.0), 0.0)
    assert alpha[0, 0] == 0  # g = 1 there: the vanishing denominator gives α = 0
    w1 = (alpha * torch.relu(grads[0, 1])).sum()
    g0 = grads[0, 0]
    a0 = g0**2 / (2 * g0**2 + acts[0, 0].sum() * g0**3)
    w0 = (a0 * torch.relu(g0)).sum()
    torch.testing.assert_close(ours[0], torch.relu(w0 * acts[0, 0] + w1 * acts[0, 1]))
