"""Hooks in one place: layer look-up, activation/gradient capture, model state.

Every hook is installed inside a context manager and removed on exit, even on
error, and the model's train/eval mode and ``requires_grad`` flags are restored,
so an explanation never leaves a trace on the user's model.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


class LayerNotFound(ValueError):
    """A layer name that is not a module of the model."""


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the sub-module called ``name`` (as in ``named_modules``), or explain."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise LayerNotFound(
        f"layer '{name}' is not a module of {type(model).__name__}.{hint} "
        "Run `reportgen list layers --model ...` to see every usable name."
    )


@contextmanager
def preserved_state(model: nn.Module) -> Iterator[nn.Module]:
    """Put the model in eval mode for the block; restore mode and grad flags after."""
    modes = {m: m.training for m in model.modules()}
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        model.eval()
        yield model
    finally:
        for m, training in modes.items():
            m.training = training
        for p, flag in flags.items():
            p.requires_grad_(flag)


@dataclass
class LayerOutput:
    """One layer's output recorded during a dummy forward pass."""

    name: str
    kind: str
    shape: tuple[int, ...]

    @property
    def spatial(self) -> bool:
        """A CAM needs a [N, C, H, W] output with more than one position."""
        return len(self.shape) == 4 and self.shape[2] * self.shape[3] > 1


def record_outputs(model: nn.Module, x: torch.Tensor) -> tuple[list[LayerOutput], dict[str, int]]:
    """Run ``x`` once and list every module's output shape in execution order.

    Also returns, for each name, the ``id`` of the tensor it produced, so callers
    can tell which modules merely pass on a child's output (``layer4`` vs
    ``layer4.1.relu``).
    """
    seen: list[LayerOutput] = []
    ids: dict[str, int] = {}
    keep: list[torch.Tensor] = []
    handles = []

    def hook(name: str):
        def fn(module: nn.Module, _inp, out) -> None:
            if isinstance(out, torch.Tensor):
                seen.append(LayerOutput(name, type(module).__name__, tuple(out.shape)))
                ids[name] = id(out)
                keep.append(out)

        return fn

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with preserved_state(model), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen, ids


class Capture:
    """Record the outputs of named layers during forward passes.

    With ``for_grad=True`` the hook hands a clone downstream, so that in-place
    operations after the layer (``ReLU(inplace=True)``, ``+=`` in residual
    blocks) cannot modify the tensor we differentiate against.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], for_grad: bool = False):
        self.model = model
        self.names = list(dict.fromkeys(names))
        self.for_grad = for_grad
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> Capture:
        for name in self.names:
            module = resolve_layer(self.model, name)
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def fn(_module: nn.Module, _inp, out):
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layer '{name}' returns {type(out).__name__}, not a tensor")
            self.outputs[name] = out
            return out.clone() if self.for_grad else None

        return fn

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def grad_ready_input(x: torch.Tensor) -> torch.Tensor:
    """A leaf copy of ``x`` that requires grad, so the graph exists even for frozen models."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "gradient-based explanations cannot run under torch.inference_mode(); "
            "call them outside that block"
        )
    return x.detach().clone().requires_grad_(True)
