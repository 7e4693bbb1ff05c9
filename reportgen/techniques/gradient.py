"""Pixel attributions from gradients with respect to the input.

Every technique here is one helper, ``input_gradient``, called on the right inputs:
the image itself (saliency), noisy copies (SmoothGrad), points on a path from a
baseline (integrated gradients), or with a backward rule on the activations
(guided backpropagation, deconvnet). Maps are reduced over colour channels so the
site can overlay them, and keep their raw values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from ..capture import backward_rule, grad_ready_input, preserved_state, record_outputs
from .cam import cam_maps, targets_tensor, upsample
from .registry import Technique, register
from .shared import once

Targets = int | Sequence[int] | torch.Tensor


def input_gradient(
    model: nn.Module, x: torch.Tensor, targets: Targets, rule: str | None = None
) -> torch.Tensor:
    """d score[target_i] / d x_i for every item of the batch, in one backward pass.

    Items are independent in eval mode, so the gradient of the summed target
    scores is each item's own gradient. ``rule`` (``"guided"`` or ``"deconvnet"``)
    replaces the activations' backward pass (see ``capture.backward_rule``).
    """
    with preserved_state(model), torch.enable_grad():
        with backward_rule(model, rule) if rule else nullcontext():
            inp = grad_ready_input(x)
            scores = model(inp)
            t = targets_tensor(targets, x.shape[0], scores.device)
            (grad,) = torch.autograd.grad(scores.gather(1, t[:, None]).sum(), inp)
    return grad


def _gradient_at_input(
    model: nn.Module, x: torch.Tensor, targets: Targets, rule: str | None = None
) -> torch.Tensor:
    """``input_gradient`` of the image itself, made once per ``compute`` call and rule
    (``shared.once``): saliency and input x gradient take the same one, guided
    backpropagation and guided Grad-CAM the same guided one."""
    return once(
        "input gradient", model, x, targets, rule, lambda: input_gradient(model, x, targets, rule)
    )


def max_abs_over_channels(grad: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W] -> [N, H, W]``: the largest magnitude over colour channels (Simonyan)."""
    return grad.abs().amax(dim=1)


def saliency(model: nn.Module, x: torch.Tensor, targets: Targets, **_) -> torch.Tensor:
    """Simonyan et al. 2013: ``max_c |d S_target / d x_c|`` per pixel, ``[N, H, W]``."""
    return max_abs_over_channels(_gradient_at_input(model, x, targets))


def input_x_gradient(model: nn.Module, x: torch.Tensor, targets: Targets, **_) -> torch.Tensor:
    """Shrikumar et al. 2016: ``Σ_c x_c ∂S/∂x_c`` per pixel, signed, in the model's input
    space (integrated gradients' integrand at the input, from a zero baseline)."""
    return (x * _gradient_at_input(model, x, targets)).sum(dim=1)


def guided_backprop(model: nn.Module, x: torch.Tensor, targets: Targets, **_) -> torch.Tensor:
    """Springenberg et al. 2014: the guided gradient, reduced like saliency."""
    return max_abs_over_channels(_gradient_at_input(model, x, targets, "guided"))


def deconvnet(model: nn.Module, x: torch.Tensor, targets: Targets, **_) -> torch.Tensor:
    """Zeiler & Fergus 2014: the target score projected back with rectified signals."""
    return max_abs_over_channels(_gradient_at_input(model, x, targets, "deconvnet"))


def guided_gradcam(
    model: nn.Module,
    x: torch.Tensor,
    targets: Targets,
    layer: str | None = None,
    classifier: str | None = None,
    reshape: str | None = None,
    **_,
) -> torch.Tensor:
    """Selvaraju et al. 2017: guided backprop times the bilinearly up-sampled Grad-CAM map.

    Grad-CAM is ``>= 0``, so ``max_c |G_c · L| = L · max_c |G_c|``: the map is the
    guided-backprop map weighted by Grad-CAM. ``layer=None`` is the model's last
    spatial layer (the CAM default); ``classifier`` is accepted and not needed.
    """
    from ..models import default_cam_layer  # models imports capture, not techniques

    if layer is None:
        layer = default_cam_layer(*record_outputs(model, x[:1]))
    cam = cam_maps(model, x, targets, [layer], ["gradcam"], reshape=reshape)[("gradcam", layer)]
    return guided_backprop(model, x, targets) * upsample(cam, x.shape[-2:])


def _copies_gradients(
    model: nn.Module,
    x: torch.Tensor,
    targets: Targets,
    copies: int,
    make: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Input gradients of ``copies`` altered versions of every item, ``batch_size`` rows a pass.

    Rows run copy-major over (copy k, item i); ``make(k, i)`` builds them. Yields
    ``(k, i, gradients)`` per chunk, so callers accumulate without holding all rows.
    """
    t = targets_tensor(targets, x.shape[0], x.device)
    n, step = x.shape[0], max(1, batch_size)
    total = copies * n
    for start in range(0, total, step):
        rows = torch.arange(start, min(start + step, total), device=x.device)
        k, i = rows // n, rows % n
        yield k, i, input_gradient(model, make(k, i), t[i])


def value_range(x: torch.Tensor) -> torch.Tensor:
    """``max x − min x`` per item: the scale input noise is given in (SmoothGrad's σ)."""
    flat = x.flatten(1)
    return flat.amax(1) - flat.amin(1)


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    targets: Targets,
    samples: int = 50,
    noise: float = 0.15,
    seed: int = 0,
    batch_size: int = 16,
    **_,
) -> torch.Tensor:
    """Smilkov et al. 2017: the saliency map averaged over noisy copies of the image.

    ``x_k = x + σ ε_k`` with ``σ = noise · (max x − min x)`` per image. The draws
    ``ε_k`` come from a generator seeded with ``seed``, one ``[C, H, W]`` draw per
    sample, and are shared by the items of a batch: an image's map is the same
    whatever batch it is in and whatever ``batch_size`` is.
    """
    gen = torch.Generator().manual_seed(seed)
    eps = torch.stack([torch.randn(x.shape[1:], generator=gen) for _ in range(samples)])
    eps = eps.to(device=x.device, dtype=x.dtype)
    sigma = noise * value_range(x)

    def noisy(k: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return x[i] + sigma[i, None, None, None] * eps[k]

    total = torch.zeros(x.shape[0], *x.shape[2:], device=x.device, dtype=x.dtype)
    for _k, i, grad in _copies_gradients(model, x, targets, samples, noisy, batch_size):
        total.index_add_(0, i, max_abs_over_channels(grad))
    return total / samples


def _baseline_like(x: torch.Tensor, baseline: float | torch.Tensor | None) -> torch.Tensor:
    """The IG baseline as a tensor of ``x``'s shape (``None``: zeros of the model's input)."""
    value = 0.0 if baseline is None else baseline
    return torch.as_tensor(value, device=x.device, dtype=x.dtype).expand_as(x)


def black_image(
    x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> torch.Tensor:
    """The black image in the model's normalised input space, ``(0 − mean) / std``, as
    ``x``'s shape (zero, the mean colour, without ``mean``/``std``): the reference of
    integrated gradients and DeepLIFT."""
    if mean is None or std is None:
        return torch.zeros_like(x)
    black = -torch.as_tensor(mean, dtype=x.dtype) / torch.as_tensor(std, dtype=x.dtype)
    return black.to(x.device).view(1, -1, 1, 1).expand_as(x)


def ig_attributions(
    model: nn.Module,
    x: torch.Tensor,
    targets: Targets,
    steps: int = 50,
    baseline: float | torch.Tensor | None = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """Sundararajan et al. 2017, per input element ``[N, C, H, W]``:

    ``(x − x′) ∫₀¹ ∂S(x′ + α (x − x′))/∂x dα`` with ``steps``-point Gauss-Legendre
    quadrature on [0, 1] (captum's default method), ``batch_size`` rows a pass.
    """
    base = _baseline_like(x, baseline)
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = torch.as_tensor(0.5 * (nodes + 1), device=x.device, dtype=x.dtype)
    step_weights = torch.as_tensor(0.5 * weights, device=x.device, dtype=x.dtype)

    def on_path(k: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        a = alphas[k, None, None, None]
        return base[i] + a * (x[i] - base[i])

    total = torch.zeros_like(x)
    for k, i, grad in _copies_gradients(model, x, targets, steps, on_path, batch_size):
        total.index_add_(0, i, step_weights[k, None, None, None] * grad)
    return (x - base) * total


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    targets: Targets,
    steps: int = 50,
    baseline: float | torch.Tensor | None = None,
    batch_size: int = 16,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **_,
) -> torch.Tensor:
    """The attributions summed over colour channels, signed: the map sums to S(x) − S(x′).

    With the model's ``mean``/``std`` (the pipeline passes them) the default baseline is
    the black image, ``(0 − mean) / std``; without them, zero in the model's input space.
    """
    if baseline is None:
        baseline = black_image(x, mean, std)
    return ig_attributions(model, x, targets, steps, baseline, batch_size).sum(dim=1)


def gradient_shap(
    model: nn.Module,
    x: torch.Tensor,
    targets: Targets,
    samples: int = 50,
    baselines: int = 8,
    noise: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    reference: torch.Tensor | None = None,
    **_,
) -> torch.Tensor:
    """Lundberg & Lee 2017, as captum's GradientShap: the mean over ``samples`` draws of
    ``(x + ε − b) ⊙ ∂S(b + α (x + ε − b))/∂x``, with the reference b drawn from a set of
    ``baselines`` images, α ~ U(0, 1) and ε ~ N(0, σ²), σ = ``noise`` · (max x − min x).

    The set: the black image and ``baselines − 1`` images of uniform noise in pixel space
    (normalised with ``mean``/``std``; without them zero and standard normal noise in
    the input space), or ``reference [B, C, H, W]``. Draws come from a generator seeded
    with ``seed`` and are shared by the items of a batch, as for SmoothGrad. The map sums
    colour channels with their sign."""
    gen = torch.Generator().manual_seed(seed)
    if reference is None:
        shape = (baselines - 1, *x.shape[1:])
        if mean is not None and std is not None:
            m = torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
            s = torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
            pixels = torch.cat([torch.zeros(1, *x.shape[1:]), torch.rand(shape, generator=gen)])
            reference = (pixels - m) / s
        else:
            reference = torch.cat([torch.zeros(1, *x.shape[1:]), torch.randn(shape, generator=gen)])
    reference = reference.to(device=x.device, dtype=x.dtype)
    draws = [  # one draw a sample, in order: samples=k takes the first k of a longer run's
        (torch.randint(len(reference), (1,), generator=gen), torch.rand(1, generator=gen))
        + (torch.randn(x.shape[1:], generator=gen),)
        for _ in range(samples)
    ]
    chosen = torch.cat([d[0] for d in draws]).to(x.device)
    alphas = torch.cat([d[1] for d in draws]).to(device=x.device, dtype=x.dtype)
    eps = torch.stack([d[2] for d in draws]).to(device=x.device, dtype=x.dtype)
    sigma = noise * value_range(x)

    def delta(k: torch.Tensor, i: torch.Tensor) -> torch.Tensor:  # x + ε − b, row by row
        return x[i] + sigma[i, None, None, None] * eps[k] - reference[chosen[k]]

    def on_path(k: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return reference[chosen[k]] + alphas[k, None, None, None] * delta(k, i)

    total = torch.zeros(x.shape[0], *x.shape[2:], device=x.device, dtype=x.dtype)
    for k, i, grad in _copies_gradients(model, x, targets, samples, on_path, batch_size):
        total.index_add_(0, i, (delta(k, i) * grad).sum(dim=1))
    return total / samples


_RULE_NOTES = (
    "The rule is applied in backward at every activation module, through hooks that "
    "leave the model unchanged (in-place and shared modules included). captum only "
    "overrides nn.ReLU; on ReLU6 models such as EfficientNet-Lite0 its result is the "
    "plain gradient. For other element-wise activations (ReLU6, LeakyReLU, ELU, SiLU, "
    "GELU, Mish, Hardswish, Softplus and timm's variants) the rule is {rule}. Gates "
    "(Sigmoid, Tanh, Hardsigmoid) keep their ordinary gradient. Activations called as "
    "functions (F.relu in forward) cannot be reached: a model without activation "
    "modules is refused with an error. Map: max over colour channels of the absolute "
    "value, as for saliency."
)

register(
    Technique(
        name="saliency",
        title="Saliency (vanilla gradient)",
        family="gradient",
        paper="Simonyan et al., Deep Inside Convolutional Networks: Visualising Image "
        "Classification Models and Saliency Maps, ICLR workshop 2014",
        url="https://arxiv.org/abs/1312.6034",
        summary="M(i,j) = max_c |∂S^c/∂I_c(i,j)|: how much a small change of each pixel moves "
        "the class score, taking the largest magnitude over colour channels.",
        cost="1 forward pass + 1 backward pass to the input",
        run=saliency,
        cheap=True,
    )
)
register(
    Technique(
        name="input_x_gradient",
        title="Input × gradient",
        family="gradient",
        paper="Shrikumar, Greenside, Shcherbina and Kundaje, Not Just a Black Box: Learning "
        "Important Features Through Propagating Activation Differences, 2016",
        url="https://arxiv.org/abs/1605.01713",
        summary="M(i,j) = Σ_c x_c(i,j) · ∂S^c/∂x_c(i,j): the gradient weighted by the input "
        "it multiplies, so a pixel counts by its first-order contribution to the score "
        "(for a linear model exactly its term). Signed.",
        cost="1 forward pass + 1 backward pass to the input",
        run=input_x_gradient,
        notes="x is the model's normalised input, as captum's InputXGradient takes it; the "
        "map sums channels with their sign (captum returns them per channel); the metrics "
        "rectify it, so only positive evidence counts there.",
        cheap=True,
    )
)
register(
    Technique(
        name="gradient_shap",
        title="GradientSHAP",
        family="gradient",
        paper="Lundberg and Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS "
        "2017 (expected gradients: Erion et al. 2021; as captum's GradientShap)",
        url="https://arxiv.org/abs/1705.07874",
        summary="φ = E_{b, α, ε}[(x + ε − b) ⊙ ∂S(b + α(x + ε − b))/∂x]: integrated gradients "
        "from a distribution of references b instead of one, estimated from 50 random draws "
        "of a reference (the black image or one of 7 uniform-noise images), a point α ~ "
        "U(0, 1) on the path, and input noise ε (σ = 0 by default). M(i,j) = Σ_c φ_c(i,j), "
        "signed; in expectation Σ_ij M = S(x) − E_b[S(b)].",
        cost="50 forward + 50 backward passes (batched)",
        run=gradient_shap,
        presets={"fast": {"samples": 16}},
        why="Fast preset: 16 samples, a third of the cost. On the 12 default photos their "
        "maps correlate with the 50-sample maps at mean r = 0.80 (min 0.74), but the 16 "
        "draws are the first 16 of the 50, so that agreement is partly shared draws. Two "
        "50-sample maps drawn with different seeds agree at only mean r = 0.48 (min 0.27): "
        "at either setting a map is mostly this estimator's noise, so no shortened setting "
        "can be told apart from the paper setting by agreement (evaluation/bench/presets/"
        "cpu-2core.json). Use --quality paper, or --set gradient_shap.samples=N, for "
        "steadier maps.",
        notes="The draws are seeded by the run's --seed and shared by the images of a batch, "
        "so an image's map does not depend on its batch. captum draws the reference, α and "
        "ε per image from the global generator; the estimates agree in expectation (tested "
        "against captum with many samples). The reference set is the model's: black and "
        "noise images normalised like every input.",
    )
)
register(
    Technique(
        name="guided_backprop",
        title="Guided backpropagation",
        family="gradient",
        paper="Springenberg, Dosovitskiy, Brox and Riedmiller, Striving for Simplicity: "
        "The All Convolutional Net, ICLR workshop 2015",
        url="https://arxiv.org/abs/1412.6806",
        summary="The gradient ∂S^c/∂I with every ReLU's backward pass replaced by "
        "R_in = ReLU(R_out) · 1[x > 0]: only positive signal flows back, and only through "
        "units that were active. M(i,j) = max_c |R_c(i,j)|.",
        cost="1 forward pass + 1 backward pass to the input",
        run=guided_backprop,
        notes=_RULE_NOTES.format(
            rule="f′(x) · ReLU(R_out): the activation's true local derivative times the "
            "positive part of the signal (for ReLU6 that is ReLU(R_out) · 1[0 < x < 6])"
        ),
        cheap=True,
    )
)
register(
    Technique(
        name="deconvnet",
        title="Deconvnet",
        family="gradient",
        paper="Zeiler and Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014",
        url="https://arxiv.org/abs/1311.2901",
        summary="The target class score projected back to pixels: transposed filters, "
        "max-pool switches, and at every ReLU R_in = ReLU(R_out), ignoring the forward "
        "input. M(i,j) = max_c |R_c(i,j)|.",
        cost="1 forward pass + 1 backward pass to the input",
        run=deconvnet,
        notes="Like captum's Deconvolution this projects the target class score, not the "
        "paper's single strongest activation of a layer. Autograd's backward pass through "
        "convolutions and max pooling is exactly the paper's transposed filters and "
        "switch unpooling; eval-mode batch norm is the affine map it is. Without max "
        "pooling (EfficientNet-Lite0) the result does not depend on the image. "
        + _RULE_NOTES.format(
            rule="ReLU(R_out) alone: the forward input is ignored, including ReLU6's "
            "upper bound (captum would mask x ≥ 6 if ReLU6 were written as ReLU then "
            "min(·, 6))"
        ),
        cheap=True,
    )
)
register(
    Technique(
        name="guided_gradcam",
        title="Guided Grad-CAM",
        family="gradient",
        paper="Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via "
        "Gradient-based Localization, ICCV 2017",
        url="https://arxiv.org/abs/1610.02391",
        summary="Guided backpropagation times the Grad-CAM map L^c = ReLU(Σ_k α_k^c A_k) "
        "up-sampled to the input: M(i,j) = L^c(i,j) · max_c |G_c(i,j)|, at the model's "
        "last spatial layer unless a layer is given.",
        cost="2 forward + 2 backward passes (Grad-CAM, guided backprop), and 1 forward "
        "pass to find the default layer when none is given",
        run=guided_gradcam,
        notes="Grad-CAM is up-sampled bilinearly (align_corners=False), as in the rest of "
        "the site; captum's GuidedGradCam defaults to nearest (interpolate_mode), the "
        "tests pin captum to bilinear. In a run the layer is the model's last spatial "
        "layer (the default CAM layer), not the --layers list. Guided backprop rules for "
        "non-ReLU activations as on the guided_backprop page.",
        cheap=True,
    )
)
register(
    Technique(
        name="smoothgrad",
        title="SmoothGrad",
        family="gradient",
        paper="Smilkov, Thorat, Kim, Viégas and Wattenberg, SmoothGrad: removing noise by "
        "adding noise, ICML workshop 2017",
        url="https://arxiv.org/abs/1706.03825",
        summary="M̂(i,j) = (1/n) Σ_k M(x + ε_k)(i,j) with ε_k ~ N(0, σ²), n = 50, "
        "σ = 15 % of (max x − min x) per image, and M the saliency map max_c |∂S^c/∂x_c|.",
        cost="50 forward + 50 backward passes (batched)",
        run=smoothgrad,
        presets={"fast": {"samples": 16}},
        why="Fast preset: 16 samples. On the 12 default photos their maps correlate with "
        "the 50-sample maps at mean r = 0.945 (min 0.90), as closely as two 50-sample maps "
        "drawn with different seeds do (mean r = 0.942): within SmoothGrad's own noise "
        "(evaluation/bench/presets/cpu-2core.json).",
        notes="The average is over saliency maps (absolute gradient, max over channels), "
        "the paper's 'absolute value' variant; captum's NoiseTunnel with Saliency "
        "averages |∂S/∂x| per channel before any reduction. The noise is seeded by the "
        "run's --seed (0 by default) and one draw per sample is shared by the images of a "
        "batch, so an image's map does not depend on the batch it ran in. σ is taken in "
        "the model's normalised "
        "input space.",
    )
)
register(
    Technique(
        name="integrated_gradients",
        title="Integrated gradients",
        family="gradient",
        paper="Sundararajan, Taly and Yan, Axiomatic Attribution for Deep Networks, ICML 2017",
        url="https://arxiv.org/abs/1703.01365",
        summary="IG_c(i,j) = (x − x′)_c(i,j) · ∫₀¹ ∂S^c(x′ + α(x − x′))/∂x_c(i,j) dα with "
        "50 Gauss-Legendre steps; M(i,j) = Σ_c IG_c(i,j), signed, so Σ_ij M = "
        "S^c(x) − S^c(x′) (completeness).",
        cost="50 forward + 50 backward passes (batched)",
        run=integrated_gradients,
        presets={"fast": {"steps": 16}},
        why="Fast preset: 16 steps. On the 12 default photos their maps correlate with the "
        "50-step maps at mean r = 0.986 (min 0.977); 8 steps gave 0.955 (min 0.92) "
        "(evaluation/bench/presets/cpu-2core.json).",
        notes="The baseline x′ is the black image, (0 − mean)/std in the model's normalised "
        "input space (reports pass the model's mean and std); called without them, it is "
        "zero in the input space (the mean colour). baseline= sets any other. Same as captum's "
        "IntegratedGradients with its default baselines and method='gausslegendre'. The "
        "map sums channels with their sign (captum returns them per channel); the "
        "metrics rectify it, so only positive evidence counts there.",
    )
)
