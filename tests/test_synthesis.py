"""Synthesis techniques: each test shows what the technique claims, on a small case.

Fast tests use the tiny conv net with its weights scaled by 3 (at PyTorch's default
initialisation its logits barely depend on the input, so nothing can be optimised);
``slow`` tests use EfficientNet-Lite0 and the photos shipped with scikit-image.
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from torch import nn

import reportgen.techniques.synthesis as syn
from reportgen.capture import LayerNotFound
from reportgen.data import model_input
from reportgen.techniques import REGISTRY, parse_setting

MEAN = STD = (0.5, 0.5, 0.5)
NORM = {"mean": MEAN, "std": STD}
PHOTOS = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
)
NAMES = ("filter_vis", "class_model", "deepdream", "inversion", "fooling")


def photos(names: tuple[str, ...], size: int) -> torch.Tensor:
    """Shipped photos resized to ``size`` px, normalised like the models' input."""
    rgb = np.stack([model_input(getattr(skimage.data, n)(), (size, size)) for n in names])
    return (torch.from_numpy(rgb).permute(0, 3, 1, 2) - 0.5) / 0.5


def channel_means(model, x: torch.Tensor, layer: str) -> torch.Tensor:
    with torch.no_grad():
        return syn._channel_means(syn.activations(model, x, [layer])[layer])


def predict(model, images: torch.Tensor) -> torch.Tensor:
    """The model's logits for display images."""
    with torch.no_grad():
        return model((images - 0.5) / 0.5)


@pytest.fixture
def net(tiny):
    with torch.no_grad():
        for p in tiny.parameters():
            p.mul_(3)
    return tiny


@pytest.fixture
def small() -> torch.Tensor:
    return photos(PHOTOS[:3], 32)


def run(name: str, model, x: torch.Tensor, seed: int = 0) -> syn.Synthesised:
    """Each technique on the tiny net with cheap settings."""
    if name == "filter_vis":
        units = [("features.1", 2), ("features.3", 1)]
        return syn.filter_vis(model, units=units, size=16, steps=5, seed=seed, **NORM)
    if name == "class_model":
        return syn.class_model(model, classes=[0, 3], size=16, steps=5, seed=seed, **NORM)
    if name == "deepdream":
        return syn.deepdream(model, x, layer="features.3", jitter=4, seed=seed, **NORM)
    if name == "inversion":
        return syn.inversion(model, x, layer="features.1", steps=5, seed=seed, **NORM)
    return syn.fooling(model, x, [1, 2, 0], steps=5, step_size=8, seed=seed, **NORM)


# --- The shared machinery -----------------------------------------------------------------


def test_activations_stop_after_the_deepest_layer(net, small):
    ran: list[str] = []
    for name in ("features.2", "features.3", "fc"):
        dict(net.named_modules())[name].register_forward_hook(lambda *_, n=name: ran.append(n))
    x = small.clone().requires_grad_(True)
    acts = syn.activations(net, x, ["features.1", "features.0"])
    assert set(acts) == {"features.0", "features.1"} and ran == []
    (grad,) = torch.autograd.grad(acts["features.1"].sum(), x)
    assert grad.abs().sum() > 0
    assert syn.activations(net, small, ["fc"])["fc"].shape == (3, 5)


def test_activations_name_an_unknown_layer(net, small):
    with pytest.raises(LayerNotFound, match="features.1"):
        syn.activations(net, small, ["feature.1"])


def test_random_transform_without_randomness_pads_the_image(monkeypatch):
    """At the centre of every draw (scale 1, no rotation, no shift) the canvas is the
    image with a 6 px grey border: the 12 px pad less the 8 + 4 px of jitter."""
    monkeypatch.setattr(  # where _random_transform looks it up
        "reportgen.techniques.synthesis_machinery._rand",
        lambda g, *shape, device: torch.full(shape, 0.5),
    )
    image = torch.rand(2, 3, 20, 20)
    out = syn._random_transform(image, torch.Generator())
    assert out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out[..., 6:26, 6:26], image, atol=1e-5, rtol=0)
    assert torch.all(out[..., :6, :] == 0.5)


# --- What each technique claims, on the tiny net --------------------------------------------


@pytest.mark.parametrize("inplace", [True, False])
def test_redirected_relu6_gradient_by_hand(inplace):
    """Item 0 fires somewhere: its gradient is ReLU6's own (zero outside (0, 6)). Item 1
    never fires: it gets the incoming gradient except where that points out of (0, 6),
    until the redirection is switched off. The original modules are back afterwards."""
    relu = nn.ReLU6(inplace=inplace)
    model = nn.Sequential(nn.Identity(), relu)
    x = torch.tensor([[[-1.0, 2.0, 7.0, 3.0]], [[-1.0, -2.0, 8.0, -3.0]]], requires_grad=True)
    up = torch.tensor([[[1.0, -1.0, 1.0, 1.0]], [[1.0, -1.0, -1.0, 1.0]]])
    with syn._redirected_relus(model) as redirect:
        y = model(x.clone())
        (grad,) = torch.autograd.grad((y * up).sum(), x)
        redirect(False)  # lucid's schedule: after its first steps, ReLU6's own gradient
        (plain,) = torch.autograd.grad((model(x.clone()) * up).sum(), x)
    torch.testing.assert_close(y.detach(), x.detach().clamp(0, 6))
    torch.testing.assert_close(plain[1], torch.zeros(1, 4))
    torch.testing.assert_close(grad[0], torch.tensor([[0.0, -1.0, 0.0, 1.0]]))
    # at x = -2 a step of -1 points further below 0 (dropped); at x = 8 the -1 points back in
    torch.testing.assert_close(grad[1], torch.tensor([[1.0, 0.0, -1.0, 1.0]]))
    assert model[1] is relu


def test_redirected_relu_gradient_by_hand():
    """ReLU has no upper bound: a silent item keeps the gradient wherever it is positive."""
    model = nn.Sequential(nn.Identity(), nn.ReLU())
    x = torch.tensor([[[-1.0, 2.0, 7.0]], [[-1.0, -2.0, -0.5]]], requires_grad=True)
    up = torch.tensor([[[1.0, -1.0, 1.0]], [[1.0, -1.0, 2.0]]])
    with syn._redirected_relus(model):
        (grad,) = torch.autograd.grad((model(x) * up).sum(), x)
    torch.testing.assert_close(grad, torch.tensor([[[0.0, -1.0, 1.0]], [[1.0, 0.0, 2.0]]]))


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_filter_vis_raises_every_unit_even_silent_ones(net, param):
    """Every unit ends above where it started; units silent on the start image (ReLU at 0
    everywhere, so the ordinary gradient is 0) start thanks to the redirected gradient."""
    units = [("features.1", c) for c in range(8)] + [("features.3", c) for c in range(6)]
    out = syn.filter_vis(net, units=units, size=32, steps=50, param=param, **NORM)
    assert out.images.shape == (14, 3, 32, 32)
    assert 0 <= out.images.min() and out.images.max() <= 1
    assert torch.all(out.final > out.start), (out.start, out.final)
    silent = out.start == 0
    assert silent.sum() >= 5 and torch.all(out.final[silent] > 0)
    if param == "pixel":
        assert out.extra["stretched"].shape == out.images.shape


def test_filter_vis_final_is_measured_on_the_returned_images(net):
    units = [("features.3", 1), ("features.1", 5), ("features.3", 3)]
    out = syn.filter_vis(net, units=units, size=24, steps=10, **NORM)
    for k, (layer, c) in enumerate(units):
        value = channel_means(net, (out.images[k : k + 1] - 0.5) / 0.5, layer)[0, c]
        assert value == pytest.approx(float(out.final[k]), abs=1e-4)


def test_class_model_raises_the_logit(net):
    out = syn.class_model(net, classes=[0, 3, 4], size=32, steps=50, l2=0.0, **NORM)
    logits = predict(net, out.images)
    torch.testing.assert_close(logits.gather(1, torch.tensor([[0], [3], [4]]))[:, 0], out.final)
    torch.testing.assert_close(logits.softmax(1)[[0, 1, 2], [0, 3, 4]], out.extra["probability"])
    assert torch.all(out.final > out.start + 0.2), (out.start, out.final)


def test_class_model_and_fooling_read_a_multi_label_model_s_sigmoid(net, small):
    """Under ``output="sigmoid"`` (a multi-label model) the probabilities these views
    report are each class's sigmoid, not a softmax over the classes."""
    out = syn.class_model(net, classes=[0, 3], size=32, steps=3, output="sigmoid", **NORM)
    torch.testing.assert_close(out.extra["probability"], out.final.sigmoid())
    targets = (predict(net, small * 0.5 + 0.5).argmax(1) + 1) % 5
    out = syn.fooling(net, small, targets, steps=3, output="sigmoid", **NORM)
    logits = predict(net, out.images).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(out.final, torch.nn.functional.logsigmoid(logits))
    torch.testing.assert_close(out.extra["p_after"], logits.sigmoid())


def test_deepdream_raises_the_layer_objective(net, small):
    out = syn.deepdream(net, small, layer="features.3", jitter=4, **NORM)
    assert out.images.shape == small.shape
    assert torch.all(out.final > 2 * out.start), (out.start, out.final)


def test_inversion_reduces_the_relative_feature_error(net, small):
    out = syn.inversion(net, small, layer="features.3", steps=100, **NORM)
    assert torch.all(out.final < out.start / 2), (out.start, out.final)
    assert out.final.max() < 0.25


def test_fooling_reaches_each_target_and_then_stops(net, small):
    predicted = predict(net, small * 0.5 + 0.5).argmax(1)
    targets = (predicted + 1) % 5
    targets[0] = predicted[0]  # already there: no step, no change
    out = syn.fooling(net, small, targets, steps=50, step_size=8.0, **NORM)
    e = out.extra
    assert e["success"].all() and torch.equal(predict(net, out.images).argmax(1), targets)
    assert e["steps"][0] == 0 and e["perturbation"][0].abs().max() == 0
    assert torch.all(e["steps"][1:] > 0) and torch.all(e["steps"] < 50)
    assert torch.all(e["linf"] <= e["steps"] * 8.0 + 1e-3)
    assert torch.all(e["p_after"] > e["p_before"] - 1e-6)
    torch.testing.assert_close(e["linf"], 255 * e["perturbation"].flatten(1).abs().amax(1))
    torch.testing.assert_close(e["l2"], 255 * e["perturbation"].flatten(1).norm(dim=1))
    torch.testing.assert_close(
        out.images, (small * 0.5 + 0.5 + e["perturbation"]), atol=1e-6, rtol=0
    )


def test_fooling_respects_epsilon(net, small):
    targets = (predict(net, small * 0.5 + 0.5).argmax(1) + 3) % 5
    out = syn.fooling(net, small, targets, steps=20, step_size=4.0, epsilon=10.0, **NORM)
    assert torch.all(out.extra["linf"] <= 10.0 + 1e-3)


# --- Every technique: determinism, an untouched model, the registry ----------------------


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_images(net, small, name):
    first, again = run(name, net, small), run(name, net, small)
    assert torch.equal(first.images, again.images) and torch.equal(first.final, again.final)
    if name in ("filter_vis", "class_model", "inversion"):  # the others start from x
        assert not torch.equal(first.images, run(name, net, small, seed=1).images)


@pytest.mark.parametrize("name", NAMES)
def test_the_model_is_left_as_it_was(net, small, name):
    net.train()
    net.features[0].bias.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    run(name, net, small)
    assert all(m.training for m in net.modules())
    assert not net.features[0].bias.requires_grad and net.fc.weight.requires_grad
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_the_registry_lists_five_settable_techniques():
    for name in NAMES:
        technique = REGISTRY[name]
        assert technique.family == "synthesis" and technique.needs_gradient
        settings = technique.settings()
        assert "steps" in settings
        assert not {"units", "classes", "mean", "std", "layer"} & set(settings)
        assert set(syn.PAPER_STEPS[name]) <= set(settings)
    assert parse_setting("filter_vis.steps=512") == ("filter_vis", "steps", 512)
    assert parse_setting("fooling.epsilon=8") == ("fooling", "epsilon", 8.0)
    assert REGISTRY["filter_vis"].settings()["param"] == "fourier"


def test_bad_requests_are_explained(net, small):
    with pytest.raises(ValueError, match="units"):
        syn.filter_vis(net, units=[], **NORM)
    with pytest.raises(ValueError, match="fourier, pixel"):
        syn.filter_vis(net, units=[("features.1", 0)], param="pixels", **NORM)
    with pytest.raises(ValueError, match="has 8 channels"):
        syn.filter_vis(net, units=[("features.1", 8)], steps=1, **NORM)
    with pytest.raises(LayerNotFound):
        syn.deepdream(net, small, layer="features.9", **NORM)
    with pytest.raises(ValueError, match="classes"):
        syn.class_model(net, classes=[], **NORM)
    with pytest.raises(ValueError, match="targets"):
        syn.fooling(net, small, [1, 2], **NORM)


# --- The real model (EfficientNet-Lite0) ---------------------------------------------------

# Four channels (0-3, not chosen) of a low, a middle and the last layer.
UNITS = [(layer, c) for layer in ("blocks.2.1.bn2", "blocks.4.2.bn2", "bn2") for c in range(4)]


@pytest.mark.slow
@pytest.mark.parametrize("param, steps", [("fourier", 96), ("pixel", 40)])
def test_activation_maximisation_beats_a_photo(lite0, param, steps):
    """Measured: the synthesised images drive their channel to a median 20-30x its mean
    activation on chelsea (224 px); no unit ends below chelsea's value (a few channels
    chelsea already drives hard, or that barely depend on the input, gain only 1.3-2x;
    ReLU6 caps a channel's mean at 6)."""
    model, _spec = lite0
    x = photos(("chelsea",), 224)
    photo = torch.stack([channel_means(model, x, layer)[0, c] for layer, c in UNITS])
    out = syn.filter_vis(model, units=UNITS, steps=steps, param=param, **NORM)
    ratio = out.final / photo.clamp_min(1e-3)
    print(f"{param}: photo {photo.numpy().round(2)}, final {out.final.numpy().round(2)}")
    assert torch.all(out.final >= photo - 1e-3)
    assert ratio.median() >= 10


@pytest.mark.slow
def test_class_models_are_classified_as_their_class(lite0):
    """Measured (default settings): logits rise from about 0 to 30-50; every image is
    classified as its class, at p 0.85-1.0."""
    model, _spec = lite0
    classes = [1, 130, 409, 950]  # goldfish, flamingo, analog clock, orange
    out = syn.class_model(model, classes=classes, **NORM)
    assert torch.all(out.final > out.start + 15), (out.start, out.final)
    assert predict(model, out.images).argmax(1).tolist() == classes
    assert torch.all(out.extra["probability"] > 0.5), out.extra["probability"]


@pytest.mark.slow
def test_deepdream_amplifies_what_the_layer_sees(lite0):
    """Measured: the layer's mean squared activation grows 1.6-2.3x."""
    model, _spec = lite0
    x = photos(("chelsea", "coffee"), 224)
    for layer in ("blocks.3.2.bn2", "blocks.5.3.bn2"):
        out = syn.deepdream(model, x, layer=layer, **NORM)
        assert torch.all(out.final > 1.3 * out.start), (layer, out.start, out.final)


@pytest.mark.slow
def test_inversion_of_a_shallow_layer_is_close(lite0):
    """Measured at blocks.1.1.bn2: relative feature error from 0.51-0.59 (noise) to
    0.03-0.10 for the eight photos."""
    model, _spec = lite0
    out = syn.inversion(model, photos(PHOTOS, 224), layer="blocks.1.1.bn2", **NORM)
    assert torch.all(out.final < 0.2) and torch.all(out.final < out.start / 4), out.final


@pytest.mark.slow
def test_fooling_reaches_a_far_class_on_every_photo(lite0):
    """Measured: all 8 photos reach the class 500 places away from their prediction in
    2-16 steps of 1/255 (L-inf 2-16 in 0..255 units)."""
    model, _spec = lite0
    x = photos(PHOTOS, 224)
    targets = (predict(model, x * 0.5 + 0.5).argmax(1) + 500) % 1000
    out = syn.fooling(model, x, targets, **NORM)
    e = out.extra
    assert e["success"].float().mean() == 1.0
    assert torch.equal(predict(model, out.images).argmax(1), targets)
    assert torch.all(e["linf"] <= e["steps"] * 1.0 + 1e-3) and e["linf"].max() <= 64
    assert torch.all(e["l2"] <= e["linf"] * (3 * 224 * 224) ** 0.5)
