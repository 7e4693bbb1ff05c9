"""Gradient-family techniques: closed forms on hand-built nets, then captum on real ones.

The captum comparisons use the same model, input and per-item targets, and ask for a
per-image Pearson correlation >= 0.99 after each side's own channel reduction (run
with ``pytest -s`` to see the measured values). captum only overrides ``nn.ReLU``, so
on EfficientNet-Lite0 (ReLU6) guided backprop and the deconvnet are compared on
copies whose backward pass under captum's ReLU rule is ours by construction.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import timm.layers
import torch
import torch.nn.functional as F
from torch import nn

from reportgen import techniques
from reportgen.capture import LayerNotFound
from reportgen.techniques.gradient import (
    deconvnet,
    gradient_shap,
    guided_backprop,
    guided_gradcam,
    input_gradient,
    input_x_gradient,
    integrated_gradients,
    saliency,
    smoothgrad,
)

from .conftest import TinyGapNet, assert_correlated, runner_up

captum_attr = pytest.importorskip("captum.attr")

NEW = [
    "guided_backprop",
    "deconvnet",
    "guided_gradcam",
    "smoothgrad",
    "integrated_gradients",
    "input_x_gradient",
    "gradient_shap",
]
FAST = {
    "smoothgrad": {"samples": 4},
    "integrated_gradients": {"steps": 6},
    "gradient_shap": {"samples": 4},
}


def model_untouched(model: nn.Module) -> bool:
    """No hook of any kind left on any module."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return not any(getattr(m, kind) for m in model.modules() for kind in kinds)


# --- hand-built nets: the rules computed with numpy --------------------------------------


class ThreeLayer(nn.Module):
    """x [N, 3, 2, 2] -> Linear -> act -> Linear -> act -> Linear (4 classes)."""

    def __init__(self, act: nn.Module, scale: float = 1.0):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(12, 6), nn.Linear(6, 5), nn.Linear(5, 4)
        for layer in (self.l1, self.l2, self.l3):
            layer.weight.data.mul_(scale)
        self.a1, self.a2 = act, copy.deepcopy(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(self.a2(self.l2(self.a1(self.l1(x.flatten(1))))))


def _phi(z: np.ndarray) -> np.ndarray:
    return np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)


def _gelu_prime(z: np.ndarray) -> np.ndarray:
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    return cdf + z * _phi(z)


def _silu_prime(z: np.ndarray) -> np.ndarray:
    s = 1 / (1 + np.exp(-z))
    return s * (1 + z * (1 - s))


DERIVATIVES = {
    "relu": (lambda: nn.ReLU(inplace=True), lambda z: (z > 0) * 1.0),
    "relu6": (lambda: nn.ReLU6(inplace=True), lambda z: ((z > 0) & (z < 6)) * 1.0),
    "leaky": (lambda: nn.LeakyReLU(0.1), lambda z: np.where(z > 0, 1.0, 0.1)),
    "silu": (nn.SiLU, _silu_prime),
    "gelu": (nn.GELU, _gelu_prime),
    "timm_gelu": (timm.layers.activations.GELU, _gelu_prime),  # not an nn.GELU subclass
}


def expected_by_hand(net: ThreeLayer, x: torch.Tensor, targets, derivative, rule: str):
    """Backward through the three layers with the rule at both activations, in numpy.

    Returns the maps and every pre-activation seen (to check which cases were hit).
    """
    w = [layer.weight.detach().double().numpy() for layer in (net.l1, net.l2, net.l3)]
    with torch.no_grad():  # pre-activations from the net's own forward
        h1 = net.l1(x.flatten(1))
        h2 = net.l2(net.a1(h1.clone()))
    maps = []
    for t, p1, p2 in zip(targets, h1.double().numpy(), h2.double().numpy(), strict=True):
        r = w[2][t]
        for weight, h in ((w[1], p2), (w[0], p1)):
            r = np.maximum(r, 0) * (derivative(h) if rule == "guided" else 1.0)
            r = weight.T @ r
        maps.append(np.abs(r.reshape(3, 2, 2)).max(0))
    return np.stack(maps), np.concatenate([h1.numpy().ravel(), h2.numpy().ravel()])


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
@pytest.mark.parametrize("act", list(DERIVATIVES))
def test_rules_match_hand_computation(act, rule):
    """guided: R_in = f'(x) · relu(R_out); deconvnet: R_in = relu(R_out), at every activation."""
    make, derivative = DERIVATIVES[act]
    torch.manual_seed(3)
    net = ThreeLayer(make(), scale=4.0).eval()
    x = 3 * torch.randn(2, 3, 2, 2)
    targets = [1, 3]
    method = guided_backprop if rule == "guided" else deconvnet
    ours = method(net, x, targets).double().numpy()
    expected, _ = expected_by_hand(net, x, targets, derivative, rule)
    assert np.allclose(ours, expected, rtol=1e-4, atol=1e-6)
    plain = saliency(net, x, targets).double().numpy()
    assert not np.allclose(ours, plain, rtol=1e-3), "the rule changed nothing: hooks not applied"


def test_relu6_cases_cover_both_bounds():
    """The hand-built ReLU6 net does have pre-activations below 0 and above 6."""
    torch.manual_seed(3)
    net = ThreeLayer(nn.ReLU6(inplace=True), scale=4.0).eval()
    x = 3 * torch.randn(2, 3, 2, 2)
    _, h = expected_by_hand(net, x, [1, 3], DERIVATIVES["relu6"][1], "guided")
    assert (h < 0).any() and (h > 6).any()


def test_deconvnet_ignores_forward_values_without_max_pooling():
    """No max pooling: the deconvnet backward pass is one fixed linear map for every image."""
    torch.manual_seed(3)
    net = ThreeLayer(nn.ReLU6(), scale=4.0).eval()
    a, b = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    assert torch.allclose(deconvnet(net, a, [2, 0]), deconvnet(net, b, [2, 0]))


class SharedRelu(nn.Module):
    """One ReLU module called twice (ResNet's BasicBlock does this)."""

    def __init__(self, shared: bool):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.r1 = nn.ReLU(inplace=True)
        self.r2 = self.r1 if shared else nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.r2(self.c2(self.r1(self.c1(x)))).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", [guided_backprop, deconvnet])
def test_inplace_and_shared_activation_modules(batch, method):
    torch.manual_seed(0)
    inplace, plain = TinyGapNet(inplace=True).eval(), TinyGapNet().eval()
    plain.load_state_dict(inplace.state_dict())
    assert torch.allclose(method(inplace, batch, [0, 1, 2]), method(plain, batch, [0, 1, 2]))
    torch.manual_seed(0)
    shared, separate = SharedRelu(True).eval(), SharedRelu(False).eval()
    separate.load_state_dict(shared.state_dict())
    assert torch.allclose(method(shared, batch, 1), method(separate, batch, 1))


def test_smoothgrad_of_linear_model_is_max_abs_weight():
    """The gradient of a linear score is W[c] whatever the noise: SmoothGrad = saliency."""
    w = torch.randn(4, 3, 5, 5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(75, 4, bias=False))
    model[1].weight.data = w.reshape(4, 75)
    x = torch.randn(2, 3, 5, 5)
    out = smoothgrad(model, x, [1, 3], samples=7, noise=0.5, batch_size=3)
    assert torch.allclose(out[0], w[1].abs().amax(0), atol=1e-6)
    assert torch.allclose(out[1], w[3].abs().amax(0), atol=1e-6)


def test_smoothgrad_is_mean_saliency_over_seeded_noise(tiny, batch):
    """σ = 15 % of each image's own range; one seeded [C, H, W] draw per sample."""
    batch = batch * torch.tensor([1.0, 3.0, 0.5])[:, None, None, None]  # different ranges
    gen = torch.Generator().manual_seed(7)
    eps = [torch.randn(batch.shape[1:], generator=gen) for _ in range(3)]
    sigma = 0.15 * (batch.amax(dim=(1, 2, 3)) - batch.amin(dim=(1, 2, 3)))
    expected = torch.stack(
        [saliency(tiny, batch + sigma[:, None, None, None] * e, [0, 1, 2]) for e in eps]
    ).mean(0)
    ours = smoothgrad(tiny, batch, [0, 1, 2], samples=3, seed=7, batch_size=4)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert torch.allclose(ours, smoothgrad(tiny, batch, [0, 1, 2], samples=3, seed=7))
    assert not torch.allclose(ours, smoothgrad(tiny, batch, [0, 1, 2], samples=3, seed=8))


class SmoothNet(nn.Module):
    """conv -> softplus -> conv -> tanh -> GAP -> linear: smooth, so quadrature converges."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2)
        self.fc = nn.Linear(8, 5)
        self.fc.weight.data.mul_(20)  # scores that differ enough for a relative check

    def forward(self, x):
        return self.fc(torch.tanh(self.c2(F.softplus(self.c1(x)))).mean(dim=(2, 3)))


@pytest.mark.parametrize("baseline", [None, -0.5, "tensor"])
def test_integrated_gradients_completeness(baseline):
    """Σ_ij M(i,j) = S(x) − S(x′) (Sundararajan et al., prop. 1), within 1 % at 50 steps."""
    torch.manual_seed(0)
    model = SmoothNet().eval()
    x = 2 * torch.randn(3, 3, 12, 12)
    if baseline == "tensor":
        baseline = torch.tensor([-1.0, 0.2, 0.5]).view(1, 3, 1, 1)
    base = torch.zeros_like(x) + (0.0 if baseline is None else baseline)
    with torch.no_grad():
        change = model(x) - model(base)
    targets = change.abs().argmax(1)  # the class whose score moves most, per item
    delta = change.gather(1, targets[:, None])[:, 0]
    maps = integrated_gradients(model, x, targets, baseline=baseline, batch_size=7)
    assert (delta.abs() > 0.1).all()
    assert torch.allclose(maps.sum(dim=(1, 2)), delta, rtol=0.01, atol=1e-4)


def test_integrated_gradients_of_linear_model_is_input_times_weight():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    x = torch.randn(2, 3, 4, 4)
    maps = integrated_gradients(model, x, [2, 0], baseline=0.25, steps=5)
    w = model[1].weight.detach().reshape(3, 3, 4, 4)
    expected = torch.stack([((x[0] - 0.25) * w[2]).sum(0), ((x[1] - 0.25) * w[0]).sum(0)])
    assert torch.allclose(maps, expected, atol=1e-5)


# --- contract: registry, targets, state, errors ----------------------------------------


def test_registered_with_full_entries():
    for name in NEW:
        t = techniques.get(name)
        assert t.family == "gradient" and not t.needs_layer and t.scored
        assert t.url.startswith("https://arxiv.org/abs/") and t.paper and t.summary and t.cost
        assert t.notes


@pytest.mark.parametrize("name", NEW)
def test_per_item_targets_match_single_calls(tiny, batch, name):
    run = techniques.get(name).run
    targets = torch.tensor([4, 0, 2])
    together = run(tiny, batch, targets, batch_size=2, **FAST.get(name, {}))
    assert together.shape == (3, 16, 16) and together.dtype == torch.float32
    for i, t in enumerate(targets.tolist()):
        alone = run(tiny, batch[i : i + 1], t, batch_size=5, **FAST.get(name, {}))
        assert torch.allclose(together[i], alone[0], atol=1e-6)


@pytest.mark.parametrize("name", NEW)
def test_model_left_exactly_as_found(batch, name):
    torch.manual_seed(0)
    model = TinyGapNet(inplace=True).train()
    model.fc.weight.requires_grad_(False)
    run = techniques.get(name).run

    def unchanged() -> bool:
        modes = model.training and all(m.training for m in model.modules())
        flags = not model.fc.weight.requires_grad and model.fc.bias.requires_grad
        return modes and flags and model_untouched(model)

    with torch.no_grad():  # frozen under no_grad still works
        assert run(model, batch, [0, 1, 2], **FAST.get(name, {})).abs().sum() > 0
    assert unchanged()
    with pytest.raises(RuntimeError, match="out of bounds"):  # fails after the hooks are on
        run(model, batch, [0, 1, 99], **FAST.get(name, {}))
    assert unchanged()
    if name == "guided_gradcam":
        with pytest.raises(LayerNotFound):
            run(model, batch, 0, layer="featurs")
        assert unchanged()


class Functional(nn.Module):
    """Activations as functions: nothing for a hook to reach."""

    def __init__(self, unused_module: bool):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)
        if unused_module:
            self.relu = nn.ReLU()

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("unused_module", [False, True])
@pytest.mark.parametrize("method", [guided_backprop, deconvnet, guided_gradcam])
def test_functional_activations_are_refused(batch, method, unused_module):
    model = Functional(unused_module).train()
    with pytest.raises(ValueError, match=r"Functional.*F\.relu"):
        method(model, batch, 1)
    assert model.training and model_untouched(model)


def test_guided_gradcam_is_guided_backprop_weighted_by_gradcam(tiny, batch):
    from reportgen.techniques.cam import cam_maps

    cam = cam_maps(tiny, batch, [0, 1, 2], ["features"], ["gradcam"])[("gradcam", "features")]
    up = F.interpolate(cam[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    guided = input_gradient(tiny, batch, [0, 1, 2], rule="guided")
    expected = (guided * up[:, None]).abs().amax(1)
    ours = guided_gradcam(tiny, batch, [0, 1, 2])  # default layer: "features"
    assert torch.allclose(ours, expected, atol=1e-7)


# --- against captum on real architectures -----------------------------------------------


@pytest.fixture(scope="module")
def resnet(small_resnet):
    model, x = small_resnet
    return model, x[:2], runner_up(model, x[:2]), "layer4"


@pytest.fixture(scope="module")
def efficientnet(lite0):
    model, _ = lite0
    torch.manual_seed(2)
    x = torch.randn(2, 3, 128, 128)
    return model, x, runner_up(model, x), "bn2"


class Min6(nn.Module):
    def forward(self, x):
        return x.clamp(max=6)


def swap_relu6(model: nn.Module, make) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU6`` replaced by ``make()``."""
    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        if isinstance(module, nn.ReLU6):
            parent, _, child = name.rpartition(".")
            setattr(twin.get_submodule(parent), child, make())
    return twin


def captum_twin(model: nn.Module, rule: str) -> nn.Module:
    """The model as captum's ReLU-only hooks see our rule.

    guided: ReLU6 = min(ReLU(x), 6) computes the same function, and captum's
    ``relu(g · 1[x < 6]) · 1[x > 0]`` is our ``relu(g) · 1[0 < x < 6]``.
    deconvnet: the backward pass ignores every forward value (no max pooling in
    Lite0), so a ReLU in place of the ReLU6 gives the same ``relu(g)`` everywhere.
    """
    if not any(isinstance(m, nn.ReLU6) for m in model.modules()):
        return model
    if rule == "guided":
        return swap_relu6(model, lambda: nn.Sequential(nn.ReLU(), Min6()))
    return swap_relu6(model, nn.ReLU)


@pytest.fixture(params=["resnet", "efficientnet"])
def case(request):
    return request.param, *request.getfixturevalue(request.param)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "name, peer, rule",
    [("guided_backprop", "GuidedBackprop", "guided"), ("deconvnet", "Deconvolution", "deconvnet")],
)
def test_rules_match_captum(case, name, peer, rule):
    arch, model, x, targets, _ = case
    ours = techniques.get(name).run(model, x, targets)
    theirs = getattr(captum_attr, peer)(captum_twin(model, rule)).attribute(x, target=targets)
    assert_correlated(f"{name} {arch}", ours, theirs.abs().amax(1))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_captum_rules_skip_relu6(efficientnet):
    """Why Lite0 is compared on twins: on ReLU6 captum returns the plain gradient, we do not."""
    model, x, targets, _ = efficientnet
    plain = input_gradient(model, x, targets)
    for peer in (captum_attr.GuidedBackprop, captum_attr.Deconvolution):
        assert torch.allclose(peer(model).attribute(x, target=targets), plain, atol=1e-6)
    for rule in ("guided", "deconvnet"):
        assert not torch.allclose(input_gradient(model, x, targets, rule=rule), plain, atol=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_guided_gradcam_matches_captum(case):
    arch, model, x, targets, layer = case
    ours = guided_gradcam(model, x, targets, layer=layer)
    twin = captum_twin(model, "guided")
    peer = captum_attr.GuidedGradCam(twin, twin.get_submodule(layer))
    theirs = peer.attribute(x, target=targets, interpolate_mode="bilinear")
    assert_correlated(f"guided_gradcam {arch} {layer}", ours, theirs.abs().amax(1))
    assert torch.allclose(guided_gradcam(model, x, targets), ours)  # default layer


def test_input_x_gradient_matches_captum(case):
    arch, model, x, targets, _ = case
    ours = input_x_gradient(model, x, targets)
    theirs = captum_attr.InputXGradient(model).attribute(x, target=targets).sum(1)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    small = torch.randn(1, 3, 4, 4)
    by_hand = (small[0] * linear[1].weight[1].view(3, 4, 4)).sum(0)  # each pixel's own term
    torch.testing.assert_close(input_x_gradient(linear, small, [1])[0], by_hand)


def test_gradient_shap_of_a_linear_model_is_the_difference_times_the_weight():
    """For a linear score every draw gives (x − b) · W: ours, captum's and the hand's agree
    exactly whatever was drawn (the reference here: one black image)."""
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    x, black = torch.randn(2, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    ours = gradient_shap(linear, x, [1, 0], samples=5, reference=black)
    theirs = captum_attr.GradientShap(linear).attribute(x, baselines=black, target=[1, 0])
    weights = linear[1].weight.view(2, 3, 4, 4)
    torch.testing.assert_close(ours, theirs.sum(1))
    torch.testing.assert_close(ours, (x * weights[[1, 0]]).sum(1))


@pytest.mark.parametrize(
    "arch, size, samples, floor",
    [
        ("resnet", 96, 48, 0.99),
        # Lite0's gradients vary along the path: two estimates of 256 draws each agree at
        # r 0.985-0.99 (128: 0.97), the Monte-Carlo floor of the comparison
        pytest.param("efficientnet", 112, 256, 0.975, marks=pytest.mark.slow),
    ],
)
def test_gradient_shap_agrees_with_captum_in_expectation(request, arch, size, samples, floor):
    """One black reference, no noise: both estimate the same expectation over the path
    (each with its own draws), so with enough draws the maps agree."""
    model = request.getfixturevalue(arch)[0]
    torch.manual_seed(2)
    x = torch.rand(2, 3, size, size)
    targets, black = runner_up(model, x), torch.zeros(1, 3, size, size)
    ours = gradient_shap(model, x, targets, samples=samples, reference=black, batch_size=64)
    peer = captum_attr.GradientShap(model)
    torch.manual_seed(5)
    chunks = (
        [  # captum holds every draw at once: 32 at a time, averaged
            peer.attribute(x, baselines=black, target=targets, n_samples=32)
            for _ in range(samples // 32)
        ]
        if samples > 32
        else [peer.attribute(x, baselines=black, target=targets, n_samples=samples)]
    )
    theirs = torch.stack(chunks).mean(0).sum(1)
    assert_correlated(f"gradient_shap {arch}", ours, theirs, floor=floor)


def test_integrated_gradients_match_captum(case):
    arch, model, x, targets, _ = case
    ours = integrated_gradients(model, x, targets, batch_size=25)
    theirs = captum_attr.IntegratedGradients(model).attribute(
        x, target=targets, n_steps=50, method="gausslegendre", internal_batch_size=25
    )
    assert_correlated(f"integrated_gradients {arch}", ours, theirs.sum(1))


def test_deconvnet_on_lite0_does_not_depend_on_the_image(efficientnet):
    model, x, targets, _ = efficientnet
    other = torch.randn_like(x)
    assert torch.allclose(deconvnet(model, x, targets), deconvnet(model, other, targets))
