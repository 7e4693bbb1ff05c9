"""Hooks in one place: layer look-up, activation/gradient capture, model state.

Every hook is installed inside a context manager and removed on exit, even on
error, and the model's train/eval mode and ``requires_grad`` flags are restored,
so an explanation never leaves a trace on the user's model.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .hints import did_you_mean
from .layout import Layout, infer, prefix_tokens


class LayerNotFound(ValueError):
    """A layer name that is not a module of the model."""


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the sub-module called ``name`` (as in ``named_modules``), or explain."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    hint = did_you_mean(name, modules, n=5, cutoff=0.5)
    raise LayerNotFound(
        f"layer '{name}' is not a module of {type(model).__name__}.{hint} "
        "Run `reportgen list layers --model ...` to see every usable name."
    )


@contextmanager
def hooks(
    *,
    forward: Sequence[tuple[nn.Module, Callable]] = (),
    pre: Sequence[tuple[nn.Module, Callable]] = (),
) -> Iterator[None]:
    """Forward hooks and forward pre-hooks ``(module, fn)`` for the block, removed when it
    ends, also when it raises: every hook reportgen places goes through here (or
    ``Capture``, built on it), so none is ever left behind."""
    handles = [module.register_forward_hook(fn) for module, fn in forward]
    handles += [module.register_forward_pre_hook(fn) for module, fn in pre]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
    layout: Layout | None = None  # how CAM methods read it as [N, C, h, w]; None: they cannot

    @property
    def spatial(self) -> bool:
        """A channels-first [N, C, H, W] output with more than one position (what the
        per-channel views need; CAM methods also take tokens and channels-last)."""
        layout, shape = self.layout, self.shape
        return layout is not None and layout.kind == "nchw" and shape[2] * shape[3] > 1


def record_outputs(model: nn.Module, x: torch.Tensor) -> tuple[list[LayerOutput], dict[str, int]]:
    """Run ``x`` once and list every module's output shape in execution order.

    Also returns, for each name, the ``id`` of the tensor it produced, so callers
    can tell which modules merely pass on a child's output (``layer4`` vs
    ``layer4.1.relu``).
    """
    seen: list[LayerOutput] = []
    ids: dict[str, int] = {}
    keep: list[torch.Tensor] = []
    size, prefix = tuple(x.shape[-2:]), prefix_tokens(model)

    def hook(name: str):
        def fn(module: nn.Module, _inp, out) -> None:
            if isinstance(out, torch.Tensor):
                shape = tuple(out.shape)
                layout = infer(shape, size, prefix, len(x))
                seen.append(LayerOutput(name, type(module).__name__, shape, layout))
                ids[name] = id(out)
                keep.append(out)

        return fn

    every = [(module, hook(name)) for name, module in model.named_modules() if name]
    with hooks(forward=every), preserved_state(model), torch.no_grad():
        model(x)
    return seen, ids


class Capture:
    """Record the outputs of named layers during forward passes.

    With ``for_grad=True`` the hook hands a clone downstream, so that in-place
    operations after the layer (``ReLU(inplace=True)``, ``+=`` in residual
    blocks) cannot modify the tensor we differentiate against. An output that is
    not yet part of a graph (input and parameters not requiring grad) becomes a
    leaf that requires grad: the graph then starts at the earliest captured layer,
    so everything before it runs as cheaply as a plain forward pass.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], for_grad: bool = False):
        self.model = model
        self.names = list(dict.fromkeys(names))
        self.for_grad = for_grad
        self.outputs: dict[str, torch.Tensor] = {}
        self._hooks = contextlib.ExitStack()

    def __enter__(self) -> Capture:
        found = [(resolve_layer(self.model, name), self._hook(name)) for name in self.names]
        self._hooks.enter_context(hooks(forward=found))
        return self

    def _hook(self, name: str):
        def fn(_module: nn.Module, _inp, out):
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layer '{name}' returns {type(out).__name__}, not a tensor")
            if self.for_grad and not out.requires_grad and torch.is_grad_enabled():
                out = out.detach().requires_grad_(True)
            self.outputs[name] = out
            return out.clone() if self.for_grad else None

        return fn

    def __exit__(self, *exc) -> None:
        self._hooks.close()


class _Stop(Exception):
    """Raised by a forward hook once every layer a caller needs has run."""


def activations(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` for input ``x``, stopping the forward pass right after the
    last of them has run, so a shallow layer costs a fraction of a full pass.

    Under autograd the outputs are differentiable with respect to ``x`` (later in-place
    operations cannot touch them: ``Capture`` hands a clone downstream).
    """
    names = list(dict.fromkeys(layers))
    with Capture(model, names, for_grad=torch.is_grad_enabled()) as cap:

        def stop(*_) -> None:
            if len(cap.outputs) == len(names):
                raise _Stop

        stops = [(resolve_layer(model, name), stop) for name in names]
        with hooks(forward=stops), contextlib.suppress(_Stop):
            model(x)
    missing = [name for name in names if name not in cap.outputs]
    if missing:
        raise ValueError(f"layers {', '.join(missing)} did not run in the forward pass")
    return {name: cap.outputs[name] for name in names}


def refuse_inference_mode() -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "gradient-based explanations cannot run under torch.inference_mode(); "
            "call them outside that block"
        )


def grad_ready_input(x: torch.Tensor) -> torch.Tensor:
    """A leaf copy of ``x`` that requires grad, so the graph exists even for frozen models."""
    refuse_inference_mode()
    return x.detach().clone().requires_grad_(True)


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Parameters not requiring grad for the block (flags restored after): no graph is
    recorded for them, and no parameter gradient is ever computed."""
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


# --- Backward rules: guided backpropagation and the deconvnet -------------------------------

RULES = ("guided", "deconvnet", "pass")

# Element-wise rectifier-like activations the rules apply to (subclasses included). Gates
# (Sigmoid, Tanh, Hardsigmoid in squeeze-excitation blocks) are not rectifiers and keep
# their ordinary gradient.
TORCH_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.SiLU,
    nn.GELU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
)
_TIMM_ACTIVATIONS = (
    "GELU",
    "GELUTanh",
    "QuickGELU",
    "Swish",
    "SwishMe",
    "Mish",
    "MishMe",
    "HardSwish",
    "HardSwishMe",
    "HardMish",
    "HardMishMe",
)


@functools.cache
def activation_types() -> tuple[type[nn.Module], ...]:
    """torch's rectifier-like activations plus timm's own classes (which do not subclass them)."""
    try:
        from timm.layers import activations, activations_me
    except ImportError:  # timm is a dependency, but the rules do not need it
        return TORCH_ACTIVATIONS
    extra = [
        getattr(mod, name)
        for mod in (activations, activations_me)
        for name in _TIMM_ACTIVATIONS
        if isinstance(getattr(mod, name, None), type)
    ]
    return TORCH_ACTIVATIONS + tuple(extra)


class _RuleFunction(torch.autograd.Function):
    """Forward: the activation module itself (in place if it works in place). Backward: the
    rule instead of ``f'(x) * g``.

    * guided: ``f'(x) * relu(g)``: the ordinary local derivative, but only the
      positive part of the signal from above (for ReLU ``relu(g) * (x > 0)``, for
      ReLU6 ``relu(g) * (0 < x < 6)``);
    * deconvnet: ``relu(g)``, ignoring the forward input altogether;
    * pass: ``g`` (layer-wise relevance propagation: activations pass relevance on).

    ``f'(x)`` is not hand-coded per activation: backward re-runs the module's own
    ``forward`` on the saved input and takes its vector-Jacobian product with
    ``relu(g)``, so every element-wise activation gets its exact derivative.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, module: nn.Module, rule: str) -> torch.Tensor:
        ctx.fn, ctx.rule = module.forward, rule
        if rule == "guided":  # f'(x) needs the input as it was: an in-place module overwrites it
            ctx.save_for_backward(x.clone() if getattr(module, "inplace", False) else x)
        y = module(x)
        if y is x:  # the module worked in place
            ctx.mark_dirty(x)
        return y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.rule == "pass":  # LRP's rule for activations: relevance goes through as it is
            return grad_out, None, None
        positive = torch.relu(grad_out)
        if ctx.rule == "deconvnet":
            return positive, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            # clone: an in-place activation must not write into a leaf that requires grad
            (grad,) = torch.autograd.grad(ctx.fn(leaf.clone()), leaf, positive)
        return grad, None, None


class StandIn(nn.Module):
    """Stands in for a module while a backward rule holds (``swapped_modules``): calls it,
    through ``ruled`` when the input carries a gradient, so every call of a module used
    twice (ResNet's ``relu``) gets the rule. The original is not a submodule (layer names
    stay as they were); reads of its attributes (attention reading ``out_proj.weight``)
    reach it."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.__dict__["original"] = original

    def forward(self, x):
        if isinstance(x, torch.Tensor) and torch.is_grad_enabled() and x.requires_grad:
            return self.ruled(x)
        return self.original(x)

    def ruled(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["original"], name)


def activation_hint(what: str) -> str:
    """Why no activation module could be reached, and what to do: for ``what`` needs them."""
    return (
        f"{what} needs activation modules (nn.ReLU, nn.ReLU6, nn.SiLU, ...) that it can "
        "reach; activations called as functions (F.relu in forward) cannot be. Define them "
        "as modules (self.relu = nn.ReLU()) and call those"
    )


class _Ruled(StandIn):
    """An activation module while ``backward_rule`` holds."""

    def __init__(self, original: nn.Module, rule: str, applied: list[int]):
        super().__init__(original)
        self.rule, self.applied = rule, applied

    def ruled(self, x: torch.Tensor) -> torch.Tensor:
        self.applied[0] += 1
        return _RuleFunction.apply(x, self.original, self.rule)


@contextmanager
def backward_rule(
    model: nn.Module, rule: str, extra: tuple[type[nn.Module], ...] = (), strict: bool = True
) -> Iterator[nn.Module]:
    """Make every activation module of ``model`` apply ``rule`` in backward, for the block.

    Each activation module is swapped for a stand-in that calls it through
    ``_RuleFunction``, and put back on exit, even on error. A swap, not hooks: hooks had
    to copy every activation's input (an in-place one overwrites it) and output (a custom
    function may not return its input unchanged), a third of a deconvnet projection's
    time; now only the guided rule copies the input of an in-place activation. A module
    called several times (ResNet's shared ``relu``) gets the rule at every call.

    Raises ``ValueError`` when no activation module exists or none ran (unless not
    ``strict``: LRP's pass rule is the gradient where nothing is swapped): activations
    called as functions (``F.relu`` in ``forward``) cannot be reached. ``extra``: more
    module types to swap (LRP's unfolded batch norms).
    """
    if rule not in RULES:
        raise ValueError(f"backward rule '{rule}' is unknown; valid: {', '.join(RULES)}")
    kinds = activation_types() + extra
    hint = activation_hint(f"the {rule} rule")
    applied = [0]
    with swapped_modules(model, kinds, lambda m: _Ruled(m, rule, applied)) as swapped:
        if strict and not swapped:
            raise ValueError(f"{type(model).__name__} has no activation module: {hint}")
        yield model
    if strict and not applied[0]:
        raise ValueError(
            f"none of the {len(swapped)} activation modules of {type(model).__name__} ran on "
            f"a differentiable input: {hint}"
        )


@contextmanager
def swapped_modules(
    model: nn.Module, kinds: tuple[type[nn.Module], ...], make: Callable[[nn.Module], nn.Module]
) -> Iterator[list[nn.Module]]:
    """Every child module of ``model`` that is one of ``kinds`` replaced by ``make(child)``
    for the block (a module held in two places is replaced in both), the originals put
    back on exit, even on error. Yields the originals replaced."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for parent in list(model.modules()):
            # _modules, not named_children(), which lists a module held twice only once
            for name, child in list(parent._modules.items()):
                if isinstance(child, kinds):
                    setattr(parent, name, make(child))
                    swapped.append((parent, name, child))
        yield [child for _, _, child in swapped]
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)
