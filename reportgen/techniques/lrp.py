"""Layer-wise relevance propagation for CNNs with batch norm (Bach et al. 2015; the rule
sets of Montavon et al. 2019 and Kohlbrenner et al. 2020, as zennit composes them).

The target output gets relevance 1 (the others 0); each layer hands relevance down to its
inputs by a rule instead of the chain rule. For a linear layer (convolution or dense) with
input ``a``, weights ``w`` and the relevance ``R`` of its outputs:

* ε: ``R_in = a ⊙ wᵀ (R / (z + ε·sign z))``, ``z = w a + b`` (dense layers);
* z⁺ (α1β0): only the positive contributions, ``z⁺ = w⁺ a⁺ + w⁻ a⁻ + b⁺``;
* α2β1: ``2 ×`` the positive contributions' share ``−`` the negative ones';
* flat (the first layer of the ε/z⁺ set): every weight 1, so relevance spreads evenly
  over each output's receptive field.

Batch norms are folded into the convolutions before them (zennit's canonizers do the
same); activations pass relevance on unchanged; average pooling and residual sums split it
in proportion to their inputs (z-rule); max pooling passes it to the maximum.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from ..capture import StandIn, backward_rule, preserved_state, swapped_modules
from .cam import targets_tensor
from .registry import Technique, register

STABILISER = 1e-6  # zennit's default ε and stabiliser
LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)  # left after folding: pass, as zennit
# the rule of each composite for the first linear layer (None: by its type, as the others),
# the convolutions and the dense layers
COMPOSITES = {
    "epsilon_plus_flat": ("flat", "zplus", "epsilon"),
    "epsilon_alpha2_beta1": (None, "alpha_beta", "epsilon"),
}


def stabilised(z: torch.Tensor) -> torch.Tensor:
    """``z + ε·sign(z)`` with sign 0 counted as +1: no division by zero, sign kept."""
    return z + STABILISER * (z.sign() + (z == 0).to(z.dtype))


def _contributions(module: nn.Module, x: torch.Tensor, relevance: torch.Tensor, rule: str):
    """The relevance of ``module``'s input by ``rule``, from the relevance of its output
    (``epsilon`` on a pool, whose function is linear with no parameters, is zennit's Norm)."""

    def through(inp: torch.Tensor, weight, bias):
        params = {"weight": weight}
        if getattr(module, "bias", None) is not None:
            params["bias"] = bias
        leaf = inp.detach().requires_grad_(True)
        return leaf, functional_call(module, params, (leaf,))

    with torch.enable_grad():
        if rule == "epsilon":  # the z-rule of any linear map: a layer, a pool
            leaf = x.detach().requires_grad_(True)
            z = module(leaf)
            (g,) = torch.autograd.grad(z, leaf, relevance / stabilised(z))
            return x * g
        w = module.weight
        b = module.bias if module.bias is not None else torch.zeros(1, device=w.device)
        zero = torch.zeros_like(b)
        if rule == "flat":
            leaf, z = through(torch.ones_like(x), torch.ones_like(w), zero)
            (g,) = torch.autograd.grad(z, leaf, relevance / stabilised(z))
            return g
        pos, neg = x.clamp(min=0), x.clamp(max=0)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        terms = [((pos, wp, b.clamp(min=0)), (neg, wn, zero))]  # the positive contributions
        if rule == "alpha_beta":  # and the negative ones, weighted 2 and -1
            terms.append(((pos, wn, b.clamp(max=0)), (neg, wp, zero)))
        if not (x < 0).any():  # after a rectifier: the negative input's parts are exactly 0
            terms = [term[:1] for term in terms]
        out = []
        for term in terms:
            leaves, zs = zip(*(through(*t) for t in term), strict=True)
            share = relevance / stabilised(sum(zs))
            grads = torch.autograd.grad(zs, leaves, [share] * len(zs))
            out.append(sum(t[0] * g for t, g in zip(term, grads, strict=True)))
    return out[0] if rule == "zplus" else 2 * out[0] - out[1]


class _Relevance(torch.autograd.Function):
    """Forward: the layer itself. Backward: its rule on the relevance from above."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, module: nn.Module, rule: str) -> torch.Tensor:
        ctx.module, ctx.rule = module, rule
        ctx.save_for_backward(x)
        return module(x)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        (x,) = ctx.saved_tensors
        return _contributions(ctx.module, x, relevance, ctx.rule), None, None


class _Sum(torch.autograd.Function):
    """``a + b`` (a residual connection); backward: the z-rule, each part's share."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return a + b

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        a, b = ctx.saved_tensors
        share = relevance / stabilised(a + b)
        return a * share, b * share


# ``out += identity`` reaches the mode as ``add_``: the sum comes back as a new tensor,
# which ``+=`` assigns (an ``add_`` whose result is dropped would lose the sum)
_ADDS = {
    torch.add,
    torch.Tensor.add,
    torch.Tensor.add_,
    torch.Tensor.__add__,
    torch.Tensor.__iadd__,
}


class _Sums(TorchFunctionMode):
    """Every sum of two feature maps of the same shape ``[N, C, H, W]`` that both come out
    of the network (``x + shortcut``, ``out += identity``) goes through ``_Sum``: residual
    sums are not modules to swap. A parameter (a position embedding) is not made by the
    network and is left alone; ``lrp`` checks that the scores did not change."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if (
            func in _ADDS
            and not kwargs
            and len(args) == 2
            and all(isinstance(a, torch.Tensor) and a.grad_fn is not None for a in args)
            and args[0].dim() == 4
            and args[0].shape == args[1].shape
        ):
            return _Sum.apply(*args)
        return func(*args, **(kwargs or {}))


class _Ruled(StandIn):
    """A linear layer or average pool with its rule."""

    def __init__(self, original: nn.Module, rule: str):
        super().__init__(original)
        self.rule = rule

    def ruled(self, x: torch.Tensor) -> torch.Tensor:
        return _Relevance.apply(x, self.original, self.rule)


@contextmanager
def relevance_rules(model: nn.Module, composite: str):
    """``model`` with the composite's rules on its linear layers, activations and average
    pools, and sums split by the z-rule, for the block."""
    first_rule, conv_rule, dense_rule = COMPOSITES[composite]
    first = next((m for m in model.modules() if isinstance(m, LINEAR)), None)

    def ruled(module: nn.Module) -> nn.Module:
        if module is first and first_rule:
            return _Ruled(module, first_rule)
        return _Ruled(module, dense_rule if isinstance(module, nn.Linear) else conv_rule)

    pooled = lambda module: _Ruled(module, "epsilon")  # noqa: E731  (the z-rule, zennit's Norm)
    with swapped_modules(model, LINEAR, ruled), swapped_modules(model, POOLS, pooled):
        with backward_rule(model, "pass", extra=NORMS, strict=False), _Sums():
            yield model


def lrp(
    model: nn.Module,
    x: torch.Tensor,
    targets,
    composite: str = "epsilon_plus_flat",
    **_,
) -> torch.Tensor:
    """The relevance of each pixel for the target class, summed over colour channels
    ``[N, H, W]`` (relevance 1 at the target output, as zennit seeds it): one forward and
    one backward pass, on a copy with its batch norms folded into the convolutions before
    them (a norm that cannot fold passes relevance on, as zennit's composites do), and one
    forward pass that checks the rules left the scores as they were."""
    from ..models import folded_copy  # models imports capture, not techniques

    if composite not in COMPOSITES:
        raise ValueError(f"lrp composite '{composite}' is unknown; valid: {', '.join(COMPOSITES)}")
    model, _ = folded_copy(model, tuple(x.shape[-2:]))
    with preserved_state(model), torch.enable_grad():
        inp = x.detach().requires_grad_(True)
        with relevance_rules(model, composite):  # the forward pass records the rules
            scores = model(inp)
        with torch.no_grad():
            plain = model(x)
        if not torch.allclose(
            scores.detach(), plain, rtol=1e-4, atol=1e-4 * float(plain.abs().max())
        ):
            raise ValueError(
                f"LRP's rules changed {type(model).__name__}'s output (an in-place sum the "
                "rules cannot follow?): LRP does not apply to this model"
            )
        t = targets_tensor(targets, len(x), scores.device)
        (relevance,) = torch.autograd.grad(scores.gather(1, t[:, None]).sum(), inp)
    return relevance.sum(dim=1)


def lrp_alpha_beta(model: nn.Module, x: torch.Tensor, targets, **kwargs) -> torch.Tensor:
    return lrp(model, x, targets, composite="epsilon_alpha2_beta1", **kwargs)


COMMON = dict(
    family="gradient",
    url="https://doi.org/10.1371/journal.pone.0130140",
    cost="2 forward passes (one checks that the rules kept the scores) + 1 backward pass to "
    "the input, whose rules cost a few forward passes of each layer",
    notes="As zennit's composite with its canonizers (batch norms merged into the "
    "convolution before them, residual sums split by the z-rule): tested against zennit on "
    "ResNet-18 and a VGG-style CNN with batch norm. Sums of two tensors (x + shortcut) are "
    "found as the model adds them, so any residual network needs no canonizer of its own; "
    "multiplicative gates (squeeze-and-excitation) pass relevance as gradients do. The map "
    "sums colour channels with their sign; the metrics rectify it.",
    cheap=True,
)
register(
    Technique(
        name="lrp",
        title="LRP (ε / z⁺ / flat)",
        paper="Bach et al., On Pixel-Wise Explanations for Non-Linear Classifier Decisions "
        "by Layer-Wise Relevance Propagation, PLOS ONE 2015; rules as Montavon et al. 2019 "
        "and Kohlbrenner et al. 2020 recommend (zennit's EpsilonPlusFlat)",
        summary="Relevance 1 at the target output redistributed layer by layer down to the "
        "pixels: the "
        "ε-rule R_j = Σ_k a_j w_jk / (z_k + ε) R_k at dense layers, the z⁺-rule (positive "
        "contributions only) at convolutions, the flat rule (uniform over the receptive "
        "field) at the first layer; batch norms folded first. Signed, summed over colour "
        "channels.",
        run=lrp,
        **COMMON,
    )
)
register(
    Technique(
        name="lrp_alpha_beta",
        title="LRP (α2β1)",
        paper="Bach et al., On Pixel-Wise Explanations for Non-Linear Classifier Decisions "
        "by Layer-Wise Relevance Propagation, PLOS ONE 2015 (zennit's EpsilonAlpha2Beta1)",
        summary="As LRP with the α2β1 rule at every convolution: R_j = Σ_k (2 (a_j w_jk)⁺ / "
        "z_k⁺ − (a_j w_jk)⁻ / z_k⁻) R_k, so negative evidence is propagated too; the ε-rule "
        "at dense layers; batch norms folded first. Signed, summed over colour channels.",
        run=lrp_alpha_beta,
        **COMMON,
    )
)
