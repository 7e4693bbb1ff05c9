"""reportgen: explain a CNN's decisions over a data set and publish the results as a site."""

from __future__ import annotations

from collections.abc import Sequence

__version__ = "0.1.0"

__all__ = ["explain", "__version__"]


def explain(
    model,
    images,
    method: str,
    *,
    layer: str | None = None,
    target: int | Sequence[int] | None = None,
    classifier: str | None = None,
):
    """One technique on a batch: a float tensor ``[N, H, W]`` at the input's resolution.

    ``images`` is the model's (normalised) input ``[N, 3, H, W]``. ``target`` is one
    class for all items, one per item, or ``None`` for each item's top-1 class.
    ``layer`` names a module for CAM methods (``None``: the last spatial layer).
    Maps are bilinearly up-sampled and keep their raw values (no min-max scaling),
    so they stay comparable across images.
    """
    import torch

    from . import techniques
    from .capture import preserved_state, record_outputs
    from .models import default_cam_layer, last_linear
    from .techniques.cam import upsample

    technique = techniques.get(method)
    if not technique.scored:
        raise ValueError(f"'{method}' is a {technique.family} view, not an attribution map")
    if target is None:
        with preserved_state(model), torch.no_grad():
            target = model(images).argmax(1)
    kwargs = {}
    if technique.needs_layer:
        if layer is None:
            layer = default_cam_layer(*record_outputs(model, images[:1]))
        kwargs = {"layer": layer, "classifier": classifier or last_linear(model)}
    maps = technique.run(model, images, target, **kwargs)
    return upsample(maps, images.shape[-2:]) if maps.shape[-2:] != images.shape[-2:] else maps
