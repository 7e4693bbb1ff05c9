"""Zeiler & Fergus's "top patches": what makes one channel of a layer fire.

For a chosen channel, the pipeline keeps the nine images where it fires most and
shows, for each, the image patch its strongest unit sees (the unit's receptive
field) beside the deconvnet projection of that single activation back to pixels.
Everything here is a pure function of tensors or arrays; the pipeline does the
bookkeeping across images.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..capture import (
    Capture,
    activations,
    backward_rule,
    frozen,
    grad_ready_input,
    hooks,
    preserved_state,
    resolve_layer,
)
from .registry import Technique, register
from .views import first_conv

Box = tuple[int, int, int, int]  # (top, left, bottom, right), bottom and right exclusive


def channel_peaks(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel's maximum ``[N, C]`` and its ``(y, x)`` position ``[N, C, 2]`` (long).

    Ties go to the first position in row-major order, so results are reproducible.
    """
    values, flat = acts.flatten(2).max(dim=2)
    width = acts.shape[-1]
    return values, torch.stack((flat // width, flat % width), dim=-1)


@dataclass
class ReceptiveField:
    """Where a unit of a layer looks, in input pixels, for one input size.

    The unit at ``(y, x)`` sees the ``size`` window centred on
    ``offset + (y, x) * stride``; ``offset`` is the centre for the unit at
    ``(0, 0)`` and may be fractional or negative (padding).
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[float, float]

    def box(self, y: int, x: int, image_hw: tuple[int, int]) -> Box:
        """The field of the unit at ``(y, x)``, clipped to the image: ``(top, left, bottom,
        right)`` with bottom and right exclusive, so ``rgb[top:bottom, left:right]`` is it."""
        top, left = (
            math.floor(o + p * s - (k - 1) / 2 + 0.5)
            for o, p, s, k in zip(self.offset, (y, x), self.stride, self.size, strict=True)
        )
        height, width = image_hw
        return (
            max(top, 0),
            max(left, 0),
            min(top + self.size[0], height),
            min(left + self.size[1], width),
        )


_GATES = {"Sigmoid", "Hardsigmoid", "HardSigmoid", "HardSigmoidMe", "Tanh"}  # torch's, timm's


def _cut_global_gate(_module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor | None:
    """A squeeze-excitation gate (``[N, C, 1, 1]``, from a global average) lets every pixel
    reach every unit; cut it, so the field is that of the convolutions, the part to crop.
    Gates over maps (and sigmoid or tanh used as the activation) are left alone."""
    return out.detach() if out.dim() == 4 and out.shape[-2:] == (1, 1) else None


def _route_to_window_corners(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    """Max pooling sends gradient to one pixel per window, and the probe's flat input makes
    that choice arbitrary. Keep the output, but send the gradient to each window's
    top-left and bottom-right pixels (the maximum of a steep ramp, then of its negative):
    they span the window's box, whatever the pooling's own padding rule."""
    x = args[0]
    h, w = x.shape[-2:]
    ramp = torch.arange(h, device=x.device)[:, None] + torch.arange(w, device=x.device)
    ramp = ramp.to(x.dtype) * (x.detach().abs().max() + 1)
    corners = module.forward(x + ramp) + module.forward(x - ramp)
    return out.detach() + corners - corners.detach()


def _probe(model: nn.Module) -> nn.Module:
    """A frozen copy in which every path from pixels to a unit carries positive signal.

    Weights are positive constants (``1 / fan_in``, so magnitudes neither explode nor
    vanish), biases zero, batch norm the identity. With the deconvnet rule and a
    positive input, the input gradient of a unit is then non-negative and cannot
    cancel: its support is exactly the set of pixels connected to the unit.
    """
    probe = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in probe.named_parameters():
            p.requires_grad_(False)
            if p.dim() >= 2:
                p.fill_(p.shape[0] / p.numel())
            else:
                p.fill_(0.0 if name.endswith("bias") else 1.0)
        for name, b in probe.named_buffers():
            if name.endswith("running_mean"):
                b.zero_()
            elif name.endswith("running_var"):
                b.fill_(1.0)
    for m in probe.modules():
        if isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
            m.register_forward_hook(_route_to_window_corners)
        elif type(m).__name__ in _GATES:
            m.register_forward_hook(_cut_global_gate)
    return probe


Units = Callable[[int, int], list[tuple[int, int]]]  # output (h, w) -> unit positions
NARROW = 64  # px across a stretched canvas: at least one unit even at stride 64


def _supports(
    probe: nn.Module, layers: Sequence[str], hw: tuple[int, int], units: Units
) -> dict[str, tuple[tuple[int, int], list[Box]]]:
    """Per layer, its output size ``(h, w)`` and, for each unit ``units(h, w)`` (summed over
    channels, all alike in the probe), the bounding box of its input gradient.

    One forward pass of a single image for all the layers, one backward per unit: a batch
    would multiply the memory of the large canvases by the number of units.
    """
    p = next(probe.parameters())
    channels = first_conv(probe)[1].in_channels
    ones = torch.ones(1, channels, *hw, dtype=p.dtype, device=p.device)
    found = {}
    with torch.enable_grad(), backward_rule(probe, "deconvnet"):
        with Capture(probe, list(layers), for_grad=True) as cap:
            inp = grad_ready_input(ones)
            probe(inp)
        for layer in layers:
            acts, boxes = cap.outputs[layer], []
            for y, x in units(*acts.shape[-2:]):
                seed = torch.zeros_like(acts)
                seed[:, :, y, x] = 1.0
                (grad,) = torch.autograd.grad(acts, inp, seed, retain_graph=True)
                support = grad[0].sum(dim=0) > 0
                rows = support.any(dim=1).nonzero()[:, 0]
                cols = support.any(dim=0).nonzero()[:, 0]
                boxes.append((int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1))
            found[layer] = (tuple(acts.shape[-2:]), boxes)
    return found


def _extents(
    probe: nn.Module, layers: Sequence[str], hw: tuple[int, int], axis: int, max_scale: int
) -> dict[str, tuple[int, int]]:
    """Per layer, field size and stride along ``axis`` (0: y, 1: x), from a central unit and
    its next neighbour along the axis, on a canvas stretched along it until both fields fit
    strictly inside (only then is nothing cut off by the border); one pass per canvas serves
    every layer not yet settled. The canvas is at most ``NARROW`` px across the other axis:
    convolutions and pooling act on each axis separately, so the field's extent along one
    does not depend on the other's size (3.5 times less work at Lite0's deep layers); the
    input's own size across when a model's maps vanish at ``NARROW`` (unpadded
    convolutions: Inception v3)."""

    def centre_and_next(h: int, w: int) -> list[tuple[int, int]]:
        centre = ((h - 1) // 2, (w - 1) // 2)
        step = (1, 0) if axis == 0 else (0, 1)
        return [centre, (min(centre[0] + step[0], h - 1), min(centre[1] + step[1], w - 1))]

    found: dict[str, tuple[int, int]] = {}
    scale, across = 1, min(hw[1 - axis], NARROW)
    while len(found) < len(layers) and scale <= max_scale:
        canvas = (hw[0] * scale, across) if axis == 0 else (across, hw[1] * scale)
        todo = [layer for layer in layers if layer not in found]
        try:
            supports = _supports(probe, todo, canvas, centre_and_next)
        except RuntimeError:
            if across == hw[1 - axis]:
                raise
            across = hw[1 - axis]  # too narrow for this model: again at the input's width
            continue
        for layer, (out, (centre, after)) in supports.items():
            if out[axis] > 1 and centre[axis] > 0 and after[axis + 2] < canvas[axis]:
                found[layer] = (centre[axis + 2] - centre[axis], after[axis] - centre[axis])
        scale *= 2
    for layer in layers:
        if layer not in found:
            raise ValueError(
                f"the receptive field of '{layer}' does not fit in {max_scale}x the input: "
                "the layer depends on the whole image (attention, global pooling?)"
            )
    return found


def _offset(size: int, stride: int, first: Box, last: Box, axis: int, n: int, image: int) -> float:
    """The centre of unit 0's field along one axis, from whichever edge the image did not
    clip: unit 0's far edge, else the last unit's near edge. If both are clipped, every
    unit sees the whole axis and any centre in the admissible range (its middle) will do."""
    if first[axis + 2] < image:
        return first[axis + 2] - (size + 1) / 2
    if last[axis] > 0:
        return last[axis] + (size - 1) / 2 - (n - 1) * stride
    return ((image - 1) - (n - 1) * stride) / 2


def receptive_field(
    model: nn.Module, layer: str, input_size: tuple[int, int] = (224, 224), max_scale: int = 16
) -> ReceptiveField:
    """The receptive field of ``layer``'s units for inputs of ``input_size`` (H, W), measured
    (``receptive_fields`` of that one layer)."""
    return receptive_fields(model, [layer], input_size, max_scale)[layer]


def receptive_fields(
    model: nn.Module,
    layers: Sequence[str],
    input_size: tuple[int, int] = (224, 224),
    max_scale: int = 16,
) -> dict[str, ReceptiveField]:
    """The receptive field of each layer's units for inputs of ``input_size`` (H, W), measured.

    No architecture is parsed, so branches, residuals, depthwise or dilated convolutions,
    pooling and asymmetric ("same") padding are all handled: on a probe copy of the
    model (positive constant weights, zero biases, identity batch norm, see ``_probe``),
    single units are projected back with the deconvnet rule and the bounding box of the
    input gradient is read. Size and stride come from a central unit and its neighbour,
    per axis, on a canvas stretched (up to ``max_scale`` times) until the field fits;
    the offset is read at ``input_size`` itself, from the two corner units, because
    "same" padding depends on the input size; it is exact whenever some unit's field
    ends inside the image (otherwise every unit sees the whole image, and any consistent
    value gives the same boxes). Squeeze-excitation gates are cut (``_cut_global_gate``).
    The layers share one probe copy and each canvas's forward pass.
    """
    probe = _probe(model)
    hw = (int(input_size[0]), int(input_size[1]))
    corners = _supports(probe, layers, hw, lambda h, w: [(0, 0), (h - 1, w - 1)])
    extents = [_extents(probe, layers, hw, axis, max_scale) for axis in (0, 1)]
    fields = {}
    for layer in layers:
        (h, w), (first, last) = corners[layer]
        size, stride = zip(*(extents[a][layer] for a in (0, 1)), strict=True)
        offset = tuple(
            _offset(size[a], stride[a], first, last, a, (h, w)[a], hw[a]) for a in (0, 1)
        )
        fields[layer] = ReceptiveField(size, stride, offset)
    return fields


def deconv_projection(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    channels: torch.Tensor,
    positions: torch.Tensor,
) -> torch.Tensor:
    """Zeiler & Fergus's projection of one activation per item back to pixels, ``[N, C, H, W]``.

    Item ``i`` keeps only channel ``channels[i]`` at ``positions[i] = (y, x)`` of ``layer``,
    with its value, every other activation of the layer zeroed, and sends it down with the
    deconvnet rule: rectified signal at every activation, transposed filters, max-pool
    switches (autograd's backward through convolutions and pooling is exactly that).
    Items are independent in eval mode, so one backward serves the batch. Raw, signed,
    in the model's normalised input space; the model is left as it was.
    """
    items = torch.arange(x.shape[0], device=x.device)
    ys, xs = positions.to(x.device).unbind(dim=1)
    channels = channels.to(x.device)
    with preserved_state(model), frozen(model), torch.enable_grad():
        with backward_rule(model, "deconvnet"):
            inp = grad_ready_input(x)
            acts = activations(model, inp, [layer])[layer]  # the forward stops at the layer
            seed = torch.zeros_like(acts)
            seed[items, channels, ys, xs] = acts.detach()[items, channels, ys, xs]
            (grad,) = torch.autograd.grad(acts, inp, seed)
    return grad


def projection_image(proj: torch.Tensor, box: Box | None = None, clip: float = 0.995) -> np.ndarray:
    """``[3, H, W]`` signed projection (cropped to ``box`` first, as the papers contrast-
    normalise each patch) to uint8 RGB: zero is grey 128 and the ``clip`` quantile of the
    magnitudes reaches 128 +- 127 (larger ones saturate), so sign and relative strength
    survive a few extreme pixels."""
    p = proj.detach().float().cpu()
    if box is not None:
        top, left, bottom, right = box
        p = p[:, top:bottom, left:right]
    scale = torch.quantile(p.abs().flatten(), clip).clamp_min(1e-12)
    return (p / scale * 127 + 128).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def tile_box(field: ReceptiveField, y: int, x: int, image_hw: tuple[int, int], side: int) -> Box:
    """A ``side`` x ``side`` box centred where the unit at ``(y, x)`` looks, moved inside the
    image (never cut, so every tile is square): a fixed-size view around a peak."""
    box = []
    for o, p, s, extent in zip(field.offset, (y, x), field.stride, image_hw, strict=True):
        side_here = min(side, extent)
        start = math.floor(o + p * s - side_here / 2 + 0.5)
        box.append(min(max(start, 0), extent - side_here))
    (top, left), (height, width) = box, (min(side, image_hw[0]), min(side, image_hw[1]))
    return top, left, top + height, left + width


def crop(rgb: np.ndarray, box: Box) -> np.ndarray:
    """The pixels of ``box`` (``(top, left, bottom, right)``, bottom and right exclusive)."""
    top, left, bottom, right = box
    return rgb[top:bottom, left:right]


def _fit(patch: np.ndarray, side: int, background: int) -> np.ndarray:
    """``patch`` scaled so its longer side is ``side`` (nearest when enlarging, so small
    fields show their pixels), centred on a ``side`` x ``side`` square."""
    h, w = patch.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    resized = np.asarray(Image.fromarray(patch).resize(size, resample))
    square = np.full((side, side, 3), background, dtype=np.uint8)
    top, left = (side - size[1]) // 2, (side - size[0]) // 2
    square[top : top + size[1], left : left + size[0]] = resized
    return square


def patch_grid(
    patches: Sequence[np.ndarray], side: int = 64, columns: int = 3, background: int = 255
) -> np.ndarray:
    """Patches tiled row by row, ``side`` px each with 1 px gaps, as in the paper's figure
    (a 3 x 3 grid for the top 9; missing cells stay ``background``)."""
    rows = max(1, math.ceil(len(patches) / columns))
    grid = np.full((rows * (side + 1) - 1, columns * (side + 1) - 1, 3), background, dtype=np.uint8)
    for i, patch in enumerate(patches):
        top, left = (i // columns) * (side + 1), (i % columns) * (side + 1)
        grid[top : top + side, left : left + side] = _fit(patch, side, background)
    return grid


def dead_channels(peaks_over_dataset: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """``[C]`` bool: channels whose maximum over every image ``[N_images, C]`` never exceeds
    ``threshold``: after a rectifier they never fire, so they have no top patches."""
    return np.asarray(peaks_over_dataset).max(axis=0) <= threshold


def final_clamp(module: nn.Module) -> nn.Module | None:
    """The clamp a layer ends with (ReLU6 or another ``Hardtanh``: timm's norm + activation
    layers, folded into a ``Sequential`` or not), else None. Its input, the
    pre-activation, orders the units it saturates."""
    last = module[-1] if isinstance(module, nn.Sequential) and len(module) else None
    last = getattr(module, "act", last)
    return last if isinstance(last, nn.Hardtanh) else None


def top_patches(
    model: nn.Module, x: torch.Tensor, targets=None, *, layers: Sequence[str], **_
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One forward pass: per layer, each channel's maximum ``[N, C]``, its position
    ``[N, C, 2]`` and the pre-activation there ``[N, C]``, what the pipeline ranks images by
    across the data set. Where the layer ends with a clamp (ReLU6 saturates at 6: at
    Lite0's ``bn2`` about 6 % of the channels' peaks on photos reach it), the peak is the
    unit with the largest pre-activation: the same maximum, its ties broken by how far past
    the clamp each unit went. Elsewhere the pre-activation is the maximum itself."""
    before: dict[str, torch.Tensor] = {}

    def keeper(name: str) -> Callable:
        def keep(_module, args) -> None:  # a copy: the clamp may run in place
            before[name] = args[0].detach().to(torch.float32, copy=True)

        return keep

    clamps = {name: final_clamp(resolve_layer(model, name)) for name in layers}
    pre = [(clamp, keeper(name)) for name, clamp in clamps.items() if clamp is not None]
    with preserved_state(model), torch.no_grad(), hooks(pre=pre), Capture(model, layers) as cap:
        model(x)
    found = {}
    for name in layers:
        after = cap.outputs[name].float()
        pre = before.get(name, after)
        values, positions = channel_peaks(pre)
        n, c = values.shape
        y, x_ = positions.unbind(-1)
        rows = torch.arange(n, device=after.device)[:, None]
        channels = torch.arange(c, device=after.device)[None]
        found[name] = (after[rows, channels, y, x_], positions, values)
    return found


register(
    Technique(
        name="top_patches",
        title="Top-9 patches",
        family="view",
        paper="Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014",
        url="https://arxiv.org/abs/1311.2901",
        summary="For chosen channels of a layer, the 9 images of the data set where the "
        "channel's strongest activation is highest; for each, the image patch under that "
        "unit's receptive field and the deconvnet projection of that single activation "
        "(all others in the layer zeroed) back to pixels. The receptive field is measured, "
        "not derived from the architecture: on a copy with positive constant weights, zero "
        "biases and identity batch norm, single units are projected back and the bounding "
        "box of the input gradient read (size and stride from neighbouring units, offset "
        "from the corner units at the input size). The deconvnet rule passes "
        "R_in = ReLU(R_out) at every activation, ignoring the forward input, through "
        "transposed filters and max-pool switches. Projections: largest magnitude to "
        "128 ± 127 around grey. Where the layer ends with a clamp (ReLU6), equal peaks at "
        "its ceiling are ordered by the pre-activation, and the unit shown is the one "
        "that went furthest past it.",
        cost="1 forward pass per image (peaks); then per channel 1 forward + 1 backward "
        "pass over its 9 images (batched)",
        run=top_patches,
        needs_gradient=False,
    )
)
