"""Model registry: offline default, layer listing and defaults, clear errors."""

import pytest
import torch
import torchvision

from reportgen import data
from reportgen.capture import record_outputs
from reportgen.models import (
    ModelError,
    apply_weights,
    default_cam_layer,
    default_feature_layers,
    get_spec,
    list_layers,
    load_model,
)


def classify(model, spec, image_id: str) -> int:
    _, records = data.read_manifest()
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
