"""Pixel attributions from gradients with respect to the input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..capture import grad_ready_input, preserved_state
from . import Technique, register


def input_gradient(model: nn.Module, x: torch.Tensor, targets: Sequence[int] | torch.Tensor):
    """d score[target_i] / d x_i for every item of the batch, in one backward pass.

    Items are independent in eval mode, so the gradient of the summed target
    scores is each item's own gradient.
    """
    with preserved_state(model), torch.enable_grad():
        inp = grad_ready_input(x)
        scores = model(inp)
        t = torch.as_tensor(targets, device=scores.device, dtype=torch.long).reshape(-1, 1)
        (grad,) = torch.autograd.grad(scores.gather(1, t.expand(x.shape[0], 1)).sum(), inp)
    return grad


def saliency(
    model: nn.Module, x: torch.Tensor, targets, layer: str | None = None, **_
) -> torch.Tensor:
    """Simonyan et al. 2013: ``max_c |d S_target / d x_c|`` per pixel, ``[N, H, W]``."""
    return input_gradient(model, x, targets).abs().amax(dim=1)


register(
    Technique(
        name="saliency",
        title="Saliency (vanilla gradient)",
        family="gradient",
        paper="Simonyan et al., Deep Inside Convolutional Networks: Visualising Image "
        "Classification Models and Saliency Maps, ICLR workshop 2014",
        url="https://arxiv.org/abs/1312.6034",
        summary="M(i,j) = max_c |∂S^c/∂I_c(i,j)|: how much a small change of each pixel moves "
        "the class score, taking the largest magnitude over colour channels.",
        cost="1 forward pass + 1 backward pass to the input",
        run=saliency,
    )
)
