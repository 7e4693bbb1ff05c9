"""DeepLIFT with the Rescale rule (Shrikumar, Greenside and Kundaje 2017).

The image and its reference go through the model together (one batch of 2N rows), and
every element-wise activation passes back, instead of its derivative ``f'(x)``, the
multiplier ``Δy / Δx = (f(x) − f(x′)) / (x − x′)`` of its own input and output against
the reference's (the derivative where ``|Δx|`` is under 1e-10, as captum does). Linear
layers (convolutions, batch norm, pooling, residual sums) pass multipliers on unchanged,
so the attribution ``(x − x′) · m`` sums to ``S(x) − S(x′)`` on a network whose only
non-linearities are element-wise activations (summation to delta).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..capture import (
    StandIn,
    activation_hint,
    activation_types,
    preserved_state,
    swapped_modules,
)
from .cam import targets_tensor
from .gradient import black_image
from .registry import Technique, register

EPS = 1e-10  # |Δx| below this takes the ordinary derivative (captum's threshold)
GATES = (nn.Sigmoid, nn.Tanh)  # not rectifiers (capture leaves them out), rescaled as captum does


class _Rescale(torch.autograd.Function):
    """Forward: the activation on all 2N rows. Backward: ``g · Δy/Δx`` for both halves, each
    row against its counterpart in the other half (captum's ``nonlinear`` rule)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        y = module(x.clone() if getattr(module, "inplace", False) else x)
        ctx.fn = module.forward
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, y = ctx.saved_tensors
        half = len(x) // 2  # Δy/Δx is the same for a row and its counterpart: made once
        dx = x[:half] - x[half:]
        small = dx.abs() < EPS
        ratio = (y[:half] - y[half:]).div_(dx.masked_fill_(small, 1.0))
        rescaled = grad_out * torch.cat([ratio, ratio])
        if not small.any():  # the usual case: no derivative needed
            return rescaled, None
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (plain,) = torch.autograd.grad(ctx.fn(leaf.clone()), leaf, grad_out)
        return torch.where(torch.cat([small, small]), plain, rescaled), None


class _Rescaled(StandIn):
    """An activation module with the Rescale rule."""

    def ruled(self, x: torch.Tensor) -> torch.Tensor:
        return _Rescale.apply(x, self.original)


def deeplift_attributions(
    model: nn.Module, x: torch.Tensor, targets, reference: torch.Tensor
) -> torch.Tensor:
    """``(x − x′) · m`` per input element ``[N, C, H, W]``, ``m`` the Rescale multipliers
    of the target score: one forward pass of ``[x; x′]`` and one backward pass."""
    n = len(x)
    with preserved_state(model), torch.enable_grad():
        with swapped_modules(model, activation_types() + GATES, _Rescaled) as swapped:
            if not swapped:
                raise ValueError(
                    f"{type(model).__name__} has no activation module: "
                    + activation_hint("DeepLIFT's Rescale rule")
                )
            both = torch.cat([x, reference.expand_as(x)]).detach().requires_grad_(True)
            scores = model(both)[:n]
            t = targets_tensor(targets, n, scores.device)
            (grad,) = torch.autograd.grad(scores.gather(1, t[:, None]).sum(), both)
    return (x - reference) * grad[:n]


def deeplift(
    model: nn.Module,
    x: torch.Tensor,
    targets,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **_,
) -> torch.Tensor:
    """The attributions summed over colour channels, signed: the map sums to
    ``S(x) − S(x′)`` with ``x′`` the black image."""
    return deeplift_attributions(model, x, targets, black_image(x, mean, std)).sum(dim=1)


register(
    Technique(
        name="deeplift",
        title="DeepLIFT (Rescale)",
        family="gradient",
        paper="Shrikumar, Greenside and Kundaje, Learning Important Features Through "
        "Propagating Activation Differences, ICML 2017",
        url="https://arxiv.org/abs/1704.02685",
        summary="C(i,j) = Σ_c (x − x′)_c(i,j) · m_c(i,j): the difference from a reference "
        "image x′ (black) times the multipliers m that backpropagation gives when every "
        "activation passes back Δy/Δx = (f(x) − f(x′))/(x − x′) instead of its "
        "derivative (the Rescale rule). Signed; Σ_ij C = S^c(x) − S^c(x′) when the only "
        "non-linearities are element-wise activations (summation to delta).",
        cost="1 forward pass of the image and its reference + 1 backward pass",
        run=deeplift,
        notes="Same as captum's DeepLift (Rescale, multiply_by_inputs) with the black image "
        "as baselines for the activations captum rescales (ReLU, ELU, LeakyReLU, Sigmoid, "
        "Tanh, Softplus). Ours also rescales ReLU6 (EfficientNet-Lite0's), SiLU, GELU and the "
        "other rectifier-like modules, where captum passes the plain gradient, and every call "
        "of a module called twice (ResNet's relu), which captum does not support. Max "
        "pooling and Softmax take the plain gradient (captum has rules of its own for them); "
        "products (squeeze-and-excitation gates) break summation to delta. The map sums "
        "channels with their sign; the metrics rectify it.",
        cheap=True,
    )
)
