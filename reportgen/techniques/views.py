"""Model views that are shown, not scored: feature maps and first-layer filters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..capture import Capture, hooks, preserved_state, resolve_layer
from .registry import Technique, register


@dataclass
class LayerActivations:
    """One layer's activations for a batch and the per-image statistics the site plots."""

    acts: torch.Tensor  # [N, C, h, w]
    sparsity: torch.Tensor  # [N]: fraction of activations that are exactly zero
    mean: torch.Tensor  # [N]: mean activation


def feature_maps(
    model: nn.Module, x: torch.Tensor, targets=None, layers: Sequence[str] = (), **_
) -> dict[str, LayerActivations]:
    """Zeiler & Fergus 2014: every channel of each chosen layer, plus its sparsity."""
    with preserved_state(model), torch.no_grad(), Capture(model, layers) as cap:
        model(x)
    out = {}
    for name in layers:
        a = cap.outputs[name].float()
        flat = a.flatten(1)
        out[name] = LayerActivations(a, (flat == 0).float().mean(1), flat.mean(1))
    return out


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first ``nn.Conv2d`` in registration order (the layer that sees pixels)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer")


def filters(model: nn.Module, *_, **__) -> tuple[str, torch.Tensor]:
    """The first conv layer's weights ``[C_out, C_in, k, k]``, each min-max normalised."""
    name, conv = first_conv(model)
    w = conv.weight.detach().float().cpu()
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    return name, (w - lo) / (hi - lo).clamp_min(1e-12)


def penultimate(
    model: nn.Module,
    x: torch.Tensor,
    targets=None,
    classifier: str | None = None,
    layers: Sequence[str] = (),
    **_,
) -> torch.Tensor:
    """``[N, D]``: what the final linear layer sees (its input, the "CNN code" of the
    survey), or, without a named classifier, the last feature layer average-pooled."""
    seen: list[torch.Tensor] = []
    if classifier:
        keep = (resolve_layer(model, classifier), lambda _m, args: seen.append(args[0]))
        with hooks(pre=[keep]), preserved_state(model), torch.no_grad():
            model(x)
        return seen[0].flatten(1).float()
    if not layers:
        raise ValueError("embedding needs the model's classifier or a feature layer (--layers)")
    return feature_maps(model, x, layers=[layers[-1]])[layers[-1]].acts.mean(dim=(2, 3))


register(
    Technique(
        name="feature_maps",
        title="Feature maps",
        family="view",
        paper="Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014",
        url="https://arxiv.org/abs/1311.2901",
        summary="The activations of chosen layers for each image, every channel tiled into a "
        "grid (viridis, each channel min-max scaled), with each layer's sparsity (fraction of "
        "exact zeros after the activation function) and mean activation.",
        cost="1 forward pass",
        run=feature_maps,
        needs_gradient=False,
    )
)
register(
    Technique(
        name="filters",
        title="First-layer filters",
        family="view",
        paper="Krizhevsky et al., ImageNet Classification with Deep Convolutional Neural "
        "Networks, NeurIPS 2012 (conv1 figure)",
        url="https://papers.nips.cc/paper/4824",
        summary="The weights of the first convolution as small RGB tiles, each filter min-max "
        "normalised on its own: the colour and edge detectors the network starts from.",
        cost="no pass (reads the weights)",
        run=filters,
        needs_gradient=False,
    )
)
register(
    Technique(
        name="embedding",
        title="Feature-space embedding (t-SNE)",
        family="view",
        paper="van der Maaten & Hinton, Visualizing Data using t-SNE, JMLR 2008",
        url="https://www.jmlr.org/papers/v9/vandermaaten08a.html",
        summary="Every image's penultimate features (the input of the final linear layer, the "
        "survey's \"CNN code\") embedded in 2-D with scikit-learn's t-SNE (PCA start, "
        "perplexity min(30, (N - 1) / 3), the run's seed), drawn with the images' thumbnails: "
        "images the network finds alike lie close together.",
        cost="1 forward pass (shared with nothing: features are stored per image)",
        run=penultimate,
        needs_gradient=False,
    )
)
