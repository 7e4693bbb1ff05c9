"""The class-activation-map family: one capture, each variant only its formula.

``cam_maps`` runs one forward pass with the chosen layers captured and, when a
variant needs gradients, one ``autograd.grad`` from the targets' scores down to
those layers only (no parameter gradients). Each variant then turns the
captured activations ``A [N, K, h, w]`` and gradients ``dS/dA`` into a map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import (
    Capture,
    frozen,
    preserved_state,
    refuse_inference_mode,
    resolve_layer,
)
from ..layout import layout_in
from .registry import Technique, register
from .shared import keep, lookup


@dataclass
class Captured:
    """What the formulas see for one layer."""

    acts: torch.Tensor  # [N, K, h, w]
    grads: torch.Tensor | None  # dS_target / dA, same shape
    class_weights: torch.Tensor | None  # [N, K]: classifier row of each item's target


def weighted_sum(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """``Σ_k w_k A_k`` per item (not rectified): the sum every CAM variant ends with."""
    return torch.einsum("nk,nkhw->nhw", weights.to(acts.dtype), acts)


def upsample(maps: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of ``[N, h, w]`` maps to ``size``; half-pixel centres by default, the
    one up-sampling every map in reportgen goes through."""
    return F.interpolate(
        maps[:, None], size=tuple(size), mode="bilinear", align_corners=align_corners
    )[:, 0]


def cam_formula(c: Captured) -> torch.Tensor:
    """Zhou et al. 2016: ``M_c = sum_k w_k^c A_k`` (raw, not rectified)."""
    if c.class_weights is None:
        raise ValueError(
            "not defined here: CAM needs the layer that feeds global average "
            "pooling and the linear classifier"
        )
    return weighted_sum(c.class_weights, c.acts)


def gradcam_formula(c: Captured) -> torch.Tensor:
    """Selvaraju et al. 2017: ``relu(sum_k mean_ij(dS/dA_k) A_k)``."""
    return torch.relu(weighted_sum(c.grads.mean(dim=(2, 3)), c.acts))


def gradcampp_formula(c: Captured) -> torch.Tensor:
    """Chattopadhay et al. 2018, eq. 19 with Y = exp(S):

    ``alpha = g^2 / (2 g^2 + sum_ab A_ab g^3)``, ``w_k = sum_ij alpha relu(g)``,
    map ``relu(sum_k w_k A_k)``, where ``g = dS/dA``. The paper's
    ``relu(dY/dA) = exp(S) relu(g)``; the positive per-image factor ``exp(S)`` is
    dropped (as in every reference library) so raw values stay in a sane range.
    """
    g = c.grads
    g2 = g.pow(2)
    denom = 2 * g2 + c.acts.sum(dim=(2, 3), keepdim=True) * g2 * g
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1.0), 0.0)
    weights = (alpha * torch.relu(g)).sum(dim=(2, 3))
    return torch.relu(weighted_sum(weights, c.acts))


def xgradcam_formula(c: Captured) -> torch.Tensor:
    """Fu et al. 2020: ``w_k = Σ_ij A_k(i,j) / Σ_ab A_k(a,b) · ∂S/∂A_k(i,j)``.

    The map is ``ReLU(Σ_k w_k A_k)``.
    """
    total = c.acts.sum(dim=(2, 3), keepdim=True)
    share = torch.where(total != 0, c.acts / torch.where(total != 0, total, 1.0), 0.0)
    return torch.relu(weighted_sum((share * c.grads).sum(dim=(2, 3)), c.acts))


def layercam_formula(c: Captured) -> torch.Tensor:
    """Jiang et al. 2021: ``ReLU(Σ_k ReLU(∂S/∂A_k) ⊙ A_k)``, element-wise weights."""
    return torch.relu((torch.relu(c.grads) * c.acts).sum(dim=1))


def hirescam_formula(c: Captured) -> torch.Tensor:
    """Draelos & Carin 2020: ``ReLU(Σ_k ∂S/∂A_k ⊙ A_k)``, the gradient kept element-wise."""
    return torch.relu((c.grads * c.acts).sum(dim=1))


def eigencam_formula(c: Captured) -> torch.Tensor:
    """Muhammad & Yeasin 2020: the activations projected on their first principal component.

    The positions ``(i, j)`` are samples of ``K`` features, centred per channel; the
    map is each position's coordinate along the first right-singular vector. An SVD
    fixes that vector only up to sign, so we orient it to correlate positively with
    the channel-summed activation (the evidence is where the activations are large).
    """
    n, k, h, w = c.acts.shape
    samples = c.acts.reshape(n, k, h * w).transpose(1, 2).double()
    samples = samples - samples.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(samples, full_matrices=False)
    projection = samples @ vh[:, 0, :, None]  # [N, hw, 1]
    energy = c.acts.sum(dim=1).reshape(n, h * w, 1).double()
    energy = energy - energy.mean(dim=1, keepdim=True)
    sign = torch.where((projection * energy).sum(dim=(1, 2)) < 0, -1.0, 1.0)
    return (projection[..., 0] * sign[:, None].double()).reshape(n, h, w)


FORMULAS: dict[str, Callable[[Captured], torch.Tensor]] = {}


def targets_tensor(targets: Sequence[int] | torch.Tensor, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(targets, device=device, dtype=torch.long).reshape(-1)
    if t.numel() == 1 and n > 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"got {t.numel()} targets for a batch of {n}")
    return t


def same_logits(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal up to float32 rounding (summation order, batch size), relative to the largest
    logit: the test that a shortcut reproduces what the whole network computes."""
    scale = want.float().abs().max().item()
    return got.shape == want.shape and torch.allclose(
        got.float(), want.float(), rtol=1e-4, atol=1e-5 + 1e-4 * scale
    )


def _class_weights(
    model: nn.Module,
    classifier: str | None,
    targets: torch.Tensor,
    acts: torch.Tensor,
    scores: torch.Tensor,
    checked: bool,
):
    """The classifier's row of each target, where the layer feeds it (through global average
    pooling). ``checked``: the clean scores must equal ``classifier(mean_ij(A))`` (a token
    layer: a transformer's head reads its class token, not the mean of the patches)."""
    if classifier is None:
        return None
    linear = resolve_layer(model, classifier)
    if not isinstance(linear, nn.Linear) or linear.in_features != acts.shape[1]:
        return None
    if checked and not same_logits(linear(acts.mean(dim=(2, 3))), scores.detach()):
        return None
    return linear.weight.detach()[targets]


def cam_maps(
    model: nn.Module,
    x: torch.Tensor,
    targets: Sequence[int] | torch.Tensor,
    layers: Sequence[str],
    methods: Sequence[str],
    classifier: str | None = None,
    errors: dict[tuple[str, str], str] | None = None,
    negative: dict[str, torch.Tensor] | None = None,
    reshape: str | None = None,
) -> dict[tuple[str, str], torch.Tensor]:
    """Maps ``{(method, layer): [N, h, w]}`` for every method at every layer, from one capture:
    one forward pass, whose graph starts at the earliest of the layers (parameters frozen,
    so nothing before it is recorded), and one ``autograd.grad`` down to the layers.

    A method that cannot apply at a layer (CAM away from the GAP + linear head)
    raises ``ValueError`` naming both, or, when ``errors`` is given, is left out of
    the result and its message stored there under ``(method, layer)``. ``negative``, when
    given, receives each layer's share of activations below zero per item, in % (a signed
    layer: where formulas that assume non-negative activations are ill-posed).

    A token or channels-last layer is read as ``[N, K, h, w]`` (``layout``; ``reshape``
    overrides the inferred layout), its gradients the same way.
    """

    def key_of(method: str, layer: str) -> tuple:  # CAM's map alone reads the classifier
        return (method, layer, reshape, classifier if method == "cam" else None)

    if errors is None and negative is None:  # made by an earlier capture of this compute call
        found = {
            (m, n): lookup("cam", model, x, targets, key_of(m, n)) for m in methods for n in layers
        }
        if all(v is not None for v in found.values()):
            return {key: m.clone() for key, m in found.items()}  # the caller may change it
    need_grad = any(REGISTRY_CAM[m].needs_gradient for m in methods)
    if need_grad:
        refuse_inference_mode()
    with preserved_state(model), frozen(model), torch.set_grad_enabled(need_grad):
        with Capture(model, layers, for_grad=need_grad) as cap:
            scores = model(x.detach())
        t = targets_tensor(targets, x.shape[0], scores.device)
        acts = [cap.outputs[name] for name in layers]
        layouts = [
            layout_in(model, x, name, a, reshape) for name, a in zip(layers, acts, strict=True)
        ]
        grads: Sequence[torch.Tensor | None] = [None] * len(acts)
        if need_grad:
            picked = scores.gather(1, t[:, None]).sum()
            grads = torch.autograd.grad(picked, acts, allow_unused=True)
            if any(g is None for g in grads):
                raise RuntimeError("no gradient reached the chosen layer; is it on the path?")
    out: dict[tuple[str, str], torch.Tensor] = {}
    for name, layout, raw, g in zip(layers, layouts, acts, grads, strict=True):
        a = layout.to_map(raw.detach())
        if negative is not None:
            negative[name] = 100.0 * a.lt(0).flatten(1).float().mean(1).cpu()
        checked = layout.kind != "nchw"  # a transformer's head may not pool the patches
        captured = Captured(
            a,
            None if g is None else layout.to_map(g.detach()),
            _class_weights(model, classifier, t, a, scores, checked),
        )
        for method in methods:
            try:
                out[(method, name)] = FORMULAS[method](captured).float()
            except ValueError as err:
                message = f"{method} at layer '{name}': {err}"
                if errors is None:
                    raise ValueError(message) from err
                errors[(method, name)] = message
    for (method, name), m in out.items():
        keep("cam", model, x, targets, key_of(method, name), m)
    return out


REGISTRY_CAM: dict[str, Technique] = {}


def _register(name: str, formula: Callable[[Captured], torch.Tensor], **kw) -> None:
    def run(model, x, targets, layer: str, classifier=None, reshape=None, **_) -> torch.Tensor:
        found = cam_maps(model, x, targets, [layer], [name], classifier, reshape=reshape)
        return found[(name, layer)]

    FORMULAS[name] = formula
    REGISTRY_CAM[name] = register(Technique(name=name, family="cam", run=run, cheap=True, **kw))


_register(
    "cam",
    cam_formula,
    title="CAM",
    paper="Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016",
    url="https://arxiv.org/abs/1512.04150",
    summary="M_c = Σ_k w_k^c A_k: the feature maps weighted by the classifier's weights for "
    "class c. Defined only at the layer that feeds global average pooling and the linear "
    "classifier.",
    cost="1 forward pass, no backward",
    needs_gradient=False,
)
_register(
    "gradcam",
    gradcam_formula,
    title="Grad-CAM",
    paper="Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via "
    "Gradient-based Localization, ICCV 2017",
    url="https://arxiv.org/abs/1610.02391",
    summary="α_k^c = (1/Z) Σ_ij ∂y^c/∂A_k(i,j); map = ReLU(Σ_k α_k^c A_k). With a GAP + "
    "linear head it equals ReLU(CAM) divided by the map's area.",
    cost="1 forward pass + 1 backward pass down to the layer",
)
_register(
    "gradcampp",
    gradcampp_formula,
    title="Grad-CAM++",
    paper="Chattopadhay et al., Grad-CAM++: Improved Visual Explanations for Deep "
    "Convolutional Networks, WACV 2018",
    url="https://arxiv.org/abs/1710.11063",
    summary="Pixel-wise weights α_k^ij = g² / (2g² + Σ_ab A_k(a,b) g³) with g = ∂S^c/∂A_k(i,j) "
    "(eq. 19, Y^c = exp(S^c)); w_k^c = Σ_ij α_k^ij ReLU(g); map = ReLU(Σ_k w_k^c A_k).",
    cost="1 forward pass + 1 backward pass down to the layer",
    notes="The paper's ReLU(∂Y/∂A) carries a positive factor exp(S^c) per image; like "
    "pytorch-grad-cam and torchcam we leave it out, which scales each image's map only. "
    "Where the denominator is exactly 0 we set α = 0; pytorch-grad-cam adds 10⁻⁶ to it "
    "instead (the same map wherever activations are non-negative).",
    signed="α = g² / (2g² + Σ_ab A_ab g³) is derived for non-negative activations (after a "
    "ReLU). Where activations are signed, Σ_ab A_ab can be negative, the denominator crosses "
    "zero and the weights are decided by rounding: pytorch-grad-cam's 10⁻⁶ and our α = 0 "
    "at an exact zero then give different maps, and neither is meaningful.",
)
_register(
    "xgradcam",
    xgradcam_formula,
    title="XGrad-CAM",
    paper="Fu et al., Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation "
    "of CNNs, BMVC 2020",
    url="https://arxiv.org/abs/2008.02312",
    summary="w_k^c = Σ_ij (A_k(i,j) / Σ_ab A_k(a,b)) ∂S^c/∂A_k(i,j): gradients averaged with "
    "the activations' own spatial distribution as weights; map = ReLU(Σ_k w_k^c A_k).",
    cost="1 forward pass + 1 backward pass down to the layer",
    notes="A channel whose activations sum to exactly 0 gets the weight 0; pytorch-grad-cam "
    "adds 10⁻⁷ to the sum instead (the same map wherever activations are non-negative).",
    signed="The weights divide by each channel's summed activation Σ_ab A_k(a,b), a "
    "distribution only when activations are non-negative. At a signed layer the sum can be "
    "near zero or negative: a channel's weight then blows up or changes sign.",
)
_register(
    "layercam",
    layercam_formula,
    title="LayerCAM",
    paper="Jiang et al., LayerCAM: Exploring Hierarchical Class Activation Maps for "
    "Localization, IEEE TIP 2021",
    url="https://doi.org/10.1109/TIP.2021.3089943",
    summary="M = ReLU(Σ_k ReLU(∂S^c/∂A_k) ⊙ A_k): every position keeps its own positive "
    "gradient as weight, which keeps shallow layers' maps sharp.",
    cost="1 forward pass + 1 backward pass down to the layer",
)
_register(
    "hirescam",
    hirescam_formula,
    title="HiResCAM",
    paper="Draelos & Carin, Use HiResCAM instead of Grad-CAM for faithful explanations of "
    "convolutional neural networks, arXiv 2020",
    url="https://arxiv.org/abs/2011.08891",
    summary="M = ReLU(Σ_k ∂S^c/∂A_k ⊙ A_k): Grad-CAM without averaging the gradient over "
    "positions. With a GAP + linear head it equals ReLU(CAM) divided by the map's area.",
    cost="1 forward pass + 1 backward pass down to the layer",
)
_register(
    "eigencam",
    eigencam_formula,
    title="Eigen-CAM",
    paper="Muhammad & Yeasin, Eigen-CAM: Class Activation Map using Principal Components, "
    "IJCNN 2020",
    url="https://arxiv.org/abs/2008.00299",
    summary="The layer's activations (positions as samples, channels as features, centred) "
    "projected on their first principal component. Class-agnostic: no gradient, no target.",
    cost="1 forward pass, no backward",
    needs_gradient=False,
    notes="An SVD gives the component only up to sign; we orient it so the map correlates "
    "positively with the channel-summed activation. pytorch-grad-cam leaves the sign to the "
    "SVD routine and then applies ReLU, so its map can show the opposite lobe. We keep the "
    "signed projection (the site rectifies it for display and scoring).",
)
