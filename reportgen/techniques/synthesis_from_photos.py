"""The synthesis techniques that start from photos: DeepDream (amplify a layer), inversion
(match a layer's features) and fooling images (reach a target class); registered in
``synthesis``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import activations, frozen, preserved_state
from ..models import probabilities
from .cam import targets_tensor
from .synthesis_machinery import (
    Synthesised,
    _mean_abs,
    _normalised_step,
    _optimise,
    _rand,
    _result,
    _setup,
)

# Mahendran & Vedaldi's normalisation (pixels in 0..255 units around the mean colour):
# B is the typical pixel norm of a natural image, V = B / 6.5 its typical local variation.
INVERSION_B = 80.0
INVERSION_V = INVERSION_B / 6.5


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
    output: str = "softmax",
    progress: bool = False,
    **_,
) -> Synthesised:
    """Szegedy et al. 2013's targeted adversarial example, computed as iterative FGSM
    (Kurakin et al. 2016): at most ``steps`` updates ``I += step_size/255 * sign(g)`` with
    ``g = d log p_target / dI`` (``p``: the model's softmax, or its sigmoid under
    ``output``; 0..255 units; the sign is the steepest ascent for an
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
        out = probabilities(model(space.to_model(images)), output, log=True)
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
