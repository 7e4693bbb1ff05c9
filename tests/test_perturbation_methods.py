"""Forward-only techniques compute what their papers define.

Closed forms on hand-built models (occlusion, RISE, Score-CAM, Ablation-CAM), then the
reference libraries on real networks: captum's Occlusion, pytorch-grad-cam's ScoreCAM and
AblationCAM, torchcam's ScoreCAM. Run with ``-s`` to see the measured correlations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import reportgen
from reportgen import techniques
from reportgen.capture import Capture, LayerNotFound, preserved_state
from reportgen.techniques.perturbation import (
    RiseMasks,
    ablation_weights,
    ablationcam,
    minmax,
    occlusion,
    rise,
    rows_for_memory,
    rows_per_pass,
    scorecam,
)

from .conftest import TinyGapNet, assert_correlated, pearson, runner_up

METHODS = ["occlusion", "rise", "scorecam", "ablationcam"]
SMALL = {  # settings that fit the 16 px inputs of the tiny model
    "occlusion": {"window": 6, "stride": 4},
    "rise": {"masks": 64, "cells": 4},
    "scorecam": {"layer": "features"},
    "ablationcam": {"layer": "features"},
}


def to_input_size(maps: torch.Tensor, size) -> np.ndarray:
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[
        :, 0
    ].numpy()


class RowCounter:
    """Counts forward passes and the rows (images) in them, through a forward pre-hook."""

    def __init__(self, model: nn.Module):
        self.rows = self.calls = 0
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, _module, args) -> None:
        self.rows += args[0].shape[0]
        self.calls += 1


# --- registry ------------------------------------------------------------------------------


def test_registered_with_paper_cost_and_notes():
    for name in METHODS:
        t = techniques.get(name)
        assert not t.needs_gradient and t.scored
        assert t.paper and t.url.startswith("https://") and t.summary and t.cost and t.notes
    assert techniques.get("occlusion").family == techniques.get("rise").family == "perturbation"
    assert techniques.get("scorecam").needs_layer and techniques.get("ablationcam").needs_layer


# --- occlusion: closed form ----------------------------------------------------------------


class RegionLogit(nn.Module):
    """Two classes; logit 0 is the sum of channel 0 over a box, so only that box matters."""

    def __init__(self, box: tuple[slice, slice]):
        super().__init__()
        self.box = box

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, 0, self.box[0], self.box[1]].sum(dim=(1, 2))
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_occlusion_is_mean_drop_over_covering_windows():
    """12 px, window 4, stride 3: positions 0, 3, 6 and 8 (flush with the far edge)."""
    box = (slice(5, 7), slice(1, 3))
    model = RegionLogit(box)
    x = torch.rand(2, 3, 12, 12) + 0.1  # positive: hiding any of the box lowers the logit
    starts = [0, 3, 6, 8]
    total, count = torch.zeros(2, 12, 12), torch.zeros(12, 12)
    overlaps = torch.zeros(12, 12, dtype=torch.bool)
    clean = model(x).softmax(1)[:, 0]
    for y in starts:
        for x0 in starts:
            hidden = x.clone()
            hidden[:, :, y : y + 4, x0 : x0 + 4] = 0.0
            total[:, y : y + 4, x0 : x0 + 4] += (clean - model(hidden).softmax(1)[:, 0])[
                :, None, None
            ]
            count[y : y + 4, x0 : x0 + 4] += 1
            if y < 7 and y + 4 > 5 and x0 < 3 and x0 + 4 > 1:  # the window meets the box
                overlaps[y : y + 4, x0 : x0 + 4] = True
    maps = occlusion(model, x, [0, 0], window=4, stride=3)
    assert (count > 0).all(), "every pixel, edges included, is covered"
    assert torch.allclose(maps, total / count, atol=1e-6)
    assert torch.equal(maps[0].abs() > 1e-7, overlaps) and torch.equal(maps[1] > 1e-7, overlaps)


def test_occlusion_fill_and_argument_errors():
    model = RegionLogit((slice(0, 4), slice(0, 4)))
    x = torch.ones(1, 3, 8, 8)
    # filling with the image's own value changes nothing
    assert occlusion(model, x, 0, window=4, stride=2, fill=1.0).abs().max() == 0
    assert occlusion(model, x, 0, window=4, stride=2, fill=[1.0, 0.0, 0.0]).abs().max() == 0
    assert occlusion(model, x, 0, window=4, stride=2, fill=0.0).max() > 0
    with pytest.raises(ValueError, match="window 9 px"):
        occlusion(model, x, 0, window=9)
    with pytest.raises(ValueError, match="fill needs"):
        occlusion(model, x, 0, window=4, fill=[0.0, 0.0])


# --- RISE: closed form ---------------------------------------------------------------------


class RegionMean(nn.Module):
    """Two classes whose softmax is exactly (a, 1 − a), a = mean of channel 0 over a box.

    On an all-ones input the target probability is the mean of the mask over the box:
    linear in the mask, so RISE's expectation has a closed form.
    """

    def __init__(self, box: tuple[slice, slice]):
        super().__init__()
        self.box = box

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x[:, 0, self.box[0], self.box[1]].mean(dim=(1, 2)).clamp(1e-9, 1 - 1e-9)
        return torch.stack([a.log(), (1 - a).log()], dim=1)


def rise_expectation(size: int, cells: int, p: float, box: tuple[slice, slice]) -> torch.Tensor:
    """E[S(u)] = Σ_v g(v) E[M(u) M(v)] / p for P = Σ_v g(v) M(v), g uniform on the box.

    A mask is the bilinear interpolation of iid Bernoulli(p) cells, so with interpolation
    weights w: E[M(u) M(v)] = p² + p (1 − p) ⟨w(u), w(v)⟩, averaged over the uniform
    shift. Weights and shift are separable, so the ⟨·,·⟩ term is a product of 1-D kernels
    K(a, b) = mean_s Σ_n w_n(a + s) w_n(b + s); the weights come from up-sampling one-hot
    cell vectors.
    """
    cell = math.ceil(size / cells)
    w = F.interpolate(
        torch.eye(cells, dtype=torch.float64)[:, None],
        size=(cells + 1) * cell,
        mode="linear",
        align_corners=False,
    )[:, 0].T
    k = sum(w[s : s + size] @ w[s : s + size].T for s in range(cell)) / cell
    ky, kx = k[:, box[0]].mean(1), k[:, box[1]].mean(1)
    return (p + (1 - p) * ky[:, None] * kx[None, :]).float()


@pytest.mark.parametrize("p, centred", [(0.5, False), (0.3, False), (0.5, True), (0.3, True)])
def test_rise_converges_to_its_expectation(p, centred):
    box = (slice(1, 8), slice(2, 14))
    model = RegionMean(box)
    expected = rise_expectation(32, 4, p, box)
    ones = torch.ones(1, 3, 32, 32)
    maps = rise(model, ones, 0, masks=4000, cells=4, p=p, seed=0, centred=centred)[0]
    r = pearson(maps.numpy(), expected.numpy())
    print(
        f"RISE{' centred' if centred else ''} vs closed form (p={p}): r = {r:.4f}, "
        f"max |err| = {(maps - expected).abs().max():.4f}"
    )
    assert r >= 0.98
    assert (maps - expected).abs().max() < 0.03
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[box] = True
    assert maps[inside].mean() > maps[~inside].mean() + 0.1
    # a 4-cell grid up-sampled to 40 px spans 10 px per cell; rows 27+ are 2 cells or more
    # from the box, so their mask values are independent of the score: E[S] = E[M] E[P] / p = p
    assert torch.allclose(expected[27:], torch.tensor(p))
    assert abs(maps[27:].mean().item() - p) < 0.01


def test_rise_is_the_weighted_mean_of_its_masks(tiny, batch):
    targets = [1, 4, 0]
    maps = rise(tiny, batch, targets, masks=40, cells=3, p=0.4, seed=3, batch_size=16)
    bank = RiseMasks.draw(40, 3, 0.4, (16, 16), seed=3, device="cpu")
    masks = bank(torch.arange(40))
    assert masks.min() >= 0 and masks.max() <= 1 and masks.shape == (40, 16, 16)
    with torch.no_grad():
        for i, t in enumerate(targets):
            probs = tiny(batch[i : i + 1] * masks[:, None]).softmax(1)[:, t]
            expected = (probs[:, None, None] * masks).sum(0) / (40 * 0.4)
            assert torch.allclose(maps[i], expected, atol=1e-5)


def test_centred_rise_is_the_mean_plus_the_covariance_with_each_pixel(tiny, batch):
    targets = [1, 4, 0]
    maps = rise(tiny, batch, targets, masks=40, cells=3, p=0.4, seed=3, centred=True)
    masks = RiseMasks.draw(40, 3, 0.4, (16, 16), seed=3, device="cpu")(torch.arange(40))
    with torch.no_grad():
        for i, t in enumerate(targets):
            probs = tiny(batch[i : i + 1] * masks[:, None]).softmax(1)[:, t]
            covariance = ((probs - probs.mean())[:, None, None] * masks).sum(0) / 40
            assert torch.allclose(maps[i], probs.mean() + covariance / 0.4, atol=1e-5)


class Constant(nn.Module):
    """The same logits whatever the input: no pixel matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.3, -0.2]]).expand(len(x), 2) + 0 * x.mean()


def test_centred_rise_removes_the_mask_density_pattern():
    """A model that ignores its input has the flat map P: the centred estimate is exactly
    flat, the paper's sum shows the drawn masks' density (the same on every image)."""
    x, probability = torch.rand(1, 3, 32, 32), torch.tensor([0.3, -0.2]).softmax(0)[0]
    plain = rise(Constant(), x, 0, masks=200, cells=4, seed=0)[0]
    centred = rise(Constant(), x, 0, masks=200, cells=4, seed=0, centred=True)[0]
    assert torch.allclose(centred, probability.expand(32, 32), atol=1e-6)
    density = RiseMasks.draw(200, 4, 0.5, (32, 32), 0, "cpu")(torch.arange(200)).mean(0) / 0.5
    assert torch.allclose(plain, probability * density, atol=1e-6)
    assert plain.std() > 0.01


def test_centred_rise_is_closer_to_the_expectation_with_few_masks():
    box = (slice(1, 8), slice(2, 14))
    expected = rise_expectation(32, 4, 0.5, box).numpy()
    r = {False: [], True: []}
    for seed in range(3):
        for centred in r:
            m = rise(
                RegionMean(box),
                torch.ones(1, 3, 32, 32),
                0,
                masks=300,
                cells=4,
                seed=seed,
                centred=centred,
            )
            r[centred].append(pearson(m[0].numpy(), expected))
    print(f"r with the expectation at 300 masks: paper sum {r[False]}, centred {r[True]}")
    assert min(r[True]) > max(r[False])


class Sigmoided(nn.Module):
    """A model that returns its own per-class sigmoid probabilities as its scores."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).sigmoid()


def test_occlusion_and_rise_read_a_multi_label_models_sigmoid(tiny, batch):
    """``output="sigmoid"`` (``--output sigmoid``): the scores are each class's sigmoid, as if
    the model returned them itself (then read raw, ``output=None``); softmax differs."""
    targets = [0, 1, 2]
    settings = {
        "occlusion": {"window": 4, "stride": 4},
        "rise": {"masks": 16, "cells": 2, "batch_size": 16},
    }
    for name, given in settings.items():
        run = techniques.get(name).run
        ours = run(tiny, batch, torch.tensor(targets), output="sigmoid", **given)
        by_hand = run(Sigmoided(tiny), batch, torch.tensor(targets), output=None, **given)
        torch.testing.assert_close(ours, by_hand)
        softmax = run(tiny, batch, torch.tensor(targets), **given)
        assert not torch.allclose(ours, softmax), name


def test_rise_reproducible_and_independent_of_batch_size(tiny, batch):
    a = rise(tiny, batch, 2, masks=100, cells=4, seed=7, batch_size=64)
    b = rise(tiny, batch, 2, masks=100, cells=4, seed=7, batch_size=7)
    c = rise(tiny, batch, 2, masks=100, cells=4, seed=8, batch_size=64)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, c, atol=1e-3)


# --- Score-CAM and Ablation-CAM: closed forms ----------------------------------------------


class SetChannels(nn.Module):
    """Overwrites chosen channels with constants: dead (0) and saturated (2.5) units."""

    def __init__(self, values: dict[int, float]):
        super().__init__()
        self.values = values

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        a = a.clone()
        for k, v in self.values.items():
            a[:, k] = v
        return a


class ConstNet(nn.Module):
    """conv -> SetChannels -> global average pool -> linear; the layer is ``set``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, stride=2)
        self.set = SetChannels({1: 0.0, 3: 2.5, 4: 0.0})
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.set(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture
def const_net() -> ConstNet:
    torch.manual_seed(0)
    return ConstNet().eval()


def test_scorecam_by_hand_and_constant_channels_run_once(const_net, batch):
    """Every channel by hand (constant ones included) equals the deduplicated run."""
    targets = [2, 0, 3]
    with torch.no_grad():
        acts = const_net.set(const_net.conv(batch))
        expected = []
        for i, t in enumerate(targets):
            logits = []
            for k in range(6):
                a = acts[i, k]
                norm = (a - a.min()) / (a.max() - a.min()) if a.max() > a.min() else a * 0
                mask = F.interpolate(
                    norm[None, None], size=(16, 16), mode="bilinear", align_corners=False
                )
                logits.append(const_net(batch[i : i + 1] * mask)[0, t])
            w = torch.stack(logits).softmax(0)
            expected.append(torch.relu((w[:, None, None] * acts[i]).sum(0)))
    counter = RowCounter(const_net)
    try:
        maps = scorecam(const_net, batch, targets, layer="set", batch_size=5)
    finally:
        counter.handle.remove()
    assert torch.allclose(maps, torch.stack(expected), atol=1e-5)
    # 3 clean rows + 3 images x 3 non-constant channels + 1 shared all-zero input
    assert counter.rows == 3 + 3 * 3 + 1 < 3 + 3 * 6


def test_scorecam_top_channels_by_hand(tiny, batch):
    """``channels=K`` (the fast preset): the softmax over the K channels of largest spatial
    variance only, the others weighted 0; K = all channels is the paper's Score-CAM."""
    targets, keep = [2, 0, 1], 3
    with torch.no_grad():
        acts = tiny.features(batch)
        expected = []
        for i, t in enumerate(targets):
            top = acts[i].flatten(1).var(dim=1).topk(keep).indices
            logits = torch.full((acts.shape[1],), -torch.inf)
            for k in top.tolist():
                a = acts[i, k]
                norm = (a - a.min()) / (a.max() - a.min())
                mask = F.interpolate(norm[None, None], size=(16, 16), mode="bilinear")
                logits[k] = tiny(batch[i : i + 1] * mask)[0, t]
            w = logits.softmax(0)
            expected.append(torch.relu((w[:, None, None] * acts[i]).sum(0)))
    counter = RowCounter(tiny)
    try:
        maps = scorecam(tiny, batch, targets, layer="features", channels=keep)
    finally:
        counter.handle.remove()
    assert torch.allclose(maps, torch.stack(expected), atol=1e-5)
    assert counter.rows == 3 + 3 * keep  # the clean pass, then K masked copies an image
    every = scorecam(tiny, batch, targets, layer="features", channels=acts.shape[1])
    assert torch.equal(every, scorecam(tiny, batch, targets, layer="features"))


@pytest.mark.parametrize("classifier", ["fc", None])
def test_ablationcam_closed_form_and_zero_channels_skipped(const_net, batch, classifier):
    """Mean pool + linear after the layer: y_c − y_c^k = W[c, k] · mean(A_k), so
    w_k = W[c, k] · mean(A_k) / y_c. Told the classifier, Ablation-CAM uses that and runs
    the clean pass only; otherwise it runs one row per channel that zeroing changes (the
    two all-zero channels need none), after a check of the replay on 2N rows."""
    targets = [1, 1, 3]
    with torch.no_grad():
        acts = const_net.set(const_net.conv(batch))
        y = const_net(batch)[torch.arange(3), targets]
        w = const_net.fc.weight[targets] * acts.mean(dim=(2, 3)) / y[:, None]
        expected = torch.relu(torch.einsum("nk,nkhw->nhw", w, acts))
    counter = RowCounter(const_net)
    try:
        maps = ablationcam(
            const_net, batch, targets, layer="set", classifier=classifier, batch_size=4
        )
    finally:
        counter.handle.remove()
    assert torch.allclose(maps, expected, atol=1e-5)
    assert maps.abs().sum() > 0
    # clean pass (+ replay check on 2N rows + 4 channels that zeroing changes per image)
    assert counter.rows == (3 if classifier else 3 + 2 * 3 + 3 * 4)


# --- every method: batches, side effects ---------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_per_item_targets_match_single_calls(tiny, batch, method):
    targets = [4, 0, 2]
    run = techniques.get(method).run
    together = run(tiny, batch, torch.tensor(targets), batch_size=5, **SMALL[method])
    assert together.dtype == torch.float32 and not together.is_inference()
    for i, t in enumerate(targets):
        alone = run(tiny, batch[i : i + 1], t, batch_size=64, **SMALL[method])
        assert torch.allclose(together[i], alone[0], atol=1e-5, rtol=1e-4)


def test_model_left_exactly_as_found(batch):
    torch.manual_seed(0)
    model = TinyGapNet(inplace=True).train()
    model.fc.weight.requires_grad_(False)
    for method in METHODS:
        maps = techniques.get(method).run(model, batch, [1, 2, 3], **SMALL[method])
        maps += 1  # an ordinary tensor, not an inference-mode one
    assert model.training and all(m.training for m in model.modules())
    assert not model.fc.weight.requires_grad and model.fc.bias.requires_grad
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all("forward" not in vars(m) for m in model.modules())  # Ablation-CAM's replay
    for method in ["scorecam", "ablationcam"]:
        with pytest.raises(LayerNotFound):
            techniques.get(method).run(model, batch, 0, layer="featurs")
        with pytest.raises(ValueError, match="'fc'"):
            techniques.get(method).run(model, batch, 0, layer="fc")
    assert model.training and all(not m._forward_hooks for m in model.modules())


class SharedReLU(nn.Module):
    """One ReLU module called twice, as in torchvision's BasicBlock."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv2(self.relu(self.conv1(x)))).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_reused_module_is_refused(batch, method):
    """Replacing a reused module's output would replace both of its calls: say so instead."""
    model = SharedReLU().eval()
    with pytest.raises(ValueError, match="'relu' runs 2 times"):
        techniques.get(method).run(model, batch, 0, layer="relu")
    assert not model.relu._forward_hooks
    assert techniques.get(method).run(model, batch, 0, layer="conv2").shape == (3, 16, 16)


def test_rows_per_pass_default_and_errors(tiny, batch):
    counter = RowCounter(tiny)
    try:
        occlusion(tiny, batch[:1], 0, window=4, stride=4)  # 16 windows, CPU default: 8 rows
    finally:
        counter.handle.remove()
    assert (counter.rows, counter.calls) == (1 + 16, 1 + 2)
    assert rows_per_pass(None, batch) == 8 and rows_per_pass(3, batch) == 3
    with pytest.raises(ValueError, match="batch_size"):
        rise(tiny, batch, 0, masks=8, batch_size=0)


def test_inference_mode_and_explain(tiny, batch):
    with torch.inference_mode():
        inside = rise(tiny, batch, 1, **SMALL["rise"])
    assert torch.allclose(inside, rise(tiny, batch, 1, **SMALL["rise"]))
    maps = reportgen.explain(tiny, batch, "scorecam", layer="features", target=[0, 1, 2])
    low = scorecam(tiny, batch, [0, 1, 2], layer="features")
    assert maps.shape == (3, 16, 16)
    assert torch.allclose(maps, torch.from_numpy(to_input_size(low, (16, 16))))


# --- reference libraries -------------------------------------------------------------------


@dataclass
class Case:
    """A real network, its input, per-item targets and two layers to compare at."""

    model: nn.Module
    x: torch.Tensor
    targets: list[int]
    layers: list[str]


@pytest.fixture(scope="module")
def resnet() -> Case:
    """Randomly initialised ResNet-18 (ReLU), two 64 px noise images, runner-up targets."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        targets = model(x).topk(2, dim=1).indices[:, 1].tolist()  # not the argmax
    return Case(model, x, targets, ["layer3", "layer2"])


@pytest.fixture(scope="module")
def efficientnet(lite0) -> Case:
    """The default model on a real photo (scikit-image's cat) at 128 px, its top-1 class.

    Layers: blocks.5 (192 channels, 4 x 4 here, no final activation) and bn1 (32 channels
    after ReLU6). One image keeps the file fast; per-item batching is tested above.
    """
    from skimage.data import chelsea

    model, spec = lite0
    photo = torch.from_numpy(chelsea()).permute(2, 0, 1)[None].float() / 255
    photo = F.interpolate(photo, size=(128, 128), mode="bilinear", antialias=True)
    x = (photo - torch.tensor(spec.mean)[:, None, None]) / torch.tensor(spec.std)[:, None, None]
    with torch.no_grad():
        targets = model.eval()(x).argmax(1).tolist()
    return Case(model, x, targets, ["blocks.5", "bn1"])


@pytest.fixture(params=["resnet", "efficientnet"])
def case(request) -> Case:
    return request.getfixturevalue(request.param)


def test_scorecam_matches_pytorch_grad_cam(case):
    """With pytorch-grad-cam's mask up-sampling (align_corners=True) the maps agree."""
    gradcam_lib = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    for name in case.layers:
        layer = dict(case.model.named_modules())[name]
        with gradcam_lib.ScoreCAM(model=case.model, target_layers=[layer]) as cam:
            cam.batch_size = 64
            theirs = cam(
                input_tensor=case.x, targets=[ClassifierOutputTarget(t) for t in case.targets]
            )
        ours = scorecam(case.model, case.x, case.targets, layer=name, align_corners=True)
        ours = to_input_size(ours, case.x.shape[-2:])
        assert_correlated(f"scorecam {name} vs pytorch-grad-cam", ours, theirs)


def test_scorecam_default_matches_torchcam(efficientnet):
    """Our default (normalise, then half-pixel up-sampling) is torchcam's, at layer size."""
    torchcam_methods = pytest.importorskip("torchcam.methods")
    case = efficientnet
    for name in case.layers:
        with torchcam_methods.ScoreCAM(
            case.model, target_layer=name, batch_size=64, input_shape=tuple(case.x.shape[1:])
        ) as extractor:
            with torch.no_grad():
                scores = case.model(case.x)
            (theirs,) = extractor(class_idx=case.targets, scores=scores)
        ours = scorecam(case.model, case.x, case.targets, layer=name)
        assert_correlated(f"scorecam {name} vs torchcam", ours, theirs)
        # torchcam min-max scales each map; ours keeps raw values
        assert torch.allclose(minmax(ours), theirs, atol=1e-4)


def test_ablationcam_matches_pytorch_grad_cam(case):
    gradcam_lib = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.ablation_layer import AblationLayer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    class ZeroAblation(AblationLayer):
        """The paper's ablation (zero), also where the layer's minimum is not 0."""

        def __call__(self, x):
            for i in range(self.activations.size(0)):
                self.activations[i, self.indices[i], :] = 0
            return self.activations

    for name in case.layers:
        layer = dict(case.model.named_modules())[name]
        with torch.no_grad(), Capture(case.model, [name]) as cap:
            case.model(case.x)
        relu_layer = bool(cap.outputs[name].min() == 0)  # pytorch-grad-cam zeroes only then
        ablation = AblationLayer() if relu_layer else ZeroAblation()
        with gradcam_lib.AblationCAM(
            model=case.model, target_layers=[layer], ablation_layer=ablation, batch_size=64
        ) as cam:
            theirs = cam(
                input_tensor=case.x, targets=[ClassifierOutputTarget(t) for t in case.targets]
            )
        ours = to_input_size(
            ablationcam(case.model, case.x, case.targets, layer=name), case.x.shape[-2:]
        )
        label = f"ablationcam {name} vs pytorch-grad-cam{'' if relu_layer else ' (zeroing)'}"
        assert_correlated(label, ours, theirs)
        if not relu_layer:  # the peer's own convention (minimum - 1e7) is another map here
            with gradcam_lib.AblationCAM(
                model=case.model, target_layers=[layer], batch_size=64
            ) as cam:
                default = cam(
                    input_tensor=case.x, targets=[ClassifierOutputTarget(t) for t in case.targets]
                )
            r = min(pearson(a, b) for a, b in zip(ours, default, strict=True))
            assert r < 0.99, f"at signed {name} the peer's default should differ (r = {r:.3f})"


# --- Ablation-CAM: only the network after the layer runs ------------------------------------


def whole_network_ablation(
    model: nn.Module, x: torch.Tensor, targets: list[int], layer: str, rows: int = 64
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Ablation-CAM as it was computed before the shortcuts: for each channel that is not
    all zero, the whole network with that channel of the layer's output zeroed (a forward
    hook swaps the output). Returns the weights ``[N, K]``, the maps and the rows run."""
    module = dict(model.named_modules())[layer]
    with torch.no_grad(), Capture(model, [layer], for_grad=True) as cap:
        logits = model(x)  # Capture hands a clone downstream: in-place ops cannot reach ours
    acts = cap.outputs[layer]
    n, k = acts.shape[:2]
    clean = logits[torch.arange(n), targets]
    ablated = clean[:, None].repeat(1, k)
    live = acts.flatten(2).ne(0).any(dim=2)
    swap: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda *_: swap["out"])
    try:
        with torch.no_grad():
            for i in range(n):
                for chunk in live[i].nonzero()[:, 0].split(rows):
                    swap["out"] = acts[i].repeat(len(chunk), 1, 1, 1)
                    swap["out"][torch.arange(len(chunk)), chunk] = 0
                    scores = model(x[i].repeat(len(chunk), 1, 1, 1))[:, targets[i]]
                    ablated[i, chunk] = scores
    finally:
        handle.remove()
    weights = (clean[:, None] - ablated) / clean[:, None]
    return weights, torch.relu(torch.einsum("nk,nkhw->nhw", weights, acts)), int(live.sum())


def shortcut_ablation(
    model: nn.Module, x: torch.Tensor, targets: list[int], layer: str, classifier: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Our weights (as ``ablationcam`` computes them) and our maps."""
    with preserved_state(model), torch.inference_mode():
        weights, _ = ablation_weights(
            model, x, torch.tensor(targets), layer, classifier, batch_size=8
        )
    maps = ablationcam(model, x, targets, layer=layer, classifier=classifier)
    return weights.clone(), maps


def assert_same_ablation(ours: tuple, reference: tuple) -> None:
    for a, b in zip(ours, reference[:2], strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()
    assert reference[1].abs().amax(dim=(1, 2)).min() > 0, "a flat map proves nothing"


@pytest.fixture(scope="module")
def photos(lite0) -> tuple[nn.Module, torch.Tensor, list[int]]:
    """The default model, two embedded photos at 48 px (bn2 and blocks.5 are 2 x 2) and their
    runner-up classes. Small, as the whole-network reference runs a pass per live channel
    (over 400 per photo at bn2). Chelsea and rocket, runner-up: at this size their blocks.5
    maps are not all zero after the ReLU (the top-1 classes' are), so maps are tested too."""
    from reportgen import data
    from reportgen.sources import folders

    model, spec = lite0
    records = {r.id: r for r in folders.read_manifest()[1]}
    rgb = [data.load_rgb(records[name]) for name in ("chelsea", "rocket")]
    pixels = np.stack([data.model_input(image, (48, 48)) for image in rgb])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(spec.mean)[:, None, None]) / torch.tensor(spec.std)[:, None, None]
    return model.eval(), x, runner_up(model, x)


@pytest.fixture(scope="module")
def resnet32() -> tuple[nn.Module, torch.Tensor, list[int]]:
    """A randomly initialised torchvision ResNet-18, two 32 px noise images (layer3 2 x 2,
    layer4 1 x 1) and runner-up targets."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32)
    return model, x, runner_up(model, x)


# (model fixture, layer, classifier, a module that runs in the clean pass only, or None
# where nothing but the clean pass runs: the closed form)
SHORTCUTS = [
    ("photos", "bn2", "classifier", None),  # BatchNormAct2d -> global_pool -> classifier
    ("photos", "blocks.5", "classifier", "blocks.4.0"),
    ("resnet32", "layer4", "fc", None),  # avgpool -> flatten -> fc
    ("resnet32", "layer3", "fc", "layer2.0"),  # BasicBlocks after: skips inside layer4
]


@pytest.mark.parametrize("where, layer, classifier, prefix", SHORTCUTS)
def test_ablationcam_same_as_whole_network(request, where, layer, classifier, prefix):
    """The closed form (pooling + linear head) and the replayed tail give the weights and
    maps of one whole-network pass per channel; neither runs the network before the layer
    again."""
    model, x, targets = request.getfixturevalue(where)
    reference = whole_network_ablation(model, x, targets, layer)
    watched = dict(model.named_modules())[prefix or ""]
    counter = RowCounter(watched)
    try:
        ours = shortcut_ablation(model, x, targets, layer, classifier)
    finally:
        counter.handle.remove()
    assert_same_ablation(ours, reference)
    assert counter.rows == 2 * len(x)  # the clean pass of each of the two calls, only


class KeepsOutput(nn.Module):
    """A conv that also keeps its output on itself, for its parent to read later."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.last: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = self.conv(x)
        return self.last


class StatefulNet(nn.Module):
    """stem -> body (the layer) -> + the stem's kept output -> pool -> fc. Skipping the
    stem leaves a stale ``stem.last`` behind: no replay works, the whole network runs."""

    def __init__(self):
        super().__init__()
        self.stem = KeepsOutput()
        self.body = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.body(self.stem(x))
        return self.fc((a + self.stem.last).mean(dim=(2, 3)))


class DerivedSkip(nn.Module):
    """stem -> relu (a function) -> body (the layer) -> times that skip -> pool -> fc. At
    the layer only relu(stem(x)) is referenced, not the stem's output, yet the skip needs
    it: the trimmed replay fails its check, the replay of every stored output works."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1))
        self.body = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = torch.relu(self.stem(x))
        return self.fc((self.body(skip) * skip).mean(dim=(2, 3)))


class Residual(nn.Module):
    """torchvision's BasicBlocks at a toy width. Inside the second block the layer
    ``blocks.1.bn1`` is bypassed by the block's skip (``out += identity``, where
    ``identity = downsample(x)`` runs after the layer, on the block's input)."""

    def __init__(self):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2), nn.BatchNorm2d(16))
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, 2, downsample=down))
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "net, layer, inner, replayed",
    [
        (Residual, "blocks.1.bn1", "blocks.0.conv1", True),
        (DerivedSkip, "body", "stem.0", True),
        (StatefulNet, "body", "stem.conv", False),
    ],
)
def test_ablationcam_tail_with_skips_and_fallback(batch, net, layer, inner, replayed):
    """No head here is pooling + linear (the closed form's check refuses each). A skip
    around the layer is replayed; a replay that does not reproduce the clean logits is
    dropped for a fuller one, down to the whole network. The results stay those of the
    whole network; ``inner`` (inside the prefix) runs again only in the whole network."""
    torch.manual_seed(0)
    model = net().eval()
    targets = [0, 3, 1]
    reference = whole_network_ablation(model, batch, targets, layer)
    counter = RowCounter(dict(model.named_modules())[inner])
    try:
        ours = shortcut_ablation(model, batch, targets, layer, "fc")
    finally:
        counter.handle.remove()
    assert_same_ablation(ours, reference)
    ablation_rows = reference[2]
    assert counter.rows == 2 * (3 if replayed else 3 + ablation_rows)
    assert all("forward" not in vars(m) for m in model.modules())


@pytest.mark.parametrize("fill", [0.0, 0.5])
def test_occlusion_matches_captum(case, fill):
    """Same windows, same fill, captum run on softmax probabilities: the same maps."""
    captum_attr = pytest.importorskip("captum.attr")
    side = case.x.shape[-1]
    window, stride = side // 4, side // 8  # (side − window) / stride = 6: no edge remainder

    def probabilities(inp: torch.Tensor) -> torch.Tensor:
        return case.model(inp).softmax(1)

    with torch.no_grad():
        theirs = captum_attr.Occlusion(probabilities).attribute(
            case.x,
            target=case.targets,
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=fill,
            perturbations_per_eval=64,
        )[:, 0]
    ours = occlusion(case.model, case.x, case.targets, window=window, stride=stride, fill=fill)
    assert_correlated(f"occlusion fill={fill} vs captum", ours, theirs)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_occlusion_edge_windows_differ_from_captum_only_at_the_edge(tiny, batch):
    """16 px, window 6, stride 4: ours 0, 4, 8, 10 (flush); captum 0, 4, 8, 12 (cut to 4 px)."""
    captum_attr = pytest.importorskip("captum.attr")
    targets = [0, 3, 1]
    with torch.no_grad():
        theirs = captum_attr.Occlusion(lambda inp: tiny(inp).softmax(1)).attribute(
            batch, target=targets, sliding_window_shapes=(3, 6, 6), strides=(3, 4, 4)
        )[:, 0]
    ours = occlusion(tiny, batch, targets, window=6, stride=4)
    # pixels before 10 are covered by the same windows on both sides
    assert torch.allclose(ours[:, :10, :10], theirs[:, :10, :10], atol=1e-6)
    assert not torch.allclose(ours[:, 10:, 10:], theirs[:, 10:, 10:], atol=1e-6)


def test_rows_for_memory_fill_half_the_free_memory_within_bounds():
    """The GPU default: 8 GiB free at 30 MiB a row -> 136 rows (half of 273); capped at
    512 when memory is plentiful; never below 1 when a row does not fit."""
    gib, mib = 2**30, 2**20
    assert rows_for_memory(8 * gib, 30 * mib) == 136
    assert rows_for_memory(80 * gib, 1 * mib) == 512
    assert rows_for_memory(10 * mib, 30 * mib) == 1
    assert rows_for_memory(8 * gib, 0) == 512  # a probe that measured nothing


def test_rise_map_does_not_depend_on_the_pass_size_under_bfloat16(tiny):
    """The passes run in bfloat16 under the fast preset; the sum over masks must not (a
    bfloat16 product per chunk made the map depend on ``batch_size`` by 0.3 % of its
    range, so a run's RISE scores depended on the probe's choice of rows)."""
    torch.manual_seed(0)
    x, targets = torch.randn(2, 3, 32, 32), torch.tensor([0, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        small = rise(tiny, x, targets, masks=96, batch_size=4)
        large = rise(tiny, x, targets, masks=96, batch_size=16)
    span = float(small.max() - small.min())
    assert torch.allclose(small, large, rtol=0, atol=1e-5 * span)
