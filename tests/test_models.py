"""Model registry: offline default, layer listing and defaults, clear errors."""

import pytest
import torch
import torchvision
from torch import nn

from reportgen import data
from reportgen.capture import frozen, hooks, record_outputs
from reportgen.models import (
    ModelError,
    apply_weights,
    default_cam_layer,
    default_feature_layers,
    get_spec,
    list_layers,
    load_model,
)
from reportgen.sources import folders


def classify(model, spec, image_id: str) -> int:
    _, records = folders.read_manifest()
    record = next(r for r in records if r.id == image_id)
    x = torch.from_numpy(data.model_input(data.load_rgb(record), spec.input_size))
    x = (x.permute(2, 0, 1)[None] - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(
        spec.std
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        return int(model(x).argmax())


def test_default_model_is_a_real_imagenet_classifier(lite0):
    model, spec = lite0
    assert len(spec.class_names) == 1000
    assert classify(model, spec, "chelsea") in {281, 282, 285}  # tabby, tiger, Egyptian cat
    assert classify(model, spec, "coffee") == 967  # espresso
    assert spec.cam_layers[0] == "bn2" and spec.classifier == "classifier"


def test_default_layers_of_a_torchvision_resnet():
    model = torchvision.models.resnet18(weights=None).eval()
    layers, ids = record_outputs(model, torch.zeros(1, 3, 224, 224))
    assert default_cam_layer(layers, ids) == "layer4"
    assert default_feature_layers(layers) == (
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    )


def test_list_layers_marks_spatial_outputs(lite0):
    model, spec = lite0
    shapes = {layer.name: layer for layer in list_layers(model, spec)}
    assert shapes["bn2"].shape == (1, 1280, 7, 7) and shapes["bn2"].spatial
    assert not shapes["classifier"].spatial
    assert all(name in shapes for name in spec.feature_layers)


def test_unknown_names_suggest_close_matches():
    with pytest.raises(ModelError, match="efficientnet_lite0"):
        get_spec("efficientnet_lite")
    with pytest.raises(ModelError, match="resnet18"):
        get_spec("torchvision/resnt18")
    with pytest.raises(ModelError, match="timm has no model 'resnt18'.*resnet18"):
        get_spec("timm/resnt18")


def test_a_timm_model_by_name_with_its_own_configuration_and_weights(tmp_path):
    """``timm/NAME`` takes timm's bundled configuration (no download) and ``--weights``;
    a run on it explains and scores like any model."""
    import timm

    from reportgen.cli import main

    spec = get_spec("timm/tf_efficientnet_lite0")
    assert spec.input_size == (224, 224) and spec.mean == (0.5, 0.5, 0.5)
    assert get_spec("timm/resnet18").mean == (0.485, 0.456, 0.406)
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pt"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=10).state_dict(), path)
    spec = get_spec("timm/resnet18")
    with pytest.raises(ModelError):  # a 10-class state dict does not fit 1000 classes
        load_model(spec, str(path))
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    model, filled = load_model(spec, str(path))
    assert filled.cam_layers == ("layer4",) and filled.classifier == "fc"
    out = tmp_path / "run"
    argv = ["run", "--model", "timm/resnet18", "--weights", str(path), "--out", str(out)]
    argv += ["--limit", "2", "--methods", "gradcam,saliency", "--metrics", "complexity"]
    argv += ["--input-size", "112"]  # what is tested does not depend on the size
    assert main(argv) == 0
    assert (out / "methods" / "gradcam.html").is_file()


def test_user_factory_and_weights(tmp_path):
    spec = get_spec("tests.conftest:TinyGapNet")
    model, filled = load_model(spec)
    assert filled.cam_layers == ("features",) and filled.classifier == "fc"
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    again, _ = load_model(spec, str(path))
    assert torch.equal(again.fc.weight, model.fc.weight)
    torch.save({"other.weight": torch.zeros(1)}, path)
    with pytest.raises(ModelError, match="w.pt.*does not fit"):
        apply_weights(model, path)
    with pytest.raises(ModelError, match="does not exist"):
        apply_weights(model, tmp_path / "missing.pt")


def _random_stats(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model.eval()


def test_folded_copy_folds_norms_into_the_convolutions_before_them():
    """Conv -> norm pairs (torch's and timm's norm + activation) are folded: same logits,
    same outputs at every named layer, the norms gone; the model itself is untouched."""
    from timm.layers import BatchNormAct2d

    from reportgen.capture import activations
    from reportgen.models import folded_copy

    model = _random_stats(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
            BatchNormAct2d(8, act_layer=nn.ReLU6),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 5),
        )
    )
    copy, folded = folded_copy(model, (16, 16))
    assert folded == 2 and copy is not model
    assert isinstance(copy[1], nn.Identity) and isinstance(copy[4], nn.Sequential)
    assert isinstance(model[1], nn.BatchNorm2d)  # the original keeps its norms
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), model(x), rtol=1e-4, atol=1e-4)
        for layer in ("1", "4"):
            got, expected = (activations(m, x, [layer])[layer] for m in (copy, model))
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [16, 15, 21])
def test_folded_copy_pads_tensorflow_same_convolutions_without_a_copy(size):
    """timm's Conv2dSame (3x3 and 5x5 at stride 2, one before a norm) reads the same pixels
    after the swap at even and odd sizes: same logits and input gradients."""
    from timm.layers import Conv2dSame

    from reportgen.models import _SamePadded, folded_copy

    model = _random_stats(
        nn.Sequential(
            Conv2dSame(3, 8, 3, stride=2),
            nn.BatchNorm2d(8),
            Conv2dSame(8, 8, 5, stride=2, groups=8),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 5),
        )
    )
    copy, folded = folded_copy(model, (size, size))
    assert folded == 1 and isinstance(copy[0], _SamePadded) and isinstance(copy[2], _SamePadded)
    x = torch.randn(2, 3, size, size, requires_grad=True)
    got, expected = copy(x), model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    grads = [torch.autograd.grad(y.square().sum(), x)[0] for y in (got, expected)]
    torch.testing.assert_close(*grads, rtol=1e-4, atol=1e-4)


class _Residual(nn.Module):
    """The convolution's output is used twice: folding its norm would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return (self.bn(y) + y).mean((2, 3))


def test_folded_copy_keeps_the_model_when_a_fold_would_change_it():
    from reportgen.models import folded_copy

    model = _random_stats(_Residual())
    assert folded_copy(model, (8, 8)) == (model, 0)


@pytest.mark.parametrize("act", [nn.ReLU6, nn.ReLU])
def test_folded_copy_runs_the_rectifier_inside_the_convolution(act):
    """Without a gradient (float32, and bfloat16 autocast) the rectifier after a folded
    convolution runs inside it (oneDNN's fused call, "same" padding included): the model's
    outputs. With a hook on the convolution (it expects the output before the rectifier),
    one on the rectifier's input (the top patches' pre-activations), the rectifier swapped
    (a backward rule), or a gradient, the plain path runs."""
    from timm.layers import BatchNormAct2d, Conv2dSame

    from reportgen.convs import _Fused
    from reportgen.models import folded_copy
    from reportgen.techniques.synthesis_machinery import _redirected_relus

    model = _random_stats(
        nn.Sequential(
            Conv2dSame(3, 8, 3, stride=2),
            BatchNormAct2d(8, act_layer=act),
            nn.Conv2d(8, 8, 3, padding=1, groups=8),
            BatchNormAct2d(8, act_layer=act),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 5),
        )
    )
    copy, folded = folded_copy(model, (16, 16))
    assert folded == 2 and isinstance(copy[0], _Fused) and isinstance(copy[2], _Fused)
    assert isinstance(copy[1][-1], act)  # a swap of every rectifier still finds it
    x = torch.randn(2, 3, 16, 16)

    def fused_pass(**cast) -> tuple[torch.Tensor, torch.Tensor, bool]:
        copy[0].__dict__.pop("made", None)
        with torch.inference_mode(), torch.autocast("cpu", **cast):
            got, expected = copy(x), model(x)
        return got.float(), expected.float(), "made" in copy[0].__dict__

    got, expected, fused = fused_pass(enabled=False)
    assert fused
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    got, expected, fused = fused_pass(dtype=torch.bfloat16)
    assert fused
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05)

    seen = []
    with hooks(forward=[(copy[0], lambda m, i, out: seen.append(out.clone()))]):
        got, expected, fused = fused_pass(enabled=False)
    assert not fused and (seen[0] < 0).any()  # the convolution's own output, before the rectifier
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)

    with hooks(pre=[(copy[1][-1], lambda m, args: seen.append(args[0].clone()))]):
        got, expected, fused = fused_pass(enabled=False)
    assert not fused and (seen[1] < 0).any()  # the rectifier's input, before it

    def gradients() -> tuple[list[torch.Tensor], bool]:
        copy[0].__dict__.pop("made", None)
        x.requires_grad_(True)
        with frozen(copy):  # as every technique's gradient passes: the input's gradient only
            grads = [torch.autograd.grad(m(x).square().sum(), x)[0] for m in (copy, model)]
        return grads, "made" in copy[0].__dict__

    with _redirected_relus(copy) as redirect:
        redirect(False)
        got, expected, fused = fused_pass(enabled=False)
    assert not fused
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    grads, fused = gradients()
    assert not fused
    torch.testing.assert_close(*grads, rtol=1e-4, atol=1e-4)
