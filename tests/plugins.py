"""Plug-in explainers for the tests (``--methods tests.plugins:NAME``)."""

from __future__ import annotations

import torch


def input_times_gradient(model, x, targets):
    """Input × gradient of the target logit, summed over colour channels."""
    with torch.enable_grad():
        inputs = x.detach().clone().requires_grad_(True)
        score = model(inputs).gather(1, torch.as_tensor(targets).view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, inputs)
    return (inputs * grad).sum(1)


def layer_energy(model, x, targets, layer):
    """The mean of |activation| over channels at ``layer``: a map at the layer's size."""
    found = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _i, out: found.update(out=out))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return found["out"].abs().mean(1)


def broken(model, x, targets):
    raise KeyError("no such thing")


def wrong_shape(model, x, targets):
    return torch.zeros(len(x) + 1, 4, 4)
