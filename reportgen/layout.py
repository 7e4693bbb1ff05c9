"""A layer's output read as a feature map ``[N, C, h, w]``, whatever its layout.

Convolutional layers give ``[N, C, h, w]`` already. Vision transformers give tokens
``[N, T, C]`` (a class token, maybe a distillation or register tokens, then the patch
grid row by row); Swin's and ConvNeXt's blocks give channels-last ``[N, h, w, C]``. The CAM
family needs the first form, so each layout is turned into it by a view (slicing,
reshaping and permuting only): activations and their gradients go through the same one,
and a change written into the view reaches the layer's own output.

The layout is inferred from the shape and the input's size: the grid must be what a
stride gives the input. ``--reshape`` overrides it for unusual layouts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .hints import imported, not_a_feature_map

MAX_PREFIX = 8  # leading non-patch tokens tried: class, distillation, up to 6 registers
LAYOUTS = ("nchw", "nhwc", "tokens")


@dataclass(frozen=True)
class Layout:
    """How a layer's output maps to ``[N, C, h, w]``: ``kind`` in ``LAYOUTS``; for tokens,
    ``prefix`` leading tokens dropped and the patch ``grid`` (h, w); or ``custom``, a
    user's function (``--reshape package.module:function``)."""

    kind: str
    prefix: int = 0
    grid: tuple[int, int] = (0, 0)
    custom: Callable[[torch.Tensor], torch.Tensor] | None = None

    def to_map(self, t: torch.Tensor) -> torch.Tensor:
        if self.custom is not None:
            try:
                out = self.custom(t)
            except Exception as err:  # a user's function: that method's problem, not the run's
                raise ValueError(f"--reshape {self.describe()}: {err}") from err
            if not isinstance(out, torch.Tensor) or out.dim() != 4:
                raise ValueError(
                    f"--reshape {self.describe()}: gave {getattr(out, 'shape', type(out))} "
                    f"for an output of {tuple(t.shape)}; it must return [N, C, h, w]"
                )
            return out
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        if self.kind == "tokens":
            n, _, c = t.shape
            return t[:, self.prefix :].reshape(n, *self.grid, c).permute(0, 3, 1, 2)
        return t

    def positions(self, shape: tuple[int, ...]) -> int | None:
        """How many places a map of an output of ``shape`` has (None: a user's function's
        layout, known once it runs)."""
        if self.custom is not None:
            return None
        if self.kind == "tokens":
            return self.grid[0] * self.grid[1]
        return shape[1] * shape[2] if self.kind == "nhwc" else shape[2] * shape[3]

    def describe(self) -> str:
        if self.custom is not None:
            return f"reshaped by {getattr(self.custom, '__name__', 'a function')}"
        if self.kind == "tokens":
            return f"tokens: {self.prefix} leading dropped, grid {self.grid[0]}x{self.grid[1]}"
        return self.kind


def fits(h: int, w: int, size: tuple[int, int]) -> bool:
    """Whether an ``h x w`` grid is what one stride gives an input of ``size`` (H, W):
    ``h`` within one of H / s and ``w`` within one of W / s, for some s (a convolution
    rounds up or down: 224 x 250 px give 7 x 8 at stride 32)."""
    height, width = size
    low = max(height / (h + 1), width / (w + 1))
    high = min(height / (h - 1) if h > 1 else math.inf, width / (w - 1) if w > 1 else math.inf)
    return low < high


def _grid(count: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """(h, w) with h * w = count that fits the input's ``size``, the nearest its aspect
    ratio if several do, or None."""
    ratio = size[0] / size[1]
    grids = [(h, count // h) for h in range(1, count + 1) if count % h == 0]
    grids = [g for g in grids if g[0] * g[1] > 1 and fits(*g, size)]
    return min(grids, key=lambda g: abs(math.log(g[0] / g[1] / ratio)), default=None)


def infer(
    shape: tuple[int, ...],
    size: tuple[int, int],
    prefix: int | None = None,
    batch: int | None = None,
) -> Layout | None:
    """The layout of an output of ``shape`` for inputs of ``size`` (H, W), or None when it
    is not a spatial map. ``prefix``: the model's count of leading tokens, when it says
    (timm's ``num_prefix_tokens``) or none; else the fewest that leave a grid that fits
    the input. A 4-D output is channels-first unless only channels-last fits. ``batch``:
    the input's batch size, which a map's first dimension must be (Swin's attention runs
    on windows, ``[N x windows, 49, C]``: not a map of the image)."""
    if batch is not None and shape and shape[0] != batch:
        return None
    if len(shape) == 4:
        _, a, b, c = shape
        if fits(b, c, size):
            return Layout("nchw")
        if fits(a, b, size):
            return Layout("nhwc")
        return None
    if len(shape) == 3:
        tokens = shape[1]
        # the model's own count, or none (its patch embedding, before the class token)
        tried = [prefix, 0] if prefix is not None else range(0, MAX_PREFIX + 1)
        for p in tried:
            grid = _grid(tokens - p, size) if tokens > p else None
            if grid:
                return Layout("tokens", p, grid)
    return None


def parse(option: str | None) -> Callable[[tuple[int, ...], tuple[int, int]], Layout] | None:
    """``--reshape``: None/"auto" (infer), "nchw", "nhwc", "tokens:P" (P leading tokens),
    or ``package.module:function`` (a tensor -> ``[N, C, h, w]`` function, as
    pytorch-grad-cam's ``reshape_transform``). Returns the layout-maker, or None for auto."""
    if option in (None, "", "auto"):
        return None
    if option in ("nchw", "nhwc"):
        return lambda shape, size: Layout(option) if len(shape) == 4 else None
    if option.startswith("tokens:"):
        count = option.partition(":")[2]
        if not count.isdigit():
            raise ValueError(f"--reshape '{option}': tokens:P needs a whole number P")

        def tokens(shape: tuple[int, ...], size: tuple[int, int]) -> Layout:
            grid = _grid(shape[1] - int(count), size) if len(shape) == 3 else None
            if grid is None:
                raise ValueError(
                    f"--reshape {option}: {shape[1] if len(shape) > 1 else '?'} tokens less "
                    f"{count} make no grid of the input's aspect ratio {size[0]}:{size[1]}"
                )
            return Layout("tokens", int(count), grid)

        return tokens
    if ":" in option:
        fn = imported(option, "--reshape")
        return lambda shape, size: Layout("custom", custom=fn)
    raise ValueError(
        f"--reshape '{option}' is unknown; valid: auto, nchw, nhwc, tokens:P, "
        "package.module:function"
    )


def prefix_tokens(model: torch.nn.Module) -> int | None:
    """The model's count of leading non-patch tokens, where it says (timm's vision
    transformers: ``num_prefix_tokens``)."""
    count = getattr(model, "num_prefix_tokens", None)
    return count if isinstance(count, int) else None


def layout_in(
    model: torch.nn.Module, x: torch.Tensor, name: str, out: torch.Tensor, reshape: str | None
) -> Layout:
    """The layout of layer ``name``'s output ``out`` when ``model`` ran on the batch ``x``
    (its size, batch and the model's prefix tokens), or the ValueError of ``layout_of``."""
    size = tuple(x.shape[-2:])
    return layout_of(name, tuple(out.shape), size, reshape, prefix_tokens(model), len(x))


def layout_of(
    name: str,
    shape: tuple[int, ...],
    size: tuple[int, int],
    reshape: str | None = None,
    prefix: int | None = None,
    batch: int | None = None,
) -> Layout:
    """The layout of layer ``name``'s output of ``shape`` for inputs of ``size``: the
    ``reshape`` option's, else the inferred one, or a ValueError saying why it is not a
    feature map and what to do."""
    maker = parse(reshape)
    layout = maker(shape, size) if maker else infer(shape, size, prefix, batch)
    if layout is None:
        raise ValueError(not_a_feature_map(name, shape))
    return layout
