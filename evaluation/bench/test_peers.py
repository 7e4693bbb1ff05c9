"""Our techniques beside pytorch-grad-cam's and captum's, same model, inputs, targets, device.

Groups pair ``who = ours`` with ``who = <peer>``; ``evaluation.bench.report`` turns the
JSON into ratios (ours / peer, median times). The headline group times all six gradient
CAMs of pytorch-grad-cam's list: theirs one after the other, ours from one capture, and a
plain forward pass (inference mode) as the floor.
"""

from __future__ import annotations

import pytest
import torch

from reportgen import techniques
from reportgen.techniques.cam import cam_maps

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
captum_attr = pytest.importorskip("captum.attr")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

LAYER = "bn2"  # the default CAM layer of EfficientNet-Lite0 (feeds pooling + classifier)
PERTURB_LAYER = "blocks.5"  # 192 channels: Score-CAM / Ablation-CAM at a size CI can afford
SIX = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "eigencam": "EigenCAM",
}
ROWS = 8  # rows per forward pass for the perturbation methods, the same on both sides


def peer_cam(model, name: str, layer: str, x, targets, **attrs):
    """One pytorch-grad-cam method the way its README uses it (hooks live for one call)."""
    module = dict(model.named_modules())[layer]
    with getattr(pytorch_grad_cam, name)(model=model, target_layers=[module]) as cam:
        for key, value in attrs.items():
            setattr(cam, key, value)
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])


def test_six_cams_ours_one_capture(measure, lite0, inputs):
    model, spec = lite0
    x, t = inputs
    measure(
        "six gradient CAMs", "ours", lambda: cam_maps(model, x, t, [LAYER], list(SIX), "classifier")
    )


def test_six_cams_pytorch_grad_cam(measure, lite0, inputs):
    model, _ = lite0
    x, t = inputs
    measure(
        "six gradient CAMs",
        "pytorch-grad-cam",
        lambda: [peer_cam(model, peer, LAYER, x, t) for peer in SIX.values()],
    )


def test_plain_forward(measure, lite0, inputs):
    model, _ = lite0
    x, _ = inputs

    def forward():
        with torch.inference_mode():
            return model(x)

    measure("six gradient CAMs", "forward pass", forward)


def test_six_cams_interleaved(paired, lite0, inputs):
    """The headline ratios from one interleaved run: each round times ours, the peer's six
    and a plain forward pass back to back (order rotating), so drift on a shared machine
    hits all three alike; the report takes the median of the per-round ratios."""
    model, _ = lite0
    x, t = inputs

    def forward():
        with torch.inference_mode():
            return model(x)

    paired(
        "six gradient CAMs, interleaved",
        {
            "ours": lambda: cam_maps(model, x, t, [LAYER], list(SIX), "classifier"),
            "pytorch-grad-cam": lambda: [
                peer_cam(model, peer, LAYER, x, t) for peer in SIX.values()
            ],
            "forward pass": forward,
        },
    )


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
@pytest.mark.parametrize("who", ["ours", "pytorch-grad-cam"])
def test_one_cam(measure, lite0, inputs, method, who):
    model, _ = lite0
    x, t = inputs
    if who == "ours":
        run = techniques.get(method).run
        fn = lambda: run(model, x, t, layer=LAYER, classifier="classifier")  # noqa: E731
    else:
        fn = lambda: peer_cam(model, SIX[method], LAYER, x, t)  # noqa: E731
    measure(f"{method} at {LAYER}", who, fn)


@pytest.mark.parametrize("method, peer", [("scorecam", "ScoreCAM"), ("ablationcam", "AblationCAM")])
@pytest.mark.parametrize("who", ["ours", "pytorch-grad-cam"])
def test_perturbation_cam(measure, lite0, inputs, method, peer, who):
    model, _ = lite0
    x, t = inputs
    if who == "ours":
        run = techniques.get(method).run
        fn = lambda: run(model, x, t, layer=PERTURB_LAYER, batch_size=ROWS)  # noqa: E731
    else:
        fn = lambda: peer_cam(model, peer, PERTURB_LAYER, x, t, batch_size=ROWS)  # noqa: E731
    measure(f"{method} at {PERTURB_LAYER}", who, fn)


@pytest.mark.parametrize("who", ["ours", "pytorch-grad-cam"])
def test_ablationcam_at_head(measure, benchmark, lite0, inputs, who):
    """Ablation-CAM at bn2, which feeds pooling + the classifier: ours reads every channel's
    drop off the classifier's weights after one clean pass (checked against its logits);
    pytorch-grad-cam runs the whole network once per channel (1280 per image: minutes on
    a 2-core CPU, so its side runs only when benchmarks are timed)."""
    model, spec = lite0
    x, t = inputs
    if who == "ours":
        run = techniques.get("ablationcam").run
        options = {"layer": LAYER, "classifier": spec.classifier, "batch_size": ROWS}
        fn = lambda: run(model, x, t, **options)  # noqa: E731
    else:
        if benchmark.disabled:
            pytest.skip("1280 whole-network passes per image: timed with --benchmark-enable")
        fn = lambda: peer_cam(model, "AblationCAM", LAYER, x, t, batch_size=ROWS)  # noqa: E731
    measure(f"ablationcam at {LAYER}", who, fn)


CAPTUM = {  # ours -> (captum class, its attribute() keywords)
    "saliency": ("Saliency", {"abs": True}),
    "integrated_gradients": ("IntegratedGradients", {"n_steps": 50, "internal_batch_size": ROWS}),
    "occlusion": ("Occlusion", {"sliding_window_shapes": (3, 32, 32), "strides": (3, 16, 16)}),
}


@pytest.mark.parametrize("method", list(CAPTUM))
@pytest.mark.parametrize("who", ["ours", "captum"])
def test_pixel_method(measure, lite0, inputs, method, who):
    model, spec = lite0
    x, t = inputs
    if who == "ours":
        run = techniques.get(method).run
        options = {"batch_size": ROWS, "mean": spec.mean, "std": spec.std}
        fn = lambda: run(model, x, t, **options)  # noqa: E731
    else:
        name, kwargs = CAPTUM[method]
        attribution = getattr(captum_attr, name)(model)
        if method == "occlusion":
            kwargs = {**kwargs, "perturbations_per_eval": ROWS}
        fn = lambda: attribution.attribute(x.clone().requires_grad_(), target=t, **kwargs)  # noqa: E731
    measure(method, who, fn)
