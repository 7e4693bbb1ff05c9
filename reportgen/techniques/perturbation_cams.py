"""Score-CAM and Ablation-CAM: class activation maps weighted by forward passes that alter
the input with, or the inside of, a layer's activations; registered in ``perturbation``."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..capture import hooks, resolve_layer
from .cam import same_logits, upsample, weighted_sum
from .perturbation_passes import forward_only, layer_activations, minmax, perturbed_scores, pick

# --- Score-CAM -----------------------------------------------------------------------------


@forward_only
def scorecam(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    layer: str,
    classifier: str | None = None,
    batch_size: int | None = None,
    align_corners: bool = False,
    channels: int | None = None,
    reshape: str | None = None,
    **_,
) -> torch.Tensor:
    """Wang et al. 2020: ``relu(Σ_k softmax_k(y_c(x ⊙ s(U(A_k)))) A_k)`` at the layer's size.

    ``channels=K`` weighs only each image's K channels of largest spatial variance (the
    others get weight 0: left out of the softmax), as "Faster Score-CAM" does; ``None``
    (the paper) weighs every channel.

    A channel that is constant over the map normalises to an all-zero mask, so its masked
    input is all zeros, the same for every such channel of every image: it runs once.
    Masks are normalised at the layer's size, then up-sampled a chunk at a time;
    ``align_corners=True`` up-samples first, as pytorch-grad-cam does.
    """
    _, acts = layer_activations(model, x, layer, reshape)
    n, k = acts.shape[:2]
    masks = minmax(acts)
    live = masks.flatten(2).amax(dim=2) > 0  # [N, K]: channels that are not constant
    if channels is not None and channels < k:
        spread = acts.flatten(2).float().var(dim=2).masked_fill(~live, -1.0)
        kept = torch.zeros_like(live).scatter_(1, spread.topk(channels, dim=1).indices, True)
        live, dropped = live & kept, ~kept  # dropped channels leave the softmax
    else:
        dropped = torch.zeros_like(live)

    def build(i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if align_corners:
            mask = minmax(upsample(acts[i, v], x.shape[-2:], align_corners=True))
        else:
            mask = upsample(masks[i, v], x.shape[-2:])
        return x[i] * mask[:, None].to(x.dtype)

    items, units = live.nonzero(as_tuple=True)
    logits = torch.empty(n, k, device=x.device)
    logits[items, units] = perturbed_scores(
        model, items, units, build, targets, batch_size=batch_size, output=None
    )
    if not (live | dropped).all():
        blank = model(torch.zeros_like(x[:1])).expand(n, -1)
        logits = torch.where(live, logits, pick(blank, targets, output=None)[:, None])
    logits = logits.masked_fill(dropped, -math.inf)
    return torch.relu(weighted_sum(logits.softmax(dim=1), acts))


# --- Ablation-CAM --------------------------------------------------------------------------


def head_drops(
    model: nn.Module,
    classifier: str | None,
    logits: torch.Tensor,
    acts: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor | None:
    """``y_c − y_c^k`` for every channel in closed form, or None where it does not apply.

    Where the layer feeds global average pooling and the linear ``classifier`` (dropout
    is off in eval mode), zeroing ``A_k`` lowers logit ``c`` by exactly
    ``W[c, k] · mean_ij(A_k)``: no pass at all. That the head is this one is checked,
    not assumed: the clean logits must equal ``classifier(mean_ij(A))``.
    """
    if classifier is None:
        return None
    linear = resolve_layer(model, classifier)
    if not isinstance(linear, nn.Linear) or linear.in_features != acts.shape[1]:
        return None
    pooled = acts.mean(dim=(2, 3))
    if not same_logits(linear(pooled), logits):
        return None
    return linear.weight[targets].float() * pooled.float()


def prefix_modules(model: nn.Module, layer: str) -> list[nn.Module]:
    """The children of the layer's ancestors, ancestors and layer left out: the modules
    that may run whole before the layer (``conv_stem``, ``bn1``, ``blocks.0`` … ``blocks.4``
    for Lite0's ``blocks.5``)."""
    modules = dict(model.named_modules())
    parts = layer.split(".")
    ancestors = [".".join(parts[:i]) for i in range(len(parts))]  # "", "blocks"
    found = {
        child: None
        for parent in ancestors
        for name, child in modules[parent].named_children()
        if (f"{parent}.{name}" if parent else name) not in [*ancestors, layer]
    }
    return list(found)


@dataclass
class Replay:
    """Passes through the network after a layer only, from one clean pass's outputs.

    Recorded during the clean pass: a copy of the output of every prefix module (see
    :func:`prefix_modules`) that runs exactly once, finishes before the layer starts and
    returns a batch-first tensor. While :meth:`patched`, those modules' forwards return
    their stored outputs for the rows' items and the layer's forward returns ``output``,
    so a pass computes what runs after the layer only. The model's own code still runs
    around them, so skip connections from before the layer (``out += identity`` in the
    layer's block) get their clean values with no analysis of the model's code.

    An output no longer referenced when the layer starts (``conv_stem``'s, once ``bn1``
    has read it) can only reach the rest of the network through values computed from it;
    :meth:`trimmed` returns an empty tensor there instead of copying rows of it.
    """

    layer: nn.Module
    stored: dict[nn.Module, torch.Tensor | None]  # None: return an empty tensor
    alive: set[nn.Module] = field(default_factory=set)  # outputs referenced at the layer
    items: torch.Tensor | None = None  # [B]: each row's item, for the stored outputs
    output: torch.Tensor | None = None  # [B, K, h, w]: what the layer returns

    @classmethod
    @contextmanager
    def record(cls, model: nn.Module, layer: str, n: int) -> Iterator[Replay]:
        """Hooks for the clean pass of a batch of ``n`` run inside the block."""
        replay = cls(resolve_layer(model, layer), {})
        calls: dict[nn.Module, int] = {}
        outputs: dict[nn.Module, weakref.ref] = {}  # the originals, to see which live on
        started = False

        def start(*_) -> None:
            nonlocal started
            started = True
            replay.alive = {m for m, ref in outputs.items() if ref() is not None}

        def done(module: nn.Module, _inp, out) -> None:
            calls[module] = calls.get(module, 0) + 1
            if not started and isinstance(out, torch.Tensor) and out.dim() and len(out) == n:
                replay.stored[module] = out.clone()  # later in-place ops must not reach it
                outputs[module] = weakref.ref(out)

        prefix = [(m, done) for m in prefix_modules(model, layer)]
        try:
            with hooks(forward=prefix, pre=[(replay.layer, start)]):
                yield replay
        finally:
            for module in [m for m in replay.stored if calls[m] != 1]:
                del replay.stored[module]  # also runs after the layer: it must run for real

    def trimmed(self) -> dict[nn.Module, torch.Tensor | None]:
        """The stored outputs, those no longer referenced at the layer left out."""
        return {m: out if m in self.alive else None for m, out in self.stored.items()}

    @contextmanager
    def patched(self) -> Iterator[None]:
        """The stored modules and the layer return their prepared outputs for the block."""

        def stored_rows(out: torch.Tensor | None) -> Callable[..., torch.Tensor]:
            if out is None:
                return lambda *_, **__: self.output.new_empty(0)
            return lambda *_, **__: out[self.items]  # a copy: the tail may write into it

        forwards = {m: stored_rows(out) for m, out in self.stored.items()}
        forwards[self.layer] = lambda *_, **__: self.output
        own: dict[nn.Module, Callable | None] = {}  # an instance's own forward, if it had one
        try:
            for module, forward in forwards.items():
                own[module] = module.__dict__.get("forward")
                module.forward = forward
            yield
        finally:
            for module, forward in own.items():
                if forward is None:
                    del module.forward
                else:
                    module.forward = forward

    def reproduces(
        self,
        model: nn.Module,
        x: torch.Tensor,
        logits: torch.Tensor,
        acts: torch.Tensor,
        batch_size: int,
    ) -> bool:
        """Whether replayed passes give the clean logits, on 2N rows in reverse order: a
        module whose skipped forward had side effects read later (state kept on itself),
        or a value computed from a left-out output, shows up as wrong values or an error."""
        rows = torch.arange(len(x) - 1, -1, -1, device=x.device).repeat(2)
        try:
            with self.patched():
                for chunk in rows.split(batch_size):
                    self.items, self.output = chunk, acts[chunk]
                    if not same_logits(model(x[chunk]), logits[chunk]):
                        return False
            return True
        except Exception:  # noqa: BLE001 - any failure means: replay less
            return False

    def settle(
        self,
        model: nn.Module,
        x: torch.Tensor,
        logits: torch.Tensor,
        acts: torch.Tensor,
        batch_size: int,
    ) -> None:
        """Keep the cheapest replay that reproduces the clean logits: the trimmed one, all
        stored outputs, or none (the whole network runs, the layer's output replaced)."""
        full, trimmed = self.stored, self.trimmed()
        for stored in [trimmed, full] if any(v is None for v in trimmed.values()) else [full]:
            self.stored = stored
            if stored and self.reproduces(model, x, logits, acts, batch_size):
                return
        self.stored = {}


def tail_drops(
    model: nn.Module,
    x: torch.Tensor,
    replay: Replay,
    logits: torch.Tensor,
    acts: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """``y_c − y_c^k`` for every channel, one row per channel that zeroing changes.

    Rows run through the network after the layer only (:class:`Replay`), or through the
    whole network where no replay reproduces the clean logits. A channel that is already
    all zero ablates to the clean network: its drop is exactly 0 and it is not run.
    """
    replay.settle(model, x, logits, acts, batch_size)
    n, k = acts.shape[:2]
    live = acts.flatten(2).ne(0).any(dim=2)  # [N, K]: channels that zeroing changes
    items, channels = live.nonzero(as_tuple=True)

    def build(i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = acts[i]  # a copy (advanced indexing)
        out[torch.arange(len(i), device=out.device), v] = 0
        replay.items, replay.output = i, out
        return x[i]

    clean = pick(logits, targets, output=None)
    drops = torch.zeros(n, k, device=clean.device)
    with replay.patched():
        ablated = perturbed_scores(
            model, items, channels, build, targets, batch_size=batch_size, output=None
        )
    drops[items, channels] = clean[items] - ablated
    return drops


def ablation_weights(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    layer: str,
    classifier: str | None,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ablation-CAM's ``w [N, K]`` and the layer's ``A [N, K, h, w]`` (call it as
    :func:`ablationcam` does: eval mode, inference mode, targets a LongTensor).

    Only the network after the layer changes when a channel is zeroed, so only it is run:
    not at all where the layer feeds global average pooling and the linear
    ``classifier`` (:func:`head_drops`), else one row per channel through the rest of
    the network (:func:`tail_drops`).
    """
    with Replay.record(model, layer, x.shape[0]) as replay:
        logits, acts = layer_activations(model, x, layer, writer="ablationcam")
    drops = head_drops(model, classifier, logits, acts, targets)
    if drops is None:
        drops = tail_drops(model, x, replay, logits, acts, targets, batch_size)
    clean = pick(logits, targets, output=None)
    return drops / clean[:, None], acts


@forward_only
def ablationcam(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    layer: str,
    classifier: str | None = None,
    batch_size: int | None = None,
    **_,
) -> torch.Tensor:
    """Desai & Ramaswamy 2020: ``w_k = (y_c − y_c^k) / y_c``, map ``relu(Σ_k w_k A_k)``,
    where ``y_c^k`` is the target logit with channel ``k`` of the layer zeroed
    (:func:`ablation_weights`)."""
    weights, acts = ablation_weights(model, x, targets, layer, classifier, batch_size)
    return torch.relu(weighted_sum(weights, acts))
