"""FullGrad: the input-gradient term plus every bias's gradient term (Srinivas & Fleuret).

For a network of ReLUs, convolutions and eval-mode batch norms, the score splits exactly
into ``x · ∇_x S`` plus, for every layer with a bias, ``Σ ∇_z S · b`` over its output z
(``full_gradients`` returns these terms; a test checks their sum is the score). The map
post-processes each term per channel, as the paper's formula does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..capture import Capture, frozen, grad_ready_input, preserved_state
from .cam import targets_tensor, upsample
from .perturbation_passes import minmax
from .registry import Technique, register


def bias_layers(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{name: bias}`` of every layer whose output ``z`` takes a bias: convolutions and
    linear layers with one, and plain batch norms (their implicit bias
    ``β − μ γ / √(σ² + ε)``), each shaped to broadcast over its output."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.bias is not None:
            found[name] = module.bias.detach().view(1, -1, 1, 1)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            found[name] = module.bias.detach()  # on the last dimension, tokens included
        elif type(module) is nn.BatchNorm2d and module.running_mean is not None:
            gamma = module.weight if module.affine else 1.0
            beta = module.bias if module.affine else 0.0
            scale = gamma / torch.sqrt(module.running_var + module.eps)
            found[name] = (beta - module.running_mean * scale).detach().view(1, -1, 1, 1)
    return found


def full_gradients(
    model: nn.Module, x: torch.Tensor, targets
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """One forward and one backward pass: ``x ⊙ ∇_x S [N, 3, H, W]``, each bias layer's
    ``∇_z S ⊙ b`` (``[N, C, h, w]`` for a convolution or norm), and the scores ``S [N]``.

    Batch norms are folded into the convolutions before them first (``folded_copy``: the
    same function, each norm's implicit bias then in its convolution), so a norm whose
    module also applies the activation (timm's ``BatchNormAct2d``) is counted before it."""
    from ..models import folded_copy  # models imports capture, not techniques

    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        model, _ = folded_copy(model, tuple(x.shape[-2:]))
    biases = bias_layers(model)
    with preserved_state(model), frozen(model), torch.enable_grad():
        inp = grad_ready_input(x)
        with Capture(model, list(biases), for_grad=True) as cap:
            scores = model(inp)
        t = targets_tensor(targets, x.shape[0], scores.device)
        picked = scores.gather(1, t[:, None])[:, 0]
        outputs = [cap.outputs[name] for name in biases]
        grads = torch.autograd.grad(picked.sum(), [inp, *outputs])
    terms = [g.detach() * biases[name] for name, g in zip(biases, grads[1:], strict=True)]
    return inp.detach() * grads[0], terms, picked.detach()


def fullgrad(model: nn.Module, x: torch.Tensor, targets, **_) -> torch.Tensor:
    """``Σ_c ψ(x ⊙ ∇_x S)_c + Σ_layers Σ_c ψ(∇_z S ⊙ b)_c``, ψ = absolute value, min-max
    scaled per image and channel at the term's own size, bilinearly up-sampled."""
    inputs, terms, _ = full_gradients(model, x, targets)
    total = minmax(inputs.abs()).sum(dim=1)
    for term in terms:  # spatial terms only (a linear layer's has no map); up-sampling is
        if term.dim() == 4:  # linear: the channels are summed first, then up-sampled once
            total += upsample(minmax(term.abs()).sum(dim=1), x.shape[-2:])
    return total


def completeness_gap(model: nn.Module, x: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
    """``S − (Σ x ⊙ ∇_x S + Σ ∇_z S ⊙ b)`` per item, every bias counted (the classifier's
    too): zero for a piecewise-linear network whose only constants are its biases (ReLU,
    convolutions, batch norms, pooling)."""
    inputs, terms, scores = full_gradients(model, x, targets)
    parts = inputs.flatten(1).sum(1) + sum(t.flatten(1).sum(1) for t in terms)
    return scores - parts


register(
    Technique(
        name="fullgrad",
        title="FullGrad",
        family="gradient",
        paper="Srinivas and Fleuret, Full-Gradient Representation for Neural Network "
        "Visualization, NeurIPS 2019",
        url="https://arxiv.org/abs/1905.00780",
        summary="S_f(x) = ψ(∇_x S ⊙ x) + Σ_l Σ_c ψ(∇_{z_l} S ⊙ b_l)_c: the input-gradient "
        "term plus, for every layer l with a bias b_l (convolutions, and batch norms' "
        "implicit bias), the gradient at its output times the bias, channel by channel; "
        "ψ takes the absolute value, min-max scales it and up-samples it to the input. For "
        "a ReLU network the unprocessed terms add up to the score exactly.",
        cost="1 forward pass + 1 backward pass to the input (every bias layer's gradient kept)",
        run=fullgrad,
        notes="Batch norms are folded into their convolutions first (the same function), so "
        "a norm that also applies the activation (timm's BatchNormAct2d in "
        "EfficientNet-Lite0) is counted at its affine output, before the activation. "
        "pytorch-grad-cam picks layers of exactly the types Conv2d and BatchNorm2d, so on "
        "Lite0 it finds none and its FullGrad is the input term alone; where it finds them "
        "(torchvision's ResNet and MobileNetV2) the maps agree. Like pytorch-grad-cam, ψ "
        "scales each channel (the paper's formula; the authors' code scales each layer as "
        "a whole) and the input term per colour channel.",
        cheap=True,
    )
)
