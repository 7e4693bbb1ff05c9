"""The technique registry: the ``Technique`` record, ``register``, lookup and ``--set``
parsing. The family modules register into it; the package ``__init__`` imports them all
(a module of its own, so the families import the registry, not the package that imports
them)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from ..hints import did_you_mean

REGISTRY: dict[str, Technique] = {}
# What ``get`` asks about a name no module registered: a technique made for it, or None
# (``plugins``: ``package.module:function`` and ``captum:NAME``)
RESOLVERS: list[Callable[[str], Technique | None]] = []
QUALITIES = ("fast", "paper")  # --quality presets: the default run, and the published settings
# A preset may also say at how many of the run's CAM layers (the first ones) a technique runs
LAYERS = "layers"


@dataclass(frozen=True)
class Technique:
    """A registry entry: what the technique is, what it needs and what it costs."""

    name: str
    title: str
    family: str  # gradient | perturbation | cam | baseline | view | plugin
    paper: str
    url: str
    summary: str  # one paragraph: what it computes, with the formula
    cost: str  # passes per image
    run: Callable
    needs_gradient: bool = True
    # Forward-only (no gradient, no hook needing the original modules): its passes run on
    # the copy of the model with batch norms folded (models.folded_copy), and in bfloat16
    # under the fast preset on a device that computes it natively; its maps were measured
    # against float32's (evaluation/presets.py)
    bf16: bool = False
    notes: str = ""  # how we differ from a reference library, if we do
    # Why the method is ill-posed at a layer whose activations are signed (its formula or a
    # peer's convention assumes they are not); empty: well-posed at any layer
    signed: str = ""
    # Runs at the run's CAM layers, given each one's name (a plug-in with a ``layer``
    # parameter; the CAM family always does)
    at_layer: bool = False
    # A pass or two per image (no sampling, no per-channel passes): the robustness metric
    # may re-explain it under noise many times
    cheap: bool = False
    # --quality presets: settings that differ from ``run``'s defaults under each preset
    # (e.g. {"fast": {"masks": 1000}}); "layers": N keeps the first N CAM layers. The one
    # place a shortened setting is declared, with the measurement that chose it in ``why``.
    presets: dict[str, dict[str, object]] = field(default_factory=dict)
    why: str = ""  # how the fast settings were chosen (measured agreement with paper's)

    def defaults(self) -> dict[str, object]:
        """``run``'s own keyword defaults (what ``reportgen.explain`` uses), read from its
        signature so the site can never disagree with the code."""
        skip = {"layer", "classifier", "batch_size", "layers", "targets", "mean", "std"}
        skip |= {"x", "seed", "progress", "units", "classes", "output", "reshape"}  # the run's
        return {
            name: p.default if isinstance(p.default, (int, float, str, bool)) else repr(p.default)
            for name, p in inspect.signature(self.run).parameters.items()
            if p.default is not inspect.Parameter.empty
            and name not in skip
            and p.kind is not inspect.Parameter.VAR_KEYWORD
        }

    def preset(self, quality: str) -> dict[str, object]:
        """The settings ``quality`` changes (keyword arguments for ``run``)."""
        return {k: v for k, v in self.presets.get(quality, {}).items() if k != LAYERS}

    def settings(self, quality: str = "paper") -> dict[str, object]:
        """The settings a run at ``quality`` uses: the defaults with the preset applied."""
        return {**self.defaults(), **self.preset(quality)}

    def layer_count(self, quality: str) -> int | None:
        """How many of the run's CAM layers the preset keeps (None: all of them)."""
        return self.presets.get(quality, {}).get(LAYERS)  # type: ignore[return-value]

    def describe(self) -> dict[str, object]:
        """The entry's text for the site (stored with the run, so rendering needs no torch)."""
        return {
            "settings": self.defaults(),
            "presets": {q: self.presets.get(q, {}) for q in QUALITIES},
            "why": self.why,
            "name": self.name,
            "title": self.title,
            "family": self.family,
            "paper": self.paper,
            "url": self.url,
            "summary": self.summary,
            "cost": self.cost,
            "notes": self.notes,
            "signed": self.signed,
            "scored": self.scored,
            "bf16": self.bf16,
        }

    @property
    def scored(self) -> bool:
        """Saliency-producing techniques are scored by the metrics; views are not."""
        return self.family in ("gradient", "perturbation", "cam", "baseline", "plugin")

    @property
    def needs_layer(self) -> bool:
        return self.family == "cam" or self.at_layer


def register(technique: Technique) -> Technique:
    if technique.name in REGISTRY:
        raise ValueError(f"technique '{technique.name}' registered twice")
    REGISTRY[technique.name] = technique
    return technique


class UnknownMethod(ValueError):
    """A ``--methods`` value that names no technique."""


def get(name: str) -> Technique:
    if name in REGISTRY:
        return REGISTRY[name]
    for resolve in RESOLVERS:  # names registered on first use (plug-ins)
        try:
            found = resolve(name)
        except ValueError as err:
            raise UnknownMethod(str(err)) from err
        if found is not None:
            return found
    raise UnknownMethod(
        f"method '{name}' is unknown.{did_you_mean(name, REGISTRY)} Valid: {', '.join(REGISTRY)}"
    )


def parse_setting(text: str) -> tuple[str, str, object]:
    """``METHOD.KEY=VALUE`` from ``--set``, checked against the method's own settings and cast
    to the type of its default (a ``None`` default takes a number)."""
    target, sep, raw = text.partition("=")
    method, dot, key = target.partition(".")
    if not sep or not dot:
        raise ValueError(f"--set '{text}': write METHOD.KEY=VALUE, e.g. rise.masks=1000")
    settings = get(method).defaults()
    if key == "seed":
        raise ValueError(f"--set '{text}': the run's --seed seeds every method's draws")
    if key not in settings:
        valid = ", ".join(settings) or "none"
        raise ValueError(f"--set '{text}': {method} has no setting '{key}'. Valid: {valid}")
    default = settings[key]
    try:
        if isinstance(default, bool):
            value: object = raw.lower() in ("1", "true", "yes", "on")
        elif isinstance(default, (int, float)):
            value = type(default)(raw)
        elif isinstance(default, str) and default != "None":
            value = raw
        else:
            value = float(raw)
    except ValueError as err:
        raise ValueError(f"--set '{text}': '{raw}' is not a valid {key} ({err})") from err
    return method, key, value


def select(spec: str) -> list[Technique]:
    """Parse ``--methods``: ``all`` or a comma-separated list of names."""
    if spec.strip() == "all":
        return list(REGISTRY.values())
    return [get(name.strip()) for name in spec.split(",") if name.strip()]
