"""Baseline "explainers" that look at no model: every leaderboard shows whether the real
methods beat them (README: Metrics; XAI-TRIS 2023 found popular methods often do not)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import Technique, register


def random_map(model, x: torch.Tensor, targets=None, seed: int = 0, **_) -> torch.Tensor:
    """Uniform noise, seeded: the chance level of every metric."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((x.shape[0], *x.shape[-2:]), generator=gen).to(x.device)


def centre_gaussian(model, x: torch.Tensor, targets=None, sigma: float = 0.25, **_):
    """A Gaussian at the image centre, ``sigma`` as a fraction of each side: photographers'
    centre bias, the baseline of the pointing game."""
    h, w = x.shape[-2:]
    ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) / h - 0.5
    xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) / w - 0.5
    bump = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))
    return bump.expand(x.shape[0], h, w).clone()


def sobel_edges(model, x: torch.Tensor, targets=None, **_) -> torch.Tensor:
    """Gradient magnitude of the input (Sobel, summed over colour channels): an edge map."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device, dtype=x.dtype)
    kernels = torch.stack([kx, kx.T])[:, None].repeat(x.shape[1], 1, 1, 1)
    grads = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels, groups=x.shape[1])
    gx, gy = grads[:, 0::2], grads[:, 1::2]
    return torch.sqrt(gx**2 + gy**2).sum(dim=1)


for name, title, run, summary in [
    (
        "baseline_random",
        "Baseline: random",
        random_map,
        "Uniform noise, the same for every class: what any metric gives by chance.",
    ),
    (
        "baseline_centre",
        "Baseline: centre Gaussian",
        centre_gaussian,
        "exp(−r²/2σ²) around the image centre, σ = 0.25 of each side: objects tend to be "
        "photographed in the middle.",
    ),
    (
        "baseline_edges",
        "Baseline: Sobel edges",
        sobel_edges,
        "|∇I| of the input by Sobel filters, summed over colour channels: an explanation that "
        "only says where the image has contrast.",
    ),
]:
    register(
        Technique(
            name=name,
            title=title,
            family="baseline",
            paper="Control baselines (random, centre, edge); cf. Clark et al., XAI-TRIS, "
            "2023 and Zhang et al., Top-down Neural Attention by Excitation Backprop, 2016 "
            "(centre baseline)",
            url="https://arxiv.org/abs/2306.12816",
            summary=summary,
            cost="no pass: the model is not used",
            run=run,
            needs_gradient=False,
            cheap=True,
        )
    )
