"""The wording of the errors that several modules raise alike: a name that is close to a
valid one, a layer whose output is not a feature map."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable


def did_you_mean(name: str, valid: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """`` Did you mean a, b?`` for the valid names closest to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, [v for v in valid if v], n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(close)}?" if close else ""


def not_a_feature_map(layer: str, shape: object) -> str:
    """Why a layer cannot carry a CAM, and what to do."""
    return (
        f"layer '{layer}' has output {shape}; CAM methods need a spatial map: [N, C, H, W], "
        "channels-last [N, H, W, C] or tokens [N, T, C] whose grid has the input's aspect "
        "ratio. Pick a layer `reportgen list layers` marks usable, or say the layout with "
        "--reshape (nchw, nhwc, tokens:P, package.module:function)"
    )


def imported(reference: str, option: str, error: type[ValueError] = ValueError) -> object:
    """The object ``package.module:name`` names, or ``error`` saying why it cannot be had."""
    module_name, _, attr = reference.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise error(
            f"{option} '{reference}': cannot import '{attr}' from '{module_name}' ({err}); "
            "give an importable package.module:callable"
        ) from err
