"""The one way a technique is called: ``reportgen.explain``, the run engine and the
sanity check all go through ``compute``.

The gradient CAMs asked for share one capture (``cam_maps``: one forward pass and one
gradient for every method at every layer); every other technique is called with the
model, the input, the targets and, for a CAM-family method, its layer and the
classifier. Results come one unit at a time, so a caller can store each as it comes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from evaluation import catalogue

from .techniques import Technique
from .techniques.cam import REGISTRY_CAM, cam_maps, upsample
from .techniques.shared import shared_passes

FUSED = "cam engine"  # the label the shared capture is timed and profiled under


@dataclass
class Computed:
    """One technique's maps at one layer, or why there are none."""

    method: str
    layer: str
    maps: torch.Tensor | None
    problem: str = ""  # names the method and layer
    shared: int = 1  # units computed by one pass (the fused gradient CAMs): a time share
    # per-item records that come with the maps (catalogue entries with needs="record")
    records: dict[str, list[float]] = field(default_factory=dict)


def _around(label: str, layer: str, technique: Technique | None):
    return contextlib.nullcontext()


def problem_of(name: str, layer: str, err: Exception) -> str:
    """A unit's failure in words: a ``ValueError`` names the method and layer itself, any
    other error is prefixed with them."""
    return str(err) if isinstance(err, ValueError) else f"{name} at {layer}: {err}"


def at_input(maps: torch.Tensor, size) -> torch.Tensor:
    """Maps up-sampled to the input's ``size`` (a pixel method's already are)."""
    return upsample(maps, size) if maps.shape[-2:] != tuple(size) else maps


def compute(
    model: torch.nn.Module,
    x: torch.Tensor,
    targets,
    units: Sequence[tuple[Technique, str]],
    classifier: str | None = None,
    *,
    reshape: str | None = None,
    settings: Callable[[Technique], dict] = lambda technique: {},
    around: Callable = _around,
    strict: bool = False,
) -> Iterator[Computed]:
    """Maps of every ``(technique, layer)`` in ``units`` for ``targets`` (one class per
    item, or one for all): the fused gradient CAMs first, then the others in order.

    ``settings(t)``: keyword arguments for ``t`` (preset, ``--set``, normalisation);
    ``around(label, layer, t)``: a context each computation runs in (the run's timer,
    profiler and autocast; ``t`` is None for the shared capture). A technique's
    ``ValueError`` or ``RuntimeError`` becomes the unit's ``problem`` (one unit's failure
    is the run's note, not its end), or is raised if ``strict``.

    Passes that several of the call's techniques make alike (the input gradient, the
    guided one, Grad-CAM's map) are made once (``techniques.shared``): kept while the call's
    units are computed, not while the caller holds a result."""
    kept: dict = {}
    fused = [(t, layer) for t, layer in units if t.name in REGISTRY_CAM]
    if fused:
        methods = list(dict.fromkeys(t.name for t, _ in fused))
        layers = list(dict.fromkeys(layer for _, layer in fused))
        errors: dict[tuple[str, str], str] | None = None if strict else {}
        negative: dict[str, torch.Tensor] = {}
        try:
            with around(FUSED, ",".join(layers), None), shared_passes(kept):
                maps = cam_maps(
                    model, x, targets, layers, methods, classifier, errors, negative, reshape
                )
                maps = {key: m.float() for key, m in maps.items()}
        except (ValueError, RuntimeError) as err:
            if strict:
                raise
            for t, layer in fused:
                yield Computed(t.name, layer, None, f"{t.name} at {layer}: {err}")
        else:
            for t, layer in fused:
                problem = (errors or {}).get((t.name, layer), "")
                records = (
                    {catalogue.NEGATIVE.id: negative[layer].tolist()} if layer in negative else {}
                )
                m = maps.get((t.name, layer))
                yield Computed(t.name, layer, m, problem, len(maps), records)
    for t, layer in units:
        if t.name in REGISTRY_CAM:
            continue
        where = {"layer": layer, "classifier": classifier, "reshape": reshape}
        where = where if t.needs_layer else {}
        try:
            with around(t.name, layer, t), shared_passes(kept):
                maps = t.run(model, x, targets, **{**where, **settings(t)})
        except (ValueError, RuntimeError) as err:
            if strict:
                raise
            yield Computed(t.name, layer, None, problem_of(t.name, layer, err))
        else:
            yield Computed(t.name, layer, maps)
