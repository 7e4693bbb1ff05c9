"""reportgen: explain a CNN's decisions over a data set and publish the results as a site."""

from __future__ import annotations

from collections.abc import Sequence

__version__ = "0.1.0"

__all__ = ["explain", "__version__"]


def explain(
    model,
    images,
    method: str | Sequence[str],
    *,
    layer: str | None = None,
    target: int | Sequence[int] | None = None,
    classifier: str | None = None,
    reshape: str | None = None,
):
    """One technique on a batch: a float tensor ``[N, H, W]`` at the input's resolution;
    a list of techniques: ``{name: maps}``, the gradient CAMs among them computed from
    one shared forward/backward capture.

    ``images`` is the model's (normalised) input ``[N, 3, H, W]``. ``target`` is one
    class for all items, one per item, or ``None`` for each item's top-1 class.
    ``layer`` names a module for CAM methods (``None``: the last spatial layer; a vision
    transformer's last block's first norm); its tokens or channels-last output is read as
    a map by its inferred layout, or by ``reshape`` (see ``reportgen.layout.parse``).
    Maps are bilinearly up-sampled and keep their raw values (no min-max scaling),
    so they stay comparable across images.
    """
    import torch

    from . import techniques
    from .capture import preserved_state, record_outputs
    from .compute import at_input, compute
    from .models import default_cam_layer, last_linear
    from .store import PIXEL_LAYER

    names = [method] if isinstance(method, str) else list(method)
    chosen = [techniques.get(name) for name in names]
    for technique in chosen:
        if not technique.scored:
            raise ValueError(
                f"'{technique.name}' is a {technique.family} view, not an attribution map"
            )
    if target is None:
        with preserved_state(model), torch.no_grad():
            target = model(images).argmax(1)
    if any(t.needs_layer for t in chosen):
        if layer is None:
            layer = default_cam_layer(*record_outputs(model, images[:1]))
        classifier = classifier or last_linear(model)
    units = [(t, layer if t.needs_layer else PIXEL_LAYER) for t in chosen]
    found = compute(model, images, target, units, classifier, reshape=reshape, strict=True)
    maps = {c.method: at_input(c.maps, images.shape[-2:]) for c in found}
    return maps[method] if isinstance(method, str) else {name: maps[name] for name in names}
