"""Activation maximisation from a random start: channel visualisation (``filter_vis``) and
class models (``class_model``), both on lucid's Fourier image prior; registered in
``synthesis``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..capture import activations, frozen, preserved_state
from ..models import probabilities
from .synthesis_machinery import (
    REDIRECTED_STEPS,
    Synthesised,
    _channel_means,
    _FourierImage,
    _normalised_step,
    _optimise,
    _rand,
    _random_transform,
    _redirected_relus,
    _result,
    _rms,
    _setup,
)

CLASS_MODEL_REGULARISER = (
    "R(I) = l2 * mean((I - 0.5)^2) (Simonyan's L2 penalty, on display pixels in [0, 1]) "
    "plus the image prior of the parameterisation: Fourier coefficients scaled by "
    "1/frequency, decorrelated colour and a sigmoid, with random pad, jitter, scale and "
    "rotation at every step (lucid)"
)


# --- 1. Activation maximisation of channels ----------------------------------------------

# Chollet's recipe as his notebook runs it (40 steps at 150 px), in both presets: a
# comparison with lucid's, not a setting the presets trade for time
PIXEL_RECIPE = {"steps": 40, "size": 150}


def filter_vis(
    model: nn.Module,
    x: torch.Tensor | None = None,
    targets=None,
    *,
    units: Sequence[tuple[str, int]],
    mean: Sequence[float],
    std: Sequence[float],
    param: str = "fourier",
    size: int = 128,
    steps: int = 96,
    lr: float = 0.05,
    pixel_step: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    **_,
) -> Synthesised:
    """Erhan et al. 2009 activation maximisation: item ``k`` maximises the mean over
    positions of channel ``c`` of layer ``l``, ``units[k] = (l, c)``. The units of a layer
    form one batch (objective: the sum over items, each item's gradient is its own) whose
    passes stop at that layer: 72 units of 9 layers cost 2.3x less this way than as one
    batch through the deepest layer.

    * ``param="fourier"`` (lucid/lucent, the default): ``_FourierImage`` (1/f-scaled
      Fourier coefficients, decorrelated colour, sigmoid), ``_random_transform`` at every
      step, Adam ``lr``. ReLU/ReLU6 modules use lucid's redirected gradient while a unit
      is silent, so units that never fire on grey can start, for the first
      ``REDIRECTED_STEPS`` steps as lucid does (both recipes).
    * ``param="pixel"`` (Chollet): grey ``128 + U[0, 20)`` (0..255 units), plain ascent
      ``I += pixel_step/255 * g / rms(g)`` per item (step 1 on the 0..255 scale, as in the
      notebook whose model took 0..255 input), clamped to [0, 1], no transforms.
      ``extra["stretched"]``: Chollet's display (zero mean, std 0.1, plus 0.5, clipped),
      since the raw image is a faint pattern on grey.

    ``start``/``final``: the unit's mean activation on the first/last image (no transform).
    """
    if not units:
        raise ValueError("filter_vis needs units: a list of (layer, channel) pairs")
    if param not in ("fourier", "pixel"):
        raise ValueError(f"filter_vis param '{param}' is unknown; valid: fourier, pixel")
    space, g, device = _setup(model, x, mean, std, seed)

    def maximise(layer: str, channels: list[int]) -> tuple[torch.Tensor, ...]:
        """One layer's units in one batch: final images, start and final objective."""
        index = torch.tensor(channels, device=device)[:, None]

        def score(images: torch.Tensor) -> torch.Tensor:
            means = _channel_means(activations(model, space.to_model(images), [layer])[layer])
            if max(channels) >= means.shape[1]:
                raise ValueError(
                    f"layer '{layer}' has {means.shape[1]} channels, not {max(channels) + 1}"
                )
            return means.gather(1, index)[:, 0]

        if param == "fourier":
            image = _FourierImage(len(channels), size, size, g, device)
            params, render, step = image.params, image, None
            transform = _random_transform
        else:
            params = (128 + 20 * _rand(g, len(channels), 3, size, size, device=device)) / 255
            params.requires_grad_(True)
            render, step = (lambda: params), _normalised_step(params, pixel_step / 255, _rms)
            transform = lambda images, _g: images  # noqa: E731
        with torch.no_grad():
            start = score(render())

        def objective(i: int) -> torch.Tensor:
            redirect(i < REDIRECTED_STEPS)
            return score(transform(render(), g))

        _optimise(params, objective, steps, lr=lr, step=step, progress=progress, desc=layer)
        with torch.no_grad():
            images = render()
            return images.cpu(), start.cpu(), score(images).cpu()

    groups: dict[str, list[int]] = {}
    for i, (layer, _c) in enumerate(units):
        groups.setdefault(layer, []).append(i)
    images = torch.empty(len(units), 3, size, size)
    start, final = torch.empty(len(units)), torch.empty(len(units))
    with (
        preserved_state(model),
        frozen(model),
        torch.enable_grad(),
        _redirected_relus(model) as redirect,
    ):
        for layer, rows in groups.items():
            images[rows], start[rows], final[rows] = maximise(layer, [units[i][1] for i in rows])
    extra = {"stretched": _stretch(images)} if param == "pixel" else {}
    return _result(images, start, final, **extra)


def _stretch(images: torch.Tensor) -> torch.Tensor:
    """Chollet's ``deprocess_image``: each image to zero mean, std 0.1, plus 0.5, clipped."""
    centred = images - images.mean((1, 2, 3), keepdim=True)
    return (centred / (centred.std((1, 2, 3), keepdim=True) + 1e-5) * 0.1 + 0.5).clamp(0, 1)


# --- 2. Class models ---------------------------------------------------------------------


def class_model(
    model: nn.Module,
    x: torch.Tensor | None = None,
    targets=None,
    *,
    classes: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    size: int = 160,
    steps: int = 128,
    lr: float = 0.05,
    l2: float = 30.0,
    seed: int = 0,
    output: str = "softmax",
    progress: bool = False,
    **_,
) -> Synthesised:
    """Simonyan et al. 2013 class model: ``I* = argmax_I S_c(I) - R(I)`` with ``S_c`` the
    class logit (not the softmax, which also rises by lowering other classes) and ``R`` as
    in ``CLASS_MODEL_REGULARISER``; one image per class, in one batch. At 160 px the
    object fills more of the frame than at 224 px (the model sees a 172 px canvas).

    ``start``/``final``: the class logit of the first/last image (no transform);
    ``extra["probability"]``: the class's probability for the final image (``output``:
    the model's softmax, or its sigmoid for a multi-label model).
    """
    if classes is None or len(classes) == 0:
        raise ValueError("class_model needs classes: a list of class indices")
    space, g, device = _setup(model, x, mean, std, seed)
    cls = torch.as_tensor(list(classes), dtype=torch.long, device=device)[:, None]
    image = _FourierImage(len(cls), size, size, g, device)

    def logits(images: torch.Tensor) -> torch.Tensor:
        return model(space.to_model(images))

    def objective(_i: int) -> torch.Tensor:
        rendered = image()
        penalty = l2 * (rendered - 0.5).pow(2).mean((1, 2, 3))
        return logits(_random_transform(rendered, g)).gather(1, cls)[:, 0] - penalty

    with preserved_state(model), frozen(model), torch.enable_grad():
        with torch.no_grad():
            start = logits(image()).gather(1, cls)[:, 0]
        _optimise(image.params, objective, steps, lr=lr, progress=progress, desc="class_model")
        with torch.no_grad():
            images = image()
            out = logits(images)
    probability = probabilities(out, output).gather(1, cls)[:, 0]
    return _result(images, start, out.gather(1, cls)[:, 0], probability=probability)
