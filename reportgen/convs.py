"""Convolutions of the folded copy (``models.folded_copy``): timm's TensorFlow padding
without a padded copy, and a convolution that applies the rectifier after it in the same
oneDNN call for passes without gradients.

On a 2-core CPU the rectifiers after Lite0's convolutions took 40 % of a bfloat16 forward
pass (each reads and writes every activation again); fused into the convolution, a
forward pass takes 3.3 -> 2.25 ms a row in bfloat16 and 6.5 -> 5.1 in float32, with the
same outputs bit for bit (docs/performance.md).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

# the rectifiers a convolution can take in: oneDNN's post-operation and its arguments
FUSABLE = {nn.ReLU6: ("hardtanh", [0.0, 6.0]), nn.ReLU: ("relu", [])}


class _SamePadded(nn.Conv2d):
    """timm's ``Conv2dSame`` (TensorFlow's "same" padding) without its padded copy of each
    input: where the padding after is one pixel longer than before (even sizes at stride
    2), the kernel gets a zero tap in front and the convolution pads both sides by the
    longer amount, which reads the same pixels. Same outputs up to float rounding; Lite0's
    passes 8-12 % faster (docs/performance.md)."""

    def conv_args(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        (before_h, after_h), (before_w, after_w) = (
            _same_pads(x.shape[-2 + i], self.kernel_size[i], self.stride[i]) for i in (0, 1)
        )
        weight = self.weight
        if after_h > before_h or after_w > before_w:
            weight = F.pad(weight, (after_w - before_w, 0, after_h - before_h, 0))
        return weight, (after_h, after_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, padding = self.conv_args(x)
        return F.conv2d(x, weight, self.bias, self.stride, padding, 1, self.groups)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one axis (before, after): after is 0 or 1 longer."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Fused:
    """A convolution whose rectifier (``post``) runs inside it when no gradient is recorded,
    on the CPU, in float32 or bfloat16 autocast, and nothing but the pass counter hooks it
    (a hook on the convolution expects its output before the rectifier). The output it
    made is remembered (weakly) so the rectifier module after it passes that one through;
    any other input, it rectifies as usual (idempotent anyway)."""

    post: tuple[str, list[float]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _fusable_dtype(self, x)
        if dtype is None:
            return super().forward(x)
        same = isinstance(self, _SamePadded)
        weight, padding = self.conv_args(x) if same else (self.weight, self.padding)
        bias = self.bias
        if dtype is torch.bfloat16:  # what autocast would have cast the convolution to
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        name, scalars = self.post
        out = torch.ops.mkldnn._convolution_pointwise(
            x, weight, bias, list(padding), list(self.stride), list(self.dilation),
            self.groups, name, scalars, "",
        )  # fmt: skip
        self.__dict__["made"] = weakref.ref(out)
        return out


def _fusable_dtype(conv: nn.Conv2d, x: torch.Tensor) -> torch.dtype | None:
    """The dtype the fused call runs in, or None where the plain path must run."""
    if torch.is_grad_enabled() or x.device.type != "cpu" or x.dim() != 4:
        return None
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return None
    if nn.modules.module._global_forward_hooks or not all(
        getattr(hook, "counts_only", False) for hook in conv._forward_hooks.values()
    ):
        return None
    if torch.is_autocast_enabled("cpu"):
        wanted = torch.get_autocast_dtype("cpu")
        return wanted if wanted is torch.bfloat16 and x.dtype in (torch.float32, wanted) else None
    return torch.float32 if x.dtype is torch.float32 and conv.weight.dtype is x.dtype else None


class _FusedConv(_Fused, nn.Conv2d):
    pass


class _FusedSamePadded(_Fused, _SamePadded):
    pass


def fuse(conv: nn.Module, act: nn.Module) -> nn.Module | None:
    """Make ``conv`` apply ``act`` inside it where it can (in place: its class changes);
    returns the module to put in ``act``'s place, or None if they cannot be fused.
    Needs oneDNN (``torch.backends.mkldnn``)."""
    post = FUSABLE.get(type(act))
    if post is None or type(conv) not in (nn.Conv2d, _SamePadded):
        return None
    if not torch.backends.mkldnn.is_available():
        return None
    conv.__class__ = _FusedConv if type(conv) is nn.Conv2d else _FusedSamePadded
    conv.post = post
    act.__class__ = _PassFused[type(act)]
    act.__dict__["conv"] = conv  # not a submodule: layer names stay as they were
    return act


class _PassFusedMixin:
    """The rectifier after a fused convolution: its input passes through unchanged when it
    is the output the convolution just made (already rectified)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        made = self.__dict__["conv"].__dict__.get("made")
        if made is not None and made() is x:
            return x
        return super().forward(x)


# subclasses of the rectifiers, so a swap of every nn.ReLU6 (guided backpropagation, the
# redirected ReLU) still finds them
_PassFused = {
    kind: type(f"_PassFused{kind.__name__}", (_PassFusedMixin, kind), {}) for kind in FUSABLE
}
