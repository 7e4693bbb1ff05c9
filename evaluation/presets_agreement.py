"""How two settings' outputs are compared: Pearson r of maps, insertion / deletion AUCs
at two step counts, and each setting's passes per image; the arithmetic behind
``evaluation.presets``, apart from the photos and the model it runs on."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from scipy import stats

from evaluation import metrics as M

Probabilities = Callable[[np.ndarray], np.ndarray]

MODES = ("insertion", "deletion")
CURVE_PAPER_STEPS = 100


# --- maps ----------------------------------------------------------------------------------


def pearson(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Pearson r of two maps, flattened (NaN when either is constant)."""
    a, b = (np.asarray(torch.as_tensor(v).detach().cpu(), dtype=np.float64).ravel() for v in (a, b))
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / norm) if norm > 0 else float("nan")


def compute_maps(
    model: torch.nn.Module,
    x: torch.Tensor,
    targets: int | Sequence[int] | torch.Tensor,
    method: str,
    settings: Mapping[str, object] | None = None,
    **kwargs,
) -> torch.Tensor:
    """``[N, H, W]`` maps of ``method`` at the input's resolution, with ``settings``.

    Without settings (``layer``/``classifier`` aside) this is ``reportgen.explain``; with
    them it is the technique's own ``run`` (what ``explain`` calls, and what a run does
    with ``--set``), since ``explain`` takes no technique options. ``kwargs`` (e.g. the
    model's ``mean`` and ``std`` for the IG baseline, ``batch_size``) go to the technique
    as the pipeline passes them; ``layer`` and ``classifier`` are used by CAM methods.
    """
    import reportgen
    from reportgen import techniques
    from reportgen.capture import record_outputs
    from reportgen.models import default_cam_layer, last_linear
    from reportgen.techniques.cam import upsample

    options = {**kwargs, **(settings or {})}
    technique = techniques.get(method)
    if set(options) <= {"layer", "classifier"}:
        return reportgen.explain(model, x, method, target=targets, **options)
    if technique.needs_layer:
        if options.get("layer") is None:
            options["layer"] = default_cam_layer(*record_outputs(model, x[:1]))
        options["classifier"] = options.get("classifier") or last_linear(model)
    else:
        options.pop("layer", None)
        options.pop("classifier", None)
    maps = technique.run(model, x, targets, **options).detach().float()
    return upsample(maps, x.shape[-2:]) if maps.shape[-2:] != x.shape[-2:] else maps


def timed_maps(
    model: torch.nn.Module, x: torch.Tensor, targets, method: str, settings=None, **kwargs
) -> tuple[torch.Tensor, float]:
    """:func:`compute_maps` and its wall-clock seconds."""
    start = time.perf_counter()
    maps = compute_maps(model, x, targets, method, settings, **kwargs)
    return maps, time.perf_counter() - start


def map_agreement(
    model: torch.nn.Module,
    x: torch.Tensor,
    targets: int | Sequence[int] | torch.Tensor,
    method: str,
    fast: Mapping[str, object],
    paper: Mapping[str, object],
    **kwargs,
) -> list[float]:
    """Per-image Pearson r between ``method``'s maps with the ``paper`` settings and with
    the ``fast`` ones (same images, targets and ``kwargs``)."""
    reference = compute_maps(model, x, targets, method, paper, **kwargs)
    shortened = compute_maps(model, x, targets, method, fast, **kwargs)
    return [pearson(a, b) for a, b in zip(reference, shortened, strict=True)]


# --- insertion / deletion ------------------------------------------------------------------


def passes_per_image(method: str, settings: Mapping[str, int], size: tuple[int, int]) -> str:
    """The model passes one image costs with ``settings``: the cost that does not depend
    on the machine's load (``curves``: per scored map, insertion and deletion)."""
    from reportgen.techniques.perturbation import window_starts

    if method == "rise":
        return f"{settings['masks']} forward"
    if method in ("smoothgrad", "integrated_gradients", "gradient_shap", "extremal_perturbation"):
        key = {"integrated_gradients": "steps", "extremal_perturbation": "iterations"}
        n = settings[key.get(method, "samples")]
        return f"{n} forward + {n} backward"
    if method == "occlusion":
        w, s = int(settings["window"]), int(settings["stride"])
        windows = len(window_starts(size[0], w, s)) * len(window_starts(size[1], w, s))
        return f"{1 + windows} forward"
    if method == "curves":
        return f"{2 * (int(settings['steps']) + 1)} forward per map"
    raise ValueError(f"no pass count for '{method}'")


def curve_aucs(
    probabilities: Probabilities,
    images: Sequence[np.ndarray],
    maps: Sequence[Mapping[str, np.ndarray]],
    targets: Sequence[int],
    steps: int,
    modes: Sequence[str] = MODES,
) -> dict[str, np.ndarray]:
    """AUC per (image, map) pair, image-major, for each mode, at ``steps`` curve steps.

    ``images`` are ``[H, W, 3]`` pixel-space inputs (the model's input size, [0, 1]);
    ``maps[i]`` holds image ``i``'s maps by name, each ``[H, W]``.
    """
    out: dict[str, list[float]] = {mode: [] for mode in modes}
    for image, named, target in zip(images, maps, targets, strict=True):
        for saliency in named.values():
            saliency = np.nan_to_num(np.asarray(saliency, dtype=np.float32))
            step = M.curve_step(saliency.shape, steps)
            for mode in modes:
                curve = M.insertion_deletion(
                    probabilities, image, saliency, int(target), mode=mode, step=step
                )
                out[mode].append(curve.auc)
    return {mode: np.asarray(v) for mode, v in out.items()}


def auc_stats(fast: np.ndarray, paper: np.ndarray) -> dict[str, float]:
    """Pearson r, Spearman rank correlation and mean absolute difference of two AUC lists."""
    fast, paper = np.asarray(fast, dtype=np.float64), np.asarray(paper, dtype=np.float64)
    pearson_r = pearson(fast, paper)
    spearman = float(stats.spearmanr(fast, paper).statistic)
    if np.array_equal(fast, paper) and np.ptp(fast) == 0:
        pearson_r = spearman = 1.0  # identical constant scores: no ranking, yet they agree
    return {
        "pearson": pearson_r,
        "spearman": spearman,
        "mean_abs_diff": float(np.abs(fast - paper).mean()),
        "max_abs_diff": float(np.abs(fast - paper).max()),
        "pairs": int(len(fast)),
    }


def curve_agreement(
    probabilities: Probabilities,
    images: Sequence[np.ndarray],
    maps: Sequence[Mapping[str, np.ndarray]],
    targets: Sequence[int],
    steps: int,
    paper_steps: int = CURVE_PAPER_STEPS,
    modes: Sequence[str] = MODES,
) -> dict[str, dict[str, float]]:
    """Per mode, how the AUCs at ``steps`` agree with those at ``paper_steps`` over all
    (image, map) pairs: :func:`auc_stats`."""
    paper = curve_aucs(probabilities, images, maps, targets, paper_steps, modes)
    fast = curve_aucs(probabilities, images, maps, targets, steps, modes)
    return {mode: auc_stats(fast[mode], paper[mode]) for mode in modes}
