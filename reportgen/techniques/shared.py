"""Passes that several techniques of one ``compute`` call make alike, made once.

Saliency and input x gradient both take the plain input gradient; guided backpropagation and
guided Grad-CAM both take the guided one; guided Grad-CAM also takes the Grad-CAM map that
the fused capture has just made. Inside ``shared_passes()`` each such pass is kept, keyed by
the objects it was made from (model, input, targets: the same objects for every technique of
a call) and by everything else that changes its result (the backward rule, the layer, the
autocast precision), so the second technique gets the first one's tensor: the same values,
without the pass. Outside a ``shared_passes`` block nothing is kept or taken.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import torch

T = TypeVar("T")
_KEPT: ContextVar[dict | None] = ContextVar("shared_passes", default=None)


@contextmanager
def shared_passes(kept: dict) -> Iterator[None]:
    """Inside the block, shareable passes are kept in ``kept`` (one per ``compute`` call,
    entered around each of its units) and taken from it."""
    token = _KEPT.set(kept)
    try:
        yield
    finally:
        _KEPT.reset(token)


def _key(kind: str, model: torch.nn.Module, x: torch.Tensor, targets, extra: Hashable) -> tuple:
    device = x.device.type
    cast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    return (kind, id(model), id(x), id(targets), extra, cast)


def lookup(kind: str, model: torch.nn.Module, x: torch.Tensor, targets, extra: Hashable):
    """What ``keep`` stored for these objects and ``extra`` in this block, or None."""
    kept = _KEPT.get()
    found = None if kept is None else kept.get(_key(kind, model, x, targets, extra))
    return None if found is None else found[0]


def keep(
    kind: str, model: torch.nn.Module, x: torch.Tensor, targets, extra: Hashable, value
) -> None:
    """Store ``value`` for ``lookup`` (nothing outside a ``shared_passes`` block). The
    objects are kept with it, so their ids cannot go to others while the block lasts."""
    kept = _KEPT.get()
    if kept is not None:
        kept[_key(kind, model, x, targets, extra)] = (value, (model, x, targets))


def once(
    kind: str,
    model: torch.nn.Module,
    x: torch.Tensor,
    targets,
    extra: Hashable,
    make: Callable[[], T],
) -> T:
    """``make()``, or what it returned for the same ``kind``, objects and ``extra`` earlier in
    this ``shared_passes`` block."""
    found = lookup(kind, model, x, targets, extra)
    if found is None:
        found = make()
        keep(kind, model, x, targets, extra, found)
    return found
