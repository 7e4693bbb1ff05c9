"""Top patches (Zeiler & Fergus): peaks, measured receptive fields, deconvnet projections."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reportgen.techniques import REGISTRY
from reportgen.techniques.neurons import (
    ReceptiveField,
    channel_peaks,
    crop,
    dead_channels,
    deconv_projection,
    patch_grid,
    projection_image,
    receptive_field,
    top_patches,
)


def conv_stack() -> nn.Sequential:
    """conv3x3/1 -> conv3x3/2 -> conv3x3/1, padding 1, ReLUs between."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.ReLU(),
    ).eval()


def support_box(proj: torch.Tensor) -> tuple[int, int, int, int]:
    """Bounding box (bottom, right exclusive) of the nonzero pixels of a [3, H, W] map."""
    nonzero = proj.abs().sum(dim=0) > 0
    rows, cols = nonzero.any(dim=1).nonzero()[:, 0], nonzero.any(dim=0).nonzero()[:, 0]
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def assert_within(proj: torch.Tensor, box: tuple[int, int, int, int]) -> None:
    top, left, bottom, right = support_box(proj)
    assert box[0] <= top and box[1] <= left and bottom <= box[2] and right <= box[3], (
        f"support {(top, left, bottom, right)} leaves the field {box}"
    )


def test_channel_peaks_first_maximum_in_row_major_order():
    acts = torch.tensor(
        [
            [[1.0, 5.0, 2.0], [0.0, 5.0, 3.0]],  # 5 twice: (0, 1) comes first
            [[-1.0, -2.0, -3.0], [-4.0, -0.5, -6.0]],  # all negative: -0.5 at (1, 1)
        ]
    )[None]
    values, positions = channel_peaks(acts)
    assert values.tolist() == [[5.0, -0.5]]
    assert positions.dtype == torch.long and positions.tolist() == [[[0, 1], [1, 1]]]


@pytest.mark.parametrize("input_size", [(16, 16), (12, 20)])
def test_receptive_field_of_a_conv_stack_matches_the_textbook(input_size):
    # r_l = r_{l-1} + (k_l - 1) * j_{l-1}, j_l = j_{l-1} * s_l, from r = j = 1:
    # conv3/1: r = 1 + 2*1 = 3, j = 1; conv3/2: r = 3 + 2*1 = 5, j = 2;
    # conv3/1: r = 5 + 2*2 = 9, j = 2. Padding 1 everywhere centres unit 0 on pixel 0.
    rf = receptive_field(conv_stack(), "5", input_size)
    assert rf == ReceptiveField(size=(9, 9), stride=(2, 2), offset=(0.0, 0.0))
    # unit (3, 4) is centred on pixel (6, 8): rows 2..10, columns 4..12
    assert rf.box(3, 4, input_size) == (2, 4, 11, 13)
    # unit (0, 0) would reach pixel -4: clipped to the image
    assert rf.box(0, 0, input_size) == (0, 0, 5, 5)


def test_receptive_field_of_unpadded_convolutions_too_narrow_for_the_short_canvas():
    # Five unpadded conv7x7/2: r = 1 + 6 * (1 + 2 + 4 + 8 + 16) = 187, j = 32, and unit 0
    # starts at pixel 0 (centre 93). Across a 64 px canvas the map vanishes after four
    # (64 -> 29 -> 12 -> 3 -> 0), so the field is measured at the input's own width.
    torch.manual_seed(0)
    convs = [nn.Conv2d(3 if i == 0 else 2, 2, 7, stride=2) for i in range(5)]
    model = nn.Sequential(*[m for c in convs for m in (c, nn.ReLU())]).eval()
    rf = receptive_field(model, "8", (224, 224))
    assert rf == ReceptiveField(size=(187, 187), stride=(32, 32), offset=(93.0, 93.0))


def test_receptive_field_of_resnet18_layers(small_resnet):
    # conv1 7x7/2: r = 7, j = 2; maxpool 3x3/2: r = 7 + 2*2 = 11, j = 4;
    # layer1, four 3x3/1 convs at j = 4: r = 11 + 4 * 2*4 = 43;
    # layer2, a 3x3/2 conv at j = 4: r = 43 + 2*4 = 51, j = 8, three more 3x3/1: 51 + 3 * 2*8 = 99.
    # Every layer pads (k - 1) / 2, so unit 0 is centred on pixel 0.
    model, _ = small_resnet
    layer1 = receptive_field(model, "layer1", (128, 128))
    assert layer1 == ReceptiveField((43, 43), (4, 4), (0.0, 0.0))
    assert receptive_field(model, "layer2", (96, 160)) == ReceptiveField((99, 99), (8, 8), (0, 0))
    # border units: (0, 0) spans pixels -21..21, the last one (31, 31) spans 103..145
    assert layer1.box(0, 0, (128, 128)) == (0, 0, 22, 22)
    assert layer1.box(31, 31, (128, 128)) == (103, 103, 128, 128)


class Gated(nn.Module):
    """conv3x3 -> ReLU -> squeeze-excitation gate -> conv3x3: the gate sees every pixel."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()
        self.squeeze, self.gate = nn.Conv2d(4, 4, 1), nn.Sigmoid()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = x * self.gate(self.squeeze(x.mean(dim=(2, 3), keepdim=True)))
        return self.conv2(x)


def test_receptive_field_ignores_gates_and_model_is_untouched():
    # two 3x3/1 convs: r = 1 + 2 + 2 = 5; through the gate's global mean it would be the image
    model = Gated().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert receptive_field(model, "conv2", (16, 16)) == ReceptiveField((5, 5), (1, 1), (0, 0))
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_projection_of_one_conv_is_its_transposed_convolution():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 5, stride=2, padding=2), nn.ReLU()).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        acts = model(x)
    channel = 2
    _, peaks = channel_peaks(acts)
    y, x_ = peaks[0, channel].tolist()
    proj = deconv_projection(model, x, "1", torch.tensor([channel]), peaks[:, channel])
    one = torch.zeros_like(acts)
    one[0, channel, y, x_] = acts[0, channel, y, x_]
    expected = F.conv_transpose2d(one, model[0].weight, stride=2, padding=2, output_padding=1)
    torch.testing.assert_close(proj, expected)
    # one 5x5/2 conv padded by 2: unit (y, x) sees rows 2y-2 .. 2y+2, all of them nonzero here
    field = receptive_field(model, "1", (16, 16))
    assert field == ReceptiveField((5, 5), (2, 2), (0.0, 0.0))
    box = field.box(y, x_, (16, 16))
    assert support_box(proj[0]) == box


def test_projection_on_resnet_is_batched_inside_the_field_and_leaves_the_model(small_resnet):
    model, x = small_resnet
    layer, channels = "layer2", torch.tensor([0, 5, 17])
    _, peaks, _ = top_patches(model, x, layers=[layer])[layer]
    positions = peaks[torch.arange(3), channels]
    model.layer3.requires_grad_(False)
    model.train()
    model.zero_grad(set_to_none=True)  # the model is shared: earlier tests may leave grads
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        proj = deconv_projection(model, x, layer, channels, positions)
        assert model.training and [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    finally:
        model.requires_grad_(True).eval()
    field = receptive_field(model, layer, (128, 128))  # 99 px, stride 8: less than the image
    for i, (y, x_) in enumerate(positions.tolist()):
        assert proj[i].abs().sum() > 0
        assert_within(proj[i], field.box(y, x_, (128, 128)))
        alone = deconv_projection(
            model, x[i : i + 1], layer, channels[i : i + 1], positions[i : i + 1]
        )
        torch.testing.assert_close(proj[i : i + 1], alone, rtol=1e-4, atol=1e-6)


def test_projection_image_maps_zero_to_grey_and_the_largest_magnitude_to_the_ends():
    proj = torch.tensor([-127.0, 0.0, 1.0, 127.0]).reshape(1, 1, 4).expand(3, 1, 4) * 0.01
    image = projection_image(proj)
    assert image.shape == (1, 4, 3) and image.dtype == np.uint8
    assert image[0, :, 0].tolist() == [1, 128, 129, 255]
    assert projection_image(torch.zeros(3, 2, 2)).tolist() == [[[128] * 3] * 2] * 2


def test_crop_and_patch_grid():
    rgb = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    assert np.array_equal(crop(rgb, (1, 2, 4, 7)), rgb[1:4, 2:7])
    colours = [np.full((2, 4, 3), 10 * (i + 1), dtype=np.uint8) for i in range(9)]
    grid = patch_grid(colours, side=4)
    assert grid.shape == (3 * 4 + 2, 3 * 4 + 2, 3) and grid.dtype == np.uint8
    # patch 4 (middle cell) starts at 5, 5; a 2x4 patch becomes 2x4 -> 4 wide, 2 tall, centred
    assert (grid[6:8, 5:9] == 50).all() and (grid[5, 5:9] == 255).all()
    assert (grid[4, :] == 255).all() and (grid[:, 9] == 255).all()  # 1 px gaps
    assert patch_grid(colours[:4], side=4).shape == (2 * 4 + 1, 3 * 4 + 2, 3)


def test_dead_channels():
    peaks = np.array([[0.0, 1.0, -1.0, 0.2], [0.0, 0.0, -2.0, 0.1]])  # maxima 0, 1, -1, 0.2
    assert dead_channels(peaks).tolist() == [True, False, True, False]
    assert dead_channels(peaks, threshold=0.5).tolist() == [True, False, True, True]


def test_top_patches_technique(tiny, batch):
    technique = REGISTRY["top_patches"]
    assert technique.family == "view" and not technique.needs_gradient
    out = top_patches(tiny, batch, layers=["features.1", "features.3"])
    values, positions, before = out["features.3"]
    assert values.shape == (3, 6) and positions.shape == (3, 6, 2)
    with torch.no_grad():
        acts = tiny.features(batch)
    expected_values, expected_positions = channel_peaks(acts)
    torch.testing.assert_close(values, expected_values)
    assert torch.equal(positions, expected_positions)
    torch.testing.assert_close(before, values)  # no clamp at the end: the maximum itself


class NormAct(nn.Module):
    """timm's BatchNormAct2d in miniature: a scale, then an in-place ReLU6 as ``act``."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x):
        return self.act(x * 2.0)


@pytest.mark.parametrize("folded", [False, True])
def test_top_patches_break_ties_at_relu6_by_the_pre_activation(folded):
    """Two units saturate at 6 in image 0 (pre-activations 8 and 14) and one in image 1
    (10): the peak is the unit furthest past the clamp, and the pre-activation is kept
    to rank equal peaks; a folded norm (``Sequential`` of its activation) reads the same."""
    layer = nn.Sequential(nn.ReLU6(inplace=True)) if folded else NormAct()
    model = nn.Sequential(nn.Identity(), layer)
    x = torch.zeros(2, 1, 3, 3)
    x[0, 0, 0, 1], x[0, 0, 2, 2], x[1, 0, 1, 1] = 4.0, 7.0, 5.0
    if folded:
        x = x * 2.0
    values, positions, before = top_patches(model, x, layers=["1"])["1"]
    assert values.tolist() == [[6.0], [6.0]]
    assert positions.tolist() == [[[2, 2]], [[1, 1]]]
    assert before.tolist() == [[14.0], [10.0]]


@pytest.mark.slow
def test_projection_on_lite0_with_a_photo_stays_in_the_field(lite0):
    from PIL import Image
    from skimage import data

    model, spec = lite0
    layer = "blocks.3.2.bn2"
    rgb = np.asarray(Image.fromarray(data.chelsea()).resize((224, 224), Image.Resampling.BILINEAR))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (spec.mean, spec.std))
    x = (torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std
    start = time.perf_counter()
    # r += (k - 1) * j over stem 3/2 (j 1), blocks.0 3 (j 2), stage 1: 3/2 (j 2), 3 (j 4);
    # stage 2: 5/2 (j 4), 5 (j 8); stage 3: 3/2 (j 8), 3 and 3 (j 16), the last being
    # blocks.3.2's depthwise conv: 1 + 2 + 4 + 4 + 8 + 16 + 32 + 16 + 32 + 32 = 147, j = 16.
    # TF "same" padding at 224 pads a stride-2 conv 0 (k 3) or 1 (k 5) px before: the stem's
    # unit 0 sees pixels 0..2 (centre 1), and each strided stage moves unit 0's centre by
    # one unit of the previous jump: 1 + 2 + 4 + 8 = 15.
    field = receptive_field(model, layer, (224, 224))
    assert field == ReceptiveField((147, 147), (16, 16), (15.0, 15.0))
    # at 225 px the stem pads 1 px on each side: unit 0 of bn1 is centred on pixel 0
    assert receptive_field(model, "bn1", (225, 225)).offset == (0.0, 0.0)
    # the survey's 200 x 300 input. Left padding of the stride-2 convs (total
    # (ceil(n/2) - 1) * 2 + k - n, half before): rows 200, 100, 50, 25 pad 0, 0, 1, 1 before,
    # moving unit 0's centre by 1, 1, 0 units: 1 + 2 + 4 + 0 = 7; columns 300, 150, 75, 38
    # pad 0, 0, 2, 0: 1 + 2 + 0 + 8 = 11.
    wide = receptive_field(model, layer, (200, 300))
    assert wide == ReceptiveField((147, 147), (16, 16), (7.0, 11.0))
    assert wide.box(0, 0, (200, 300)) == (0, 0, 81, 85)  # centre (7, 11) +- 73, clipped
    with torch.no_grad():
        values, positions, _ = top_patches(model, x, layers=[layer])[layer]
    channels = values[0].topk(3).indices
    proj = deconv_projection(
        model, x.expand(3, -1, -1, -1), layer, channels, positions[0, channels]
    )
    for i, (y, x_) in enumerate(positions[0, channels].tolist()):
        box = field.box(y, x_, (224, 224))
        assert (box[2] - box[0]) * (box[3] - box[1]) < 224 * 224  # a real part of the photo
        assert proj[i].abs().sum() > 0
        assert_within(proj[i], box)
    assert time.perf_counter() - start < 30


def test_projection_image_normalises_the_patch_it_shows():
    """Cropped first, then scaled: an extreme value outside the box does not flatten it."""
    proj = torch.zeros(3, 4, 4)
    proj[:, 0, 0] = 100.0  # outside the box
    proj[:, 3, 3] = 1.0
    patch = projection_image(proj, box=(2, 2, 4, 4), clip=1.0)
    assert patch.shape == (2, 2, 3)
    assert patch[1, 1].tolist() == [255] * 3 and patch[0, 0].tolist() == [128] * 3
    # the clip quantile: 1 of 100 values is an outlier; at 0.98 it saturates, the rest shows
    many = torch.ones(3, 10, 10)
    many[:, 0, 0] = 50.0
    shown = projection_image(many, clip=0.98)
    assert shown[0, 0].tolist() == [255] * 3 and shown[5, 5].tolist() == [255] * 3
