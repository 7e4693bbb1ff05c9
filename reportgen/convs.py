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
from collections.abc import Callable

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
    """A convolution whose rectifier (``post``) runs inside it where ``_fused_dtype``
    allows. The output it made is remembered (weakly) so the rectifier module after it
    passes that one through; any other input, it rectifies as usual (idempotent anyway)."""

    post: tuple[str, list[float]]
    conv_args: Callable[[torch.Tensor], tuple[torch.Tensor, tuple[int, int]]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _fused_dtype(self, x)
        if dtype is None:
            return super().forward(x)
        weight, padding = self.conv_args(x)
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


def _fused_dtype(conv: nn.Conv2d, x: torch.Tensor) -> torch.dtype | None:
    """The dtype the fused call runs in, or None where the plain path must run: on the
    CPU only; while nothing but the pass counter hooks the convolution (a capture there
    expects its output before the rectifier), nothing hooks the rectifier's input (the
    top patches read the pre-activation there) and the rectifier is in its place (not
    swapped for a backward rule: guided backpropagation, the redirected ReLU); without a
    gradient (a backward pass would need the output before the rectifier); float32, or
    bfloat16 under autocast."""
    if torch.is_grad_enabled() or x.device.type != "cpu" or x.dim() != 4:
        return None
    (holder, own), (parent, name) = conv.__dict__["slots"]
    act = conv.__dict__["act"]
    if holder._modules.get(own) is not conv or parent._modules.get(name) is not act:
        return None  # one of them swapped: LRP's rules, guided backpropagation, ...
    if isinstance(conv.padding, str) or _hooked(conv, act, parent):
        return None
    cast = _cpu_autocast()
    if cast is not None:  # fp16 autocast: the plain path
        return cast if cast is torch.bfloat16 else None
    return torch.float32 if x.dtype is torch.float32 and conv.weight.dtype is x.dtype else None


def _cpu_autocast() -> torch.dtype | None:
    """The CPU autocast's dtype while it is on (torch 2.4 named these functions anew)."""
    if hasattr(torch, "get_autocast_dtype"):
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


def _hooked(conv: nn.Module, act: nn.Module, parent: nn.Module) -> bool:
    module = nn.modules.module
    return bool(
        module._global_forward_hooks
        or module._global_forward_pre_hooks
        or module._global_backward_hooks
        or module._global_backward_pre_hooks
        or act._forward_pre_hooks
        or parent._forward_pre_hooks
        or any(m._backward_hooks or m._backward_pre_hooks for m in (conv, act))
        or not all(getattr(h, "counts_only", False) for h in conv._forward_hooks.values())
    )


class _FusedConv(_Fused, nn.Conv2d):
    def conv_args(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The weight and padding the convolution runs with (``_SamePadded``'s for the other)."""
        return self.weight, self.padding


class _FusedSamePadded(_Fused, _SamePadded):
    pass


def fuse(model: nn.Module, conv_name: str, parent: nn.Module, name: str) -> None:
    """Make the convolution ``conv_name`` of ``model`` apply the rectifier ``parent.name``
    inside it where it can (in place: both change class). Needs oneDNN
    (``torch.backends.mkldnn``) and zero padding; others are left as they are."""
    conv, act = model.get_submodule(conv_name), parent._modules[name]
    post = FUSABLE.get(type(act))
    if post is None or type(conv) not in (nn.Conv2d, _SamePadded):
        return
    if not torch.backends.mkldnn.is_available() or conv.padding_mode != "zeros":
        return
    holder, _, own = conv_name.rpartition(".")
    conv.__class__ = _FusedConv if type(conv) is nn.Conv2d else _FusedSamePadded
    conv.post = post
    # where each must still be for the fused call (not submodules: names stay as they were)
    conv.__dict__["slots"] = ((model.get_submodule(holder), own), (parent, name))
    conv.__dict__["act"] = act
    act.__class__ = _PassFused[type(act)]
    act.__dict__["conv"] = conv


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
