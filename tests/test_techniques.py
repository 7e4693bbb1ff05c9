"""Each technique computes what its paper defines, on hand-built models and inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reportgen
from reportgen import techniques
from reportgen.capture import LayerNotFound
from reportgen.techniques.cam import cam_maps
from reportgen.techniques.views import feature_maps, filters

from .conftest import TinyGapNet


def test_registry_lists_first_slice():
    assert {"saliency", "cam", "gradcam", "gradcampp", "feature_maps", "filters"} <= set(
        techniques.REGISTRY
    )
    with pytest.raises(techniques.UnknownMethod, match="gradcam"):
        techniques.get("gradcan")


def test_gradcam_equals_relu_cam_over_area(tiny, batch):
    """With GAP + linear, dS/dA_k(i,j) = w_k / Z, so Grad-CAM = ReLU(CAM) / Z."""
    targets = [0, 3, 4]
    maps = cam_maps(tiny, batch, targets, ["features"], ["cam", "gradcam"], classifier="fc")
    cam, gradcam = maps[("cam", "features")], maps[("gradcam", "features")]
    area = cam.shape[-1] * cam.shape[-2]
    assert torch.allclose(gradcam, torch.relu(cam) / area, atol=1e-6)
    assert (cam < 0).any(), "CAM keeps its raw signed values"


def test_cam_is_classifier_weighted_sum(tiny, batch):
    acts = tiny.features(batch)
    expected = torch.einsum("k,khw->hw", tiny.fc.weight[2], acts[1])
    maps = cam_maps(tiny, batch, [2, 2, 2], ["features"], ["cam"], classifier="fc")
    assert torch.allclose(maps[("cam", "features")][1], expected, atol=1e-5)


class PositionHead(nn.Module):
    """S^c = sum_kij V[c, k, i, j] * A_kij: a score whose gradient varies by position."""

    def __init__(self, v: torch.Tensor):
        super().__init__()
        self.feat = nn.Identity()
        self.v = nn.Parameter(v)

    def forward(self, x):
        a = self.feat(x)
        return torch.einsum("ckij,nkij->nc", self.v, a)


def test_gradcampp_matches_eq19_by_hand():
    """Two-channel toy layer: alpha, weights and map computed with plain loops."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 2, size=(2, 3, 3))  # A_k(i, j) >= 0, as after a ReLU
    v = rng.normal(size=(2, 2, 3, 3))  # two classes
    model = PositionHead(torch.tensor(v, dtype=torch.float64)).double()
    out = cam_maps(model, torch.tensor(a[None]), [1], ["feat"], ["gradcampp"])
    g = v[1]  # dS^1 / dA
    expected = np.zeros((3, 3))
    for k in range(2):
        sum_a = a[k].sum()
        w_k = 0.0
        for i in range(3):
            for j in range(3):
                denom = 2 * g[k, i, j] ** 2 + sum_a * g[k, i, j] ** 3
                alpha = g[k, i, j] ** 2 / denom if denom != 0 else 0.0
                w_k += alpha * max(g[k, i, j], 0.0)
        expected += w_k * a[k]
    expected = np.maximum(expected, 0)
    assert np.allclose(out[("gradcampp", "feat")][0].numpy(), expected)


def test_saliency_of_linear_model_is_max_abs_weight():
    w = torch.randn(4, 3, 5, 5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(75, 4, bias=False))
    model[1].weight.data = w.reshape(4, 75)
    x = torch.randn(2, 3, 5, 5)
    sal = reportgen.explain(model, x, "saliency", target=[1, 3])
    assert torch.allclose(sal[0], w[1].abs().amax(0))
    assert torch.allclose(sal[1], w[3].abs().amax(0))


@pytest.mark.parametrize("method", ["saliency", "gradcam", "gradcampp", "cam"])
def test_per_item_targets_match_single_calls(tiny, batch, method):
    targets = [4, 0, 2]
    together = reportgen.explain(tiny, batch, method, layer="features", target=targets)
    for i, t in enumerate(targets):
        alone = reportgen.explain(tiny, batch[i : i + 1], method, layer="features", target=t)
        assert torch.allclose(together[i], alone[0], atol=1e-5)


def test_explain_upsamples_to_input_and_defaults(tiny, batch):
    maps = reportgen.explain(tiny, batch, "gradcam")  # default layer, top-1 targets
    assert maps.shape == (3, 16, 16) and maps.dtype == torch.float32
    low = cam_maps(tiny, batch, tiny(batch).argmax(1), ["features"], ["gradcam"])
    expected = F.interpolate(
        low[("gradcam", "features")][:, None], size=(16, 16), mode="bilinear", align_corners=False
    )[:, 0]
    assert torch.allclose(maps, expected)


def test_model_left_exactly_as_found(batch):
    torch.manual_seed(0)
    model = TinyGapNet(inplace=True).train()
    model.fc.weight.requires_grad_(False)
    for method in ["saliency", "gradcam", "gradcampp", "cam"]:
        reportgen.explain(model, batch, method, layer="features")
    assert model.training and all(m.training for m in model.modules())
    assert not model.fc.weight.requires_grad and model.fc.bias.requires_grad
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    with pytest.raises(LayerNotFound, match="features"):
        reportgen.explain(model, batch, "gradcam", layer="featurs")
    assert model.training and all(not m._forward_hooks for m in model.modules())


def test_frozen_model_under_no_grad_still_explained(tiny, batch):
    for p in tiny.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        maps = reportgen.explain(tiny, batch, "gradcam", layer="features")
    assert maps.abs().sum() > 0
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        reportgen.explain(tiny, batch, "gradcam", layer="features", target=0)


def test_in_place_relu_layer_is_safe(batch):
    """Capturing the output of a conv followed by ReLU(inplace=True) must not break autograd."""
    torch.manual_seed(0)
    inplace = TinyGapNet(inplace=True).eval()
    plain = TinyGapNet(inplace=False).eval()
    plain.load_state_dict(inplace.state_dict())
    a = reportgen.explain(inplace, batch, "gradcam", layer="features.2", target=1)
    b = reportgen.explain(plain, batch, "gradcam", layer="features.2", target=1)
    assert torch.allclose(a, b, atol=1e-6)


def test_feature_maps_sparsity_counts_zeros():
    model = nn.Sequential(nn.Identity(), nn.ReLU())
    x = torch.tensor([[[[-1.0, 2.0], [0.5, -3.0]]]]).expand(1, 3, 2, 2)
    out = feature_maps(model, x, layers=["1"])
    assert out["1"].sparsity.item() == pytest.approx(0.5)
    assert out["1"].mean.item() == pytest.approx(2.5 / 4)


def test_filters_are_first_conv_min_max_normalised(tiny):
    name, w = filters(tiny)
    assert name == "features.0" and w.shape == (8, 3, 3, 3)
    assert torch.allclose(w.amin(dim=(1, 2, 3)), torch.zeros(8))
    assert torch.allclose(w.amax(dim=(1, 2, 3)), torch.ones(8))


def test_hirescam_and_layercam_on_gap_linear_head(tiny, batch):
    """With GAP + linear, ∂S/∂A_k(i,j) = w_k / Z everywhere: HiResCAM = ReLU(CAM) / Z and
    LayerCAM = ReLU(Σ_k ReLU(w_k) A_k) / Z."""
    targets = [1, 2, 3]
    maps = cam_maps(tiny, batch, targets, ["features"], ["cam", "hirescam", "layercam"], "fc")
    cam = maps[("cam", "features")]
    area = cam.shape[-1] * cam.shape[-2]
    assert torch.allclose(maps[("hirescam", "features")], torch.relu(cam) / area, atol=1e-6)
    acts = tiny.features(batch)
    w = torch.relu(tiny.fc.weight[targets])
    expected = torch.relu(torch.einsum("nk,nkhw->nhw", w, acts)) / area
    assert torch.allclose(maps[("layercam", "features")], expected, atol=1e-6)


def test_xgradcam_by_hand():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 2, size=(2, 3, 3))
    v = rng.normal(size=(1, 2, 3, 3))
    model = PositionHead(torch.tensor(v, dtype=torch.float64)).double()
    out = cam_maps(model, torch.tensor(a[None]), [0], ["feat"], ["xgradcam"])
    weights = [(a[k] / a[k].sum() * v[0, k]).sum() for k in range(2)]
    expected = np.maximum(sum(w * a[k] for k, w in enumerate(weights)), 0)
    assert np.allclose(out[("xgradcam", "feat")][0].numpy(), expected)


def test_eigencam_recovers_a_rank_one_pattern_with_fixed_sign():
    """A_k(i,j) = u_k · s(i,j) + b_k: the first component is s (centred), positive where
    the activations are large, whatever sign the SVD returns."""
    s = torch.zeros(5, 5)
    s[1:3, 2:4] = 3.0
    u = torch.tensor([0.5, 1.0, 2.0])
    acts = (u[:, None, None] * s + torch.tensor([1.0, -2.0, 0.5])[:, None, None])[None]
    model = nn.Sequential(nn.Identity())
    out = cam_maps(model, acts, [0], ["0"], ["eigencam"])[("eigencam", "0")][0]
    centred = s - s.mean()
    assert torch.allclose(out / out.abs().max(), centred / centred.abs().max(), atol=1e-5)


def test_integrated_gradients_black_baseline_from_mean_and_std():
    """Given the model's normalisation, the default baseline is the black image, so the map
    sums to S(x) − S(black) (completeness, exact for a linear model)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x = torch.randn(1, 3, 4, 4)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ig = techniques.get("integrated_gradients").run(model, x, [1], mean=mean, std=std)
    black = (-torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1).expand_as(x)
    with torch.no_grad():
        expected = model(x)[0, 1] - model(black)[0, 1]
    assert ig.sum().item() == pytest.approx(expected.item(), rel=1e-4)


def test_baselines_ignore_the_model_and_compute_what_they_say():
    x = torch.zeros(2, 3, 6, 8)
    x[:, :, :, 4:] = 1.0  # a vertical step edge between columns 3 and 4
    edges = techniques.get("baseline_edges").run(None, x)
    # Sobel x-response at the step is 1 + 2 + 1 = 4 per channel, 3 channels; zero elsewhere
    assert torch.allclose(edges[:, :, 3:5], torch.full((2, 6, 2), 12.0))
    assert edges[:, :, :3].abs().max() == 0 and edges[:, :, 5:].abs().max() == 0
    centre = techniques.get("baseline_centre").run(None, x)
    assert centre.shape == (2, 6, 8) and torch.allclose(centre, centre.flip(-1).flip(-2))
    assert centre[0, 2:4, 3:5].min() > centre[0, 0, 0]
    rand = techniques.get("baseline_random")
    assert torch.equal(rand.run(None, x, seed=3), rand.run(None, x, seed=3))
    assert not torch.equal(rand.run(None, x, seed=3), rand.run(None, x, seed=4))
    assert all(techniques.get(n).scored for n in ["baseline_random", "baseline_edges"])
