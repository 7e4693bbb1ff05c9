"""One registry of techniques, read by the CLI, the pipeline, the site and the tests.

A technique knows nothing of the pipeline or the site: it takes a model, a
batch, per-item targets and (for layer methods) a layer name, and returns maps
or arrays. Families:

* ``gradient``: pixel attribution from input gradients, ``[N, H, W]`` at input size;
* ``perturbation``: pixel attribution from forward passes on altered inputs, ``[N, H, W]``;
* ``cam``: class activation maps at a layer's resolution ``[N, h, w]``;
* ``view``: model views that are not scored (feature maps, filters).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

REGISTRY: dict[str, Technique] = {}


@dataclass(frozen=True)
class Technique:
    """A registry entry: what the technique is, what it needs and what it costs."""

    name: str
    title: str
    family: str  # gradient | perturbation | cam | view
    paper: str
    url: str
    summary: str  # one paragraph: what it computes, with the formula
    cost: str  # passes per image
    run: Callable
    needs_gradient: bool = True
    notes: str = ""  # how we differ from a reference library, if we do

    def describe(self) -> dict[str, str | bool]:
        """The entry's text for the site (stored with the run, so rendering needs no torch)."""
        return {
            "name": self.name,
            "title": self.title,
            "family": self.family,
            "paper": self.paper,
            "url": self.url,
            "summary": self.summary,
            "cost": self.cost,
            "notes": self.notes,
            "scored": self.scored,
        }

    @property
    def scored(self) -> bool:
        """Saliency-producing techniques are scored by the metrics; views are not."""
        return self.family in ("gradient", "perturbation", "cam")

    @property
    def needs_layer(self) -> bool:
        return self.family == "cam"


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
    close = difflib.get_close_matches(name, list(REGISTRY), n=3)
    raise UnknownMethod(
        f"method '{name}' is unknown. "
        + (f"Did you mean {', '.join(close)}? " if close else "")
        + f"Valid: {', '.join(REGISTRY)}"
    )


def select(spec: str) -> list[Technique]:
    """Parse ``--methods``: ``all`` or a comma-separated list of names."""
    if spec.strip() == "all":
        return list(REGISTRY.values())
    return [get(name.strip()) for name in spec.split(",") if name.strip()]


# Importing the family modules fills the registry (one file per family).
from . import cam, gradient, perturbation, views  # noqa: E402, F401
