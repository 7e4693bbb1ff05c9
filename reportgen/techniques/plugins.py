"""Explainers from outside the package, named in ``--methods``: a user's own function
(``package.module:function``) or a captum attribution by class name (``captum:NAME``).

Each is registered on first use as a technique of the family ``plugin``, so a run computes,
scores, times and shows it like a built-in one; its page says where it came from. The
function's signature decides what it gets::

    def my_map(model, x, targets, layer=None, classifier=None, mean=None, std=None,
               seed=0, batch_size=None) -> torch.Tensor  # [N, H, W]

``x`` is the batch in the model's input space, ``targets`` the class of each item; a
``layer`` parameter makes it run at every CAM layer of the run (with that layer's name),
like the CAM methods; it receives only the keywords it declares (all of them with
``**kwargs``). It returns one map per item, ``[N, H, W]`` or ``[N, C, H, W]`` (summed over
channels), as a tensor or an array. Whatever it raises is that method's problem, noted on
the run's index, never the run's end.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import torch

from ..hints import imported
from .registry import REGISTRY, RESOLVERS, Technique, register

PLUGIN = "plugin"


def plugin(reference: str) -> Technique:
    """The technique for ``reference`` (``package.module:function`` or ``captum:NAME``),
    registered under a name safe in file names and URLs (``:`` becomes ``.``)."""
    name = reference.replace(":", ".")
    if name in REGISTRY:
        return REGISTRY[name]
    owner, _, attr = reference.partition(":")
    if owner == "captum":
        fn, doc = _captum(attr)
    else:
        fn = imported(reference, "method")
        if not callable(fn):
            raise ValueError(f"method '{reference}': '{attr}' is not callable")
        doc = inspect.getdoc(fn) or ""
    params = inspect.signature(fn).parameters
    return register(
        Technique(
            name=name,
            title=name,
            family=PLUGIN,
            paper=f"plug-in: {reference}",
            url="",
            summary=doc.strip() or f"a user method, {reference} (no docstring)",
            cost="a plug-in: not known to reportgen (see its timing)",
            run=_checked(reference, fn, params),
            at_layer="layer" in params,
        )
    )


def _resolve(name: str) -> Technique | None:
    return plugin(name) if ":" in name else None


RESOLVERS.append(_resolve)


def _checked(reference: str, fn: Callable, params) -> Callable:
    """``fn`` called with the keywords it declares, its maps as ``[N, H, W]`` floats, and
    any failure turned into the ``RuntimeError`` a unit records as its problem."""
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def run(model, x: torch.Tensor, targets, **kwargs) -> torch.Tensor:
        given = kwargs if open_ended else {k: v for k, v in kwargs.items() if k in params}
        try:
            maps = _as_maps(fn(model, x, targets, **given))
        except Exception as err:  # noqa: BLE001 (a plug-in's failure is its own)
            raise RuntimeError(f"plug-in {reference} failed: {type(err).__name__}: {err}") from err
        if maps.dim() != 3 or len(maps) != len(x):
            raise RuntimeError(
                f"plug-in {reference} returned maps of shape {tuple(maps.shape)}; expected "
                f"[{len(x)}, H, W] (or [{len(x)}, C, H, W])"
            )
        return maps.detach().float()

    return run


def _as_maps(out) -> torch.Tensor:
    maps = out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out))
    return maps.sum(1) if maps.dim() == 4 else maps


def _captum(name: str) -> tuple[Callable, str]:
    """captum's input attribution ``name`` as a function of (model, x, targets): its
    ``attribute`` with zero baselines where it needs baselines, summed over colour
    channels (signed, as captum's own visualisations do)."""
    try:
        import captum.attr as attr
    except ImportError as err:
        raise ValueError(f"method 'captum:{name}' needs captum: pip install captum") from err
    cls = getattr(attr, name, None)
    layered = ("Layer", "Neuron")
    if not (inspect.isclass(cls) and issubclass(cls, attr.Attribution)) or name.startswith(layered):
        choices = [
            n
            for n in dir(attr)
            if inspect.isclass(getattr(attr, n))
            and issubclass(getattr(attr, n), attr.Attribution)
            and not n.startswith(layered)
        ]
        raise ValueError(
            f"method 'captum:{name}' is not a captum input attribution; valid: "
            + ", ".join(sorted(choices))
        )
    baselines = "baselines" in inspect.signature(cls.attribute).parameters

    def attribution(model, x: torch.Tensor, targets) -> torch.Tensor:
        extra = {"baselines": torch.zeros_like(x)} if baselines else {}
        with torch.enable_grad():
            inputs = x.detach().clone().requires_grad_(True)
            return cls(model).attribute(inputs, target=targets, **extra)

    return attribution, f"captum.attr.{name}: {(inspect.getdoc(cls) or '').split(chr(10))[0]}"
