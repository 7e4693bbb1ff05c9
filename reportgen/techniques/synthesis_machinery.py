"""The machinery every synthesis technique shares: the result record, the redirected ReLU,
display/model spaces, lucid's Fourier image and random transforms, and the optimisation loop
(split from ``synthesis`` so the techniques' modules hold only what each computes)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from ..capture import refuse_inference_mode, swapped_modules

# Lucid's ImageNet colour correlation: the square root (U·sqrt(S), from an SVD) of the
# covariance of RGB pixels. Its columns are the decorrelated colour axes; divided by its
# largest column norm, it maps the optimised "decorrelated" image back to RGB.
COLOR_CORRELATION_SVD_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


@dataclass
class Synthesised:
    """The optimised display images and the objective before and after."""

    images: torch.Tensor  # [K, 3, H, W] in [0, 1]
    start: torch.Tensor  # [K] objective of the initial image
    final: torch.Tensor  # [K] objective of the final image (no random transform)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


# --- Shared machinery --------------------------------------------------------------------


class _RedirectedReLU(torch.autograd.Function):
    """Forward: the rectifier ``clamp(x, 0, upper)`` (in place when the module it stands in
    for was). Backward: its ordinary gradient, except for an item whose gradient through
    this activation is zero everywhere (a unit that never fires on the start image): that
    item gets the incoming gradient wherever it points into the active range
    ``(0, upper)`` (lucid's redirected ReLU), so the optimisation can start. Gradients here
    are of the objective being maximised. Only the output is kept: ``0 < y < upper`` exactly
    where ``0 < x < upper``, and ``y`` sits at a bound exactly where ``x`` is past it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float, inplace: bool) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(x)
            y = x.clamp_(0, upper)
        else:
            y = x.clamp(0, upper)
        ctx.save_for_backward(y)
        ctx.upper = upper
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (y,) = ctx.saved_tensors
        upper = ctx.upper
        # one fused kernel each (the gradient of ReLU6 and of ReLU), not four element-wise ops
        if math.isfinite(upper):
            ordinary = torch.ops.aten.hardtanh_backward(grad, y, 0.0, upper)
        else:
            ordinary = torch.ops.aten.threshold_backward(grad, y, 0.0)
        # max and min over each item: 10x faster than any() on a float tensor, and no
        # flatten (which copies a channels-last tensor)
        dims = tuple(range(1, ordinary.dim()))
        dead = (ordinary.amax(dims) == 0) & (ordinary.amin(dims) == 0)
        # A dead item's gradient is zero wherever 0 < y < upper, so the redirection keeps
        # it where it points inward: g > 0 at y = 0, g < 0 at y = upper. One item at a
        # time: basic indexing keeps the layout (index lists copied it: 2.5x slower).
        for i in dead.nonzero()[:, 0].tolist():
            g = grad[i]
            inward = g.clamp(min=0)
            if math.isfinite(upper):
                inward = torch.where(y[i] >= upper, g.clamp(max=0), inward)
            ordinary[i] = inward
        return ordinary, None, None


REDIRECTED_STEPS = 17  # lucid redirects while its global step is at most 16, then stops


class _Redirected(nn.Module):
    """Stands in for an ``nn.ReLU``/``nn.ReLU6`` while ``_redirected_relus`` holds; the
    original itself runs once ``active`` is off."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.__dict__["original"] = original  # not a submodule: layer names stay as they were
        self.active = True
        self.upper = 6.0 if isinstance(original, nn.ReLU6) else math.inf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active and torch.is_grad_enabled() and x.requires_grad:
            return _RedirectedReLU.apply(x, self.upper, self.original.inplace)
        return self.original(x)


@contextlib.contextmanager
def _redirected_relus(model: nn.Module) -> Iterator[Callable[[bool], None]]:
    """Every ``nn.ReLU``/``nn.ReLU6`` of ``model`` swapped for a ``_Redirected`` one for the
    block; yields a switch: ``redirect(False)`` puts the ordinary gradient back (lucid
    redirects for its first ``REDIRECTED_STEPS`` steps only: once a unit has started, the
    ordinary gradient is the objective's own; the redirection cost as much as the
    rectifier itself). A swap, not forward hooks: hooks had to copy the input of an
    in-place rectifier and the output for the autograd function, which made each
    optimisation step 1.8x as slow as the plain pass."""
    made: list[_Redirected] = []

    def redirected(m: nn.Module) -> nn.Module:
        made.append(_Redirected(m))
        return made[-1]

    def redirect(on: bool) -> None:
        for module in made:
            module.active = on

    with swapped_modules(model, (nn.ReLU, nn.ReLU6), redirected):
        yield redirect


def _channel_means(acts: torch.Tensor) -> torch.Tensor:
    """``[N, C, ...] -> [N, C]``: each channel's mean over positions (a vector passes)."""
    return acts.flatten(2).mean(-1) if acts.dim() > 2 else acts


class _Space:
    """Display ``[0, 1]`` to the model's normalised input and back."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device):
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def to_model(self, d: torch.Tensor) -> torch.Tensor:
        return (d - self.mean) / self.std

    def to_display(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std + self.mean).clamp(0, 1)


def _device(model: nn.Module, x: torch.Tensor | None) -> torch.device:
    if x is not None:
        return x.device
    return next(model.parameters(), torch.empty(0)).device


def _rand(g: torch.Generator, *shape: int, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the CPU (same for a seed on every device)."""
    return torch.rand(*shape, generator=g).to(device)


def _optimise(
    params: torch.Tensor,
    objective: Callable[[int], torch.Tensor],
    steps: int,
    *,
    lr: float = 0.05,
    decay: bool = False,
    step: Callable[[torch.Tensor], bool | None] | None = None,
    progress: bool = False,
    desc: str = "",
) -> None:
    """Maximise ``objective(i).sum()`` (one value per item, items independent) over the
    leaf ``params``: Adam with ``lr`` (linearly decayed to 0 with ``decay``), or
    ``step(grad)`` updating ``params`` in place (under ``no_grad``; True stops early)."""
    adam = torch.optim.Adam([params], lr=lr, maximize=True) if step is None else None
    for i in trange(steps, disable=not progress, desc=desc, leave=False):
        (grad,) = torch.autograd.grad(objective(i).sum(), params)
        with torch.no_grad():
            if adam is not None:
                params.grad = grad
                if decay:  # linear to 0: late steps settle instead of jittering by ~lr
                    adam.param_groups[0]["lr"] = lr * (1 - i / steps)
                adam.step()
            elif step(grad):
                break


def _normalised_step(
    image: torch.Tensor, size: float, norm: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], None]:
    """Plain ascent ``image += size * grad / norm(grad)`` per item, then clamp to [0, 1]."""

    def step(grad: torch.Tensor) -> None:
        image.add_(size * grad / (norm(grad) + 1e-12)).clamp_(0, 1)

    return step


def _rms(grad: torch.Tensor) -> torch.Tensor:
    return grad.pow(2).mean((1, 2, 3), keepdim=True).sqrt()


def _mean_abs(grad: torch.Tensor) -> torch.Tensor:
    return grad.abs().mean((1, 2, 3), keepdim=True)


class _FourierImage:
    """Lucid's image parameterisation: rfft2 coefficients scaled by 1/frequency (so every
    frequency band has equal weight in the optimiser's steps), inverse FFT, divided by 4,
    decorrelated colour mapped to RGB, sigmoid to [0, 1]."""

    def __init__(self, k: int, h: int, w: int, g: torch.Generator, device: torch.device):
        freq = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None] ** 2)
        self.scale = (1.0 / freq.clamp_min(1.0 / max(h, w))).to(device)
        self.size = (h, w)
        color = torch.tensor(COLOR_CORRELATION_SVD_SQRT)
        self.color = (color / color.norm(dim=0).max()).to(device)
        self.params = (0.01 * torch.randn(k, 3, h, w // 2 + 1, 2, generator=g)).to(device)
        self.params.requires_grad_(True)

    def __call__(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.params) * self.scale
        image = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / 4
        return torch.sigmoid(torch.einsum("rc,kchw->krhw", self.color, image))


def _random_transform(
    image: torch.Tensor,
    g: torch.Generator,
    pad: int = 12,
    jitter: tuple[int, int] = (8, 4),
    scale: float = 0.1,
    degrees: float = 10.0,
) -> torch.Tensor:
    """Lucid's standard transforms (pad 12 px grey, jitter 8, scale 0.9..1.1, rotate ±10°,
    jitter 4) folded into one affine resampling per item, each item with its own draw
    (shift uniform in ±6 px, scale and angle uniform). The canvas is the padded image
    less both jitters (``H + 12`` px), as in lucid."""
    k, _, h, w = image.shape
    out_h, out_w = h + 2 * pad - sum(jitter), w + 2 * pad - sum(jitter)
    u = _rand(g, k, 4, device=image.device)
    s = 1 + scale * (2 * u[:, 0] - 1)
    angle = math.radians(degrees) * (2 * u[:, 1] - 1)
    shift = (u[:, 2:] - 0.5) * sum(jitter)  # px, [k, 2] (x, y)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # input coords (normalised) = D_in^-1 R^-1 (D_out u_out - shift) / s
    rot_inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    d_in = torch.tensor([2.0 / w, 2.0 / h], device=image.device)
    d_out = torch.tensor([out_w / 2.0, out_h / 2.0], device=image.device)
    a = d_in[:, None] * rot_inv * d_out[None, :] / s[:, None, None]
    b = -(d_in * (rot_inv @ shift[..., None]).squeeze(-1)) / s[:, None]
    grid = F.affine_grid(
        torch.cat([a, b[..., None]], -1), [k, 3, out_h, out_w], align_corners=False
    )
    grey = 0.5  # the padding colour
    return F.grid_sample(image - grey, grid, align_corners=False) + grey


def _setup(
    model: nn.Module, x: torch.Tensor | None, mean: Sequence[float], std: Sequence[float], seed: int
) -> tuple[_Space, torch.Generator, torch.device]:
    """The display/model conversion, the seeded generator and the device of the run."""
    refuse_inference_mode()
    device = _device(model, x)
    return _Space(mean, std, device), torch.Generator().manual_seed(seed), device


def _result(images: torch.Tensor, start, final, **extra) -> Synthesised:
    def cpu(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().cpu()
        return t.float() if t.is_floating_point() else t

    return Synthesised(
        cpu(images).clamp(0, 1), cpu(start), cpu(final), {k: cpu(v) for k, v in extra.items()}
    )
