"""Synthesis: techniques that optimise an input image and show it.

All five share one loop, ``_optimise``: gradient ascent of a per-item objective with
respect to an image (or its Fourier coefficients), one item per unit, class or input
image, items batched. The model is put in eval mode with every parameter frozen for the
call (no parameter gradient is ever computed) and its flags are restored after.
Randomness comes from a local ``torch.Generator`` seeded by ``seed`` and drawn on the
CPU, so a seed gives the same images run after run.

Images live in DISPLAY space ``[0, 1]`` while they are optimised and are normalised with
the caller's ``mean``/``std`` right before the model; every function returns display
images ``[K, 3, H, W]`` in ``[0, 1]`` (detached, on the CPU) in a ``Synthesised``
record. Step sizes "in 0..255 units" are display steps of ``value / 255``.

A pass that needs a layer's activations stops right after that layer (``activations``),
so shallow layers cost a fraction of a full pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from ..capture import (
    activations,
    frozen,
    preserved_state,
    refuse_inference_mode,
    swapped_modules,
)
from .cam import targets_tensor
from .registry import Technique, register

# Lucid's ImageNet colour correlation: the square root (U·sqrt(S), from an SVD) of the
# covariance of RGB pixels. Its columns are the decorrelated colour axes; divided by its
# largest column norm, it maps the optimised "decorrelated" image back to RGB.
COLOR_CORRELATION_SVD_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))

# Settings of the references, for ``--quality paper``; the defaults fit a 2-core CPU run
# (EfficientNet-Lite0: 72 channels ~75 s, 12 classes ~32 s, 8 inversions <= 26 s).
PAPER_STEPS: dict[str, dict[str, object]] = {
    "filter_vis": {"steps": 512, "size": 128},  # lucid's render_vis: 512 steps at 128 px
    "class_model": {"steps": 512, "size": 224},  # lucid's budget at the model's input size
    "deepdream": {"octaves": 4, "steps": 10},  # the notebook's values are the defaults
    "inversion": {"steps": 400},  # run to convergence (the paper: SGD with momentum)
    "fooling": {"steps": 200},  # a cap: each image stops when it reaches its target
}

CLASS_MODEL_REGULARISER = (
    "R(I) = l2 * mean((I - 0.5)^2) (Simonyan's L2 penalty, on display pixels in [0, 1]) "
    "plus the image prior of the parameterisation: Fourier coefficients scaled by "
    "1/frequency, decorrelated colour and a sigmoid, with random pad, jitter, scale and "
    "rotation at every step (lucid)"
)

# Mahendran & Vedaldi's normalisation (pixels in 0..255 units around the mean colour):
# B is the typical pixel norm of a natural image, V = B / 6.5 its typical local variation.
INVERSION_B = 80.0
INVERSION_V = INVERSION_B / 6.5


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
        if dead.any():  # rare after the first steps: only then pay for the redirection
            d = dead.nonzero()[:, 0]
            g, yd = grad[d], y[d]
            outward = ((yd <= 0) & (g < 0)) | ((yd >= upper) & (g > 0))
            ordinary[d] = g.masked_fill(outward, 0)
        return ordinary, None, None


class _Redirected(nn.Module):
    """Stands in for an ``nn.ReLU``/``nn.ReLU6`` while ``_redirected_relus`` holds."""

    def __init__(self, upper: float, inplace: bool):
        super().__init__()
        self.upper, self.inplace = upper, inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _RedirectedReLU.apply(x, self.upper, self.inplace)
        return x.clamp_(0, self.upper) if self.inplace else x.clamp(0, self.upper)


def _redirected_relus(model: nn.Module):
    """Every ``nn.ReLU``/``nn.ReLU6`` of ``model`` swapped for a ``_Redirected`` one for the
    block. A swap, not forward hooks: hooks had to copy the input of an in-place rectifier
    and the output for the autograd function, which made each optimisation step 1.8x as
    slow as the plain pass."""

    def redirected(m: nn.Module) -> nn.Module:
        return _Redirected(6.0 if isinstance(m, nn.ReLU6) else math.inf, m.inplace)

    return swapped_modules(model, (nn.ReLU, nn.ReLU6), redirected)


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


# --- 1. Activation maximisation of channels ----------------------------------------------


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
      is silent, so units that never fire on grey can start.
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
        objective = lambda _i: score(transform(render(), g))  # noqa: E731
        _optimise(params, objective, steps, lr=lr, step=step, progress=progress, desc=layer)
        with torch.no_grad():
            images = render()
            return images.cpu(), start.cpu(), score(images).cpu()

    groups: dict[str, list[int]] = {}
    for i, (layer, _c) in enumerate(units):
        groups.setdefault(layer, []).append(i)
    images = torch.empty(len(units), 3, size, size)
    start, final = torch.empty(len(units)), torch.empty(len(units))
    with preserved_state(model), frozen(model), torch.enable_grad(), _redirected_relus(model):
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
    progress: bool = False,
    **_,
) -> Synthesised:
    """Simonyan et al. 2013 class model: ``I* = argmax_I S_c(I) - R(I)`` with ``S_c`` the
    class logit (not the softmax, which also rises by lowering other classes) and ``R`` as
    in ``CLASS_MODEL_REGULARISER``; one image per class, in one batch. At 160 px the
    object fills more of the frame than at 224 px (the model sees a 172 px canvas).

    ``start``/``final``: the class logit of the first/last image (no transform);
    ``extra["probability"]``: the class's softmax probability for the final image.
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
    probability = out.softmax(1).gather(1, cls)[:, 0]
    return _result(images, start, out.gather(1, cls)[:, 0], probability=probability)


# --- 3. DeepDream ------------------------------------------------------------------------


def deepdream(
    model: nn.Module,
    x: torch.Tensor,
    targets=None,
    *,
    layer: str,
    mean: Sequence[float],
    std: Sequence[float],
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 10,
    step_size: float = 1.5,
    jitter: int = 32,
    seed: int = 0,
    progress: bool = False,
    **_,
) -> Synthesised:
    """Mordvintsev et al. 2015 (the google/deepdream notebook): gradient ascent from the
    input images ``x`` (normalised, ``[N, 3, H, W]``) on the L2 objective
    ``mean(phi(I)^2)`` of ``layer`` (the notebook's ``0.5 * sum`` up to a constant that
    the step normalisation removes). ``steps`` per octave, from the smallest octave
    (``size / octave_scale^(octaves-1)``) to full size, the detail added so far carried up
    by bilinear resizing; each step rolls the batch by up to ``jitter`` px and adds
    ``step_size/255 * g / mean|g|`` per item (0..255 units), clamped to [0, 1].

    ``start``/``final``: the objective of the input and of the dream at full size.
    """
    space, g, device = _setup(model, x, mean, std, seed)
    base = space.to_display(x.detach().float())
    h, w = base.shape[-2:]

    def score(images: torch.Tensor) -> torch.Tensor:
        acts = activations(model, space.to_model(images), [layer])[layer]
        return acts.pow(2).flatten(1).mean(1)

    with preserved_state(model), frozen(model), torch.enable_grad():
        with torch.no_grad():
            start = score(base)
        detail = torch.zeros_like(base)
        for octave in reversed(range(octaves)):
            size = (
                max(1, round(h / octave_scale**octave)),
                max(1, round(w / octave_scale**octave)),
            )
            octave_base = F.interpolate(base, size=size, mode="bilinear", align_corners=False)
            detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
            image = (octave_base + detail).clamp(0, 1).requires_grad_(True)

            def objective(_i: int, image: torch.Tensor = image) -> torch.Tensor:
                oy, ox = torch.randint(-jitter, jitter + 1, (2,), generator=g).tolist()
                return score(torch.roll(image, (oy, ox), dims=(2, 3)))

            step = _normalised_step(image, step_size / 255, _mean_abs)
            _optimise(
                image, objective, steps, step=step, progress=progress, desc=f"octave {octave}"
            )
            detail = image.detach() - octave_base
        with torch.no_grad():
            final = score(image)
    return _result(image, start, final)


# --- 4. Inversion ------------------------------------------------------------------------


def inversion(
    model: nn.Module,
    x: torch.Tensor,
    targets=None,
    *,
    layer: str,
    mean: Sequence[float],
    std: Sequence[float],
    steps: int = 100,
    lr: float = 0.05,
    alpha: float = 6.0,
    beta: float = 2.0,
    lambda_alpha: float = 0.001,
    lambda_tv: float = 0.1,
    seed: int = 0,
    progress: bool = False,
    **_,
) -> Synthesised:
    """Mahendran & Vedaldi 2015: from noise, find for each image ``I`` of ``x``

        I' = argmin ||phi(I') - phi(I)||^2 / ||phi(I)||^2 + lambda_alpha R_alpha(I')
                                                          + lambda_tv R_TV(I')

    with the paper's normalisation on pixels ``u = 255 (I' - mean)`` (0..255 units around
    the model's mean colour): ``R_alpha = sum_pixels ||u||^alpha / (H W B^alpha)``
    (``||u||`` the RGB norm of a pixel) and ``R_TV = sum_pixels (du_x^2 + du_y^2)^(beta/2)
    / (H W V^beta)``, ``B = 80``, ``V = B / 6.5``. The paper's balance is weight 1 on both;
    a photo scores R_alpha 5-200 and R_TV 3-14 on these units (the shipped photos at
    224 px), which at weight 1 outweighs the feature error (<= 1) and greys the image
    out, so the defaults are ``lambda_alpha = 0.001`` (the [0, 1] clamp already bounds
    pixels) and ``lambda_tv = 0.1``. Start: mean colour plus uniform noise of ±0.1;
    Adam ``lr`` decayed linearly to 0, pixels clamped to [0, 1].

    ``start``/``final``: the relative feature error of the noise and of the result.
    """
    space, g, device = _setup(model, x, mean, std, seed)
    with torch.no_grad(), preserved_state(model):
        goal = activations(model, x.detach().float(), [layer])[layer].flatten(1)
    goal_norm = goal.pow(2).sum(1).clamp_min(1e-12)
    k, _, h, w = x.shape

    def feature_error(images: torch.Tensor) -> torch.Tensor:
        phi = activations(model, space.to_model(images), [layer])[layer].flatten(1)
        return (phi - goal).pow(2).sum(1) / goal_norm

    def regulariser(images: torch.Tensor) -> torch.Tensor:
        u = 255 * (images - space.mean)
        r_alpha = u.pow(2).sum(1).clamp_min(1e-12).pow(alpha / 2).sum((1, 2)) / (
            h * w * INVERSION_B**alpha
        )
        dx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))  # zero beyond the last column
        dy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
        tv = (dx.pow(2) + dy.pow(2)).sum(1).clamp_min(1e-12).pow(beta / 2).sum((1, 2)) / (
            h * w * INVERSION_V**beta
        )
        return lambda_alpha * r_alpha + lambda_tv * tv

    def objective(_i: int) -> torch.Tensor:
        with torch.no_grad():
            image.clamp_(0, 1)  # Adam's last step may have left [0, 1]
        return -(feature_error(image) + regulariser(image))

    image = (space.mean + 0.1 * (2 * _rand(g, k, 3, h, w, device=device) - 1)).clamp(0, 1)
    image.requires_grad_(True)
    with preserved_state(model), frozen(model), torch.enable_grad():
        with torch.no_grad():
            start = feature_error(image)
        _optimise(image, objective, steps, lr=lr, decay=True, progress=progress, desc="inversion")
        with torch.no_grad():
            image.clamp_(0, 1)
            final = feature_error(image)
    return _result(image, start, final)


# --- 5. Fooling images -------------------------------------------------------------------


def fooling(
    model: nn.Module,
    x: torch.Tensor,
    targets,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    steps: int = 64,
    step_size: float = 1.0,
    epsilon: float | None = None,
    seed: int = 0,
    progress: bool = False,
    **_,
) -> Synthesised:
    """Szegedy et al. 2013's targeted adversarial example, computed as iterative FGSM
    (Kurakin et al. 2016): at most ``steps`` updates ``I += step_size/255 * sign(g)`` with
    ``g = d log p_target / dI`` (0..255 units; the sign is the steepest ascent for an
    L-inf step), clamped to [0, 1] and, with ``epsilon``, to ``|I - I0| <= epsilon/255``.
    Each image stops as soon as the model predicts its target (``targets[k]``) and never
    changes after; finished images leave the batch. Deterministic (``seed`` is unused).

    ``start``/``final``: the target's log-probability. ``extra``: ``steps`` (updates each
    image took), ``success`` (final prediction == target), ``p_before``/``p_after`` (the
    target's probability), ``linf``/``l2`` (perturbation norms in 0..255 display units,
    L2 over all 3 H W values) and ``perturbation`` (signed display difference).
    """
    space, _g, device = _setup(model, x, mean, std, seed)
    original = space.to_display(x.detach().float())
    k = original.shape[0]
    t = targets_tensor(targets, k, device)
    image = original.clone().requires_grad_(True)
    active = torch.ones(k, dtype=torch.bool, device=device)
    used = torch.zeros(k, dtype=torch.long, device=device)

    def log_prob(images: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(space.to_model(images)).log_softmax(1)
        return out.gather(1, t[rows, None])[:, 0], out.argmax(1)

    def objective(_i: int) -> torch.Tensor:
        rows = active.nonzero()[:, 0]
        value, predicted = log_prob(image[rows], rows)
        active[rows[predicted == t[rows]]] = False  # reached its target: done
        return torch.zeros(k, device=device).index_put((rows,), value)

    def step(grad: torch.Tensor) -> bool:
        image.add_(step_size / 255 * grad.sign() * active.view(-1, 1, 1, 1))
        if epsilon is not None:
            image.copy_(original + (image - original).clamp(-epsilon / 255, epsilon / 255))
        image.clamp_(0, 1)
        used.add_(active.long())
        return not active.any()

    everyone = torch.arange(k, device=device)
    with preserved_state(model), frozen(model), torch.enable_grad():
        with torch.no_grad():
            start, _ = log_prob(original, everyone)
        _optimise(image, objective, steps, step=step, progress=progress, desc="fooling")
        with torch.no_grad():
            final, predicted = log_prob(image, everyone)
    delta = (image - original).detach()
    return _result(
        image,
        start,
        final,
        steps=used,
        success=predicted == t,
        p_before=start.exp(),
        p_after=final.exp(),
        linf=255 * delta.abs().flatten(1).amax(1),
        l2=255 * delta.flatten(1).norm(dim=1),
        perturbation=delta,
    )


# --- Registry ----------------------------------------------------------------------------

register(
    Technique(
        name="filter_vis",
        title="Channel visualisation",
        family="synthesis",
        paper="Erhan et al. 2009; Olah, Mordvintsev & Schubert, Feature Visualization, "
        "Distill 2017 (lucid)",
        url="https://distill.pub/2017/feature-visualization/",
        summary="Activation maximisation, I* = argmax_I mean_xy a_lc(I): the image that "
        "most excites channel c of layer l, one per channel, the channels of a layer in one "
        "batch. Default (lucid): the image is parameterised by its Fourier coefficients "
        "scaled by 1/frequency, with decorrelated colour and a sigmoid; every step sees a "
        "randomly padded, jittered, scaled (0.9-1.1) and rotated (±10°) copy; Adam, lr "
        "0.05, 128 px; ReLUs pass a redirected gradient while a channel is silent. "
        "param=pixel is Chollet's recipe: grey plus noise, steps of 1/255 along the "
        "RMS-normalised gradient, no regulariser.",
        cost="steps forward+backward passes to each layer, for all its channels at once",
        run=filter_vis,
        presets={"fast": {"steps": 64}, "paper": PAPER_STEPS["filter_vis"]},
        why="Fast preset: 64 steps. With one channel of each of the 9 feature layers of "
        "EfficientNet-Lite0, 64 steps reach a median 81 % of the rise in the channel's mean "
        "that 512 steps reach (96 steps: 84 %, 48: 61 %; python -m evaluation.presets --only "
        "synthesis). Use --quality paper for images you publish.",
        notes="Lucid's transforms are folded into one affine resampling per image, each "
        "image with its own random draw.",
    )
)
register(
    Technique(
        name="class_model",
        title="Class model",
        family="synthesis",
        paper="Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks, 2013",
        url="https://arxiv.org/abs/1312.6034",
        summary="I* = argmax_I S_c(I) - R(I): the image that maximises the logit S_c of a "
        "class (not its softmax, which can rise by lowering the others), one per class, in "
        "one batch. Regulariser: " + CLASS_MODEL_REGULARISER + ". Shown with the final "
        "image's probability for the class.",
        cost="steps forward+backward passes of the whole model",
        run=class_model,
        presets={"paper": PAPER_STEPS["class_model"]},
        why="Not shortened by the fast preset: its defaults (128 steps at 160 px) are "
        "already below the paper setting (512 steps at 224 px), reaching a median 74 % of "
        "its rise in the class logit on two photos' classes (64 steps: 68 %; python -m "
        "evaluation.presets --only synthesis). Use --quality paper for the full images.",
        notes="Simonyan et al. used plain gradient ascent with an L2 penalty only; the "
        "Fourier parameterisation and transforms (lucid) give far more legible images.",
    )
)
register(
    Technique(
        name="deepdream",
        title="DeepDream",
        family="synthesis",
        paper="Mordvintsev, Olah & Tyka, Inceptionism: Going Deeper into Neural Networks, "
        "Google Research Blog 2015",
        url="https://github.com/google/deepdream",
        summary="Gradient ascent from the photo on the L2 objective mean(phi_l(I)^2) of a "
        "layer, amplifying what the layer already sees: 4 octaves (scale 1.4) from small to "
        "full size with the detail carried up, 10 steps per octave, each after a random "
        "roll of up to 32 px, of size 1.5/255 times g / mean|g|. Low layers give strokes, "
        "high layers give object parts.",
        cost="octaves x steps forward+backward passes to the layer (small octaves cheaper)",
        run=deepdream,
        presets={"paper": PAPER_STEPS["deepdream"]},
    )
)
register(
    Technique(
        name="inversion",
        title="Feature inversion",
        family="synthesis",
        paper="Mahendran & Vedaldi, Understanding Deep Image Representations by Inverting "
        "Them, CVPR 2015",
        url="https://arxiv.org/abs/1412.0035",
        summary="From noise, I* = argmin ||phi(I') - phi(I)||^2 / ||phi(I)||^2 + "
        "lambda_a R_alpha(I') + lambda_tv R_TV(I'): an image the layer cannot tell from "
        "the photo. R_alpha is the alpha-norm (alpha 6) over H W B^alpha, R_TV the total "
        "variation (beta 2) over H W V^beta, with B = 80 and V = B/6.5 on 0..255 pixels; "
        "lambda_a = 0.001, lambda_tv = 0.1; Adam, lr 0.05 decayed to 0. What survives is "
        "what the layer keeps: deeper layers keep shapes and lose colour and texture.",
        cost="steps forward+backward passes to the layer",
        run=inversion,
        presets={"fast": {"steps": 32}, "paper": PAPER_STEPS["inversion"]},
        why="Fast preset: 32 steps (the learning rate still decays to 0 over them). At the "
        "4 depths a run inverts, on two photos, 32 steps remove a median 88 % of the "
        "feature error that 400 steps remove (50: 93 %, 100: 98 %; the least converged "
        "item, the deepest layer, 25 %; python -m evaluation.presets --only synthesis).",
        notes="The paper weighs both regularisers 1 after this normalisation; on our "
        "photos that outweighs the feature error and greys the image, hence the smaller "
        "weights. Optimised with Adam instead of SGD with momentum.",
    )
)
register(
    Technique(
        name="fooling",
        title="Fooling images",
        family="synthesis",
        paper="Szegedy et al., Intriguing properties of neural networks, 2013",
        url="https://arxiv.org/abs/1312.6199",
        summary="A targeted adversarial example by iterative FGSM: I += 1/255 sign(d log "
        "p_target / dI), clamped to [0, 1], until the model predicts the target class (each "
        "image stops on its own) or 64 steps pass. Shown: the photo, the perturbation "
        "(magnified) and the result, with the L2 and L-inf norms in 0..255 units and the "
        "steps taken.",
        cost="at most steps forward+backward passes (finished images leave the batch)",
        run=fooling,
        presets={"paper": PAPER_STEPS["fooling"]},
        notes="Szegedy et al. used box-constrained L-BFGS; iterative FGSM (Kurakin et al. "
        "2016) finds the same kind of imperceptible perturbation with one gradient a step.",
    )
)
