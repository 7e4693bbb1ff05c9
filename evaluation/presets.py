"""How close shortened settings come to the published ones: the measurement behind
``--quality fast``.

For each shortened setting of a technique (fewer RISE masks, SmoothGrad samples or
integrated-gradients steps, a coarser occlusion stride) the maps are compared with the
paper setting's maps of the same images: Pearson r per image over all pixels. For the
insertion / deletion curves the comparison is of the scores: the AUC of each (image,
map) pair at a few steps against the AUC at 100 steps (1 % of the pixels a step), as
Pearson r, Spearman rank correlation and mean absolute difference over the pairs.

``python -m evaluation.presets [--images N] [--out FILE]`` measures the grid below on
the default photos with the default model (EfficientNet-Lite0), prints a table and writes
a JSON (``evaluation/bench/presets/cpu-2core.json`` by default).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from evaluation import metrics as M

Probabilities = Callable[[np.ndarray], np.ndarray]

OUT = Path(__file__).parent / "bench" / "presets" / "cpu-2core.json"
FLOOR = 0.95  # mean r (maps) or Spearman (AUCs) a fast setting must reach
MODES = ("insertion", "deletion")


@dataclass(frozen=True)
class Setting:
    """One technique's shortened setting: the values tried against the paper's value."""

    method: str
    key: str
    paper: int | None  # None: the technique's unshortened default (e.g. every channel)
    candidates: tuple[int, ...]
    fixed: Mapping[str, object] | None = None  # held equal in fast and paper runs


#: The grid: RISE masks, SmoothGrad samples, IG steps, occlusion stride (window 32),
#: Score-CAM's channels at Lite0's bn2.
GRID: tuple[Setting, ...] = (
    Setting("smoothgrad", "samples", 50, (8, 16, 25), {"seed": 0}),
    Setting("integrated_gradients", "steps", 50, (8, 16, 25)),
    Setting("occlusion", "stride", 16, (32,), {"window": 32}),
    Setting("rise", "masks", 4000, (250, 500, 1000), {"seed": 0}),
    Setting("scorecam", "channels", None, (64, 128, 256), {"layer": "bn2"}),
)
#: What "same seed" shares between a fast run and the paper run (read from the code).
SHARED_DRAWS = {
    "smoothgrad": "nested: samples=k uses exactly the first k of the paper run's 50 noise "
    "draws (one seeded generator), so agreement includes the shared draws; the noise floor "
    "(another seed, 50 samples) is the paper setting's own reproducibility",
    "rise": "partly nested: masks=k shares the paper run's first k grids (drawn first from "
    "the seeded generator) but not their random shifts (drawn after all grids)",
    "integrated_gradients": "deterministic: Gauss-Legendre nodes, no randomness",
    "occlusion": "deterministic: no randomness",
    "scorecam": "deterministic: the K channels of largest spatial variance, a subset of all",
}
#: The noise floor: the paper setting against itself with another seed.
FLOOR_SEEDS = {"rise": (0, 1), "smoothgrad": (0, 1)}
CURVE_PAPER_STEPS = 100
CURVE_CANDIDATES = (8, 12, 16)
#: Cheap maps scored by the curves (method, CAM layer): the check is of the metric.
CURVE_MAPS = (
    ("gradcam", "bn2"),
    ("saliency", None),
    ("baseline_centre", None),
    ("baseline_random", None),
    ("eigencam", "bn2"),
)


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


def curve_step(shape: tuple[int, int], steps: int) -> int:
    """Pixels per step for ``steps`` steps over an ``H × W`` map (the pipeline's rule)."""
    return -(-shape[0] * shape[1] // steps)


def passes_per_image(method: str, settings: Mapping[str, int], size: tuple[int, int]) -> str:
    """The model passes one image costs with ``settings``: the cost that does not depend
    on the machine's load (``curves``: per scored map, insertion and deletion)."""
    from reportgen.techniques.perturbation import window_starts

    if method == "rise":
        return f"{settings['masks']} forward"
    if method in ("smoothgrad", "integrated_gradients"):
        n = settings["samples" if method == "smoothgrad" else "steps"]
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
            step = curve_step(saliency.shape, steps)
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


# --- the measurement on the default photos -------------------------------------------------


@dataclass
class Inputs:
    """The default photos as the pipeline builds them, with the default model."""

    model: torch.nn.Module
    spec: object
    ids: list[str]
    pixels: np.ndarray  # [N, H, W, 3] float32 in [0, 1]
    x: torch.Tensor  # [N, 3, H, W] normalised
    targets: torch.Tensor  # top-1 classes
    probabilities: Probabilities


def default_inputs(limit: int | None = None, model_name: str = "efficientnet_lite0") -> Inputs:
    """Model, photos, inputs and predicted targets as ``Run.process`` makes them (CPU)."""
    from reportgen import data, sources
    from reportgen.models import get_spec, load_model
    from reportgen.pipeline import make_probabilities

    model, spec = load_model(get_spec(model_name))
    model = model.eval()
    _, records = sources.dataset(None, spec.class_names)
    records = records[:limit] if limit else records
    ids, pixels = [], []
    for record in records:
        rgb, _, _ = data.load_photo(record)
        ids.append(record.id)
        pixels.append(data.model_input(rgb, spec.input_size))
    inputs = np.stack(pixels)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    x = (torch.from_numpy(inputs).permute(0, 3, 1, 2) - mean) / std
    with torch.no_grad():  # not inference mode: the targets feed autograd later
        targets = model(x).argmax(1)
    probabilities = make_probabilities(model, mean, std, torch.device("cpu"), 8)
    return Inputs(model, spec, ids, inputs, x.contiguous(), targets, probabilities)


def _log(text: str) -> None:
    print(text, flush=True)


Progress = Callable[[dict], None]


def measure_setting(
    inp: Inputs,
    setting: Setting,
    images: int,
    floor_images: int,
    progress: Progress | None = None,
) -> dict:
    """Paper map once per image (cached), each candidate against it; the noise floor.
    ``progress`` gets the result so far after each image (to save it)."""
    extra = {"mean": inp.spec.mean, "std": inp.spec.std, "batch_size": 8}  # as the pipeline
    fixed = dict(setting.fixed or {})
    paper_settings = {**fixed, setting.key: setting.paper}
    rs: dict[int, list[float]] = {c: [] for c in setting.candidates}
    secs: dict[int, list[float]] = {c: [] for c in setting.candidates}
    paper_secs: list[float] = []
    floor_rs: list[float] = []
    seeds = FLOOR_SEEDS.get(setting.method)

    def summary(done: int) -> dict:
        result = {
            "method": setting.method,
            "setting": setting.key,
            "paper": setting.paper,
            "fixed": fixed,
            "images": inp.ids[:done],
            "paper_seconds_per_image": float(np.mean(paper_secs)),
            "candidates": [
                {
                    "value": value,
                    "mean_r": float(np.mean(rs[value])),
                    "min_r": float(np.min(rs[value])),
                    "r": [round(r, 5) for r in rs[value]],
                    "seconds_per_image": float(np.mean(secs[value])),
                }
                for value in setting.candidates
            ],
        }
        if floor_rs:
            result["noise_floor"] = {
                "what": f"{setting.key}={setting.paper}, seed {seeds[0]} vs seed {seeds[1]}",
                "images": inp.ids[: len(floor_rs)],
                "mean_r": float(np.mean(floor_rs)),
                "min_r": float(np.min(floor_rs)),
                "r": [round(r, 5) for r in floor_rs],
            }
        result["chosen"] = next(
            (c["value"] for c in result["candidates"] if c["mean_r"] >= FLOOR), None
        )
        if done < images:
            result["partial"] = f"{done} of {images} photos done"
        return result

    for i in range(images):
        x, t = inp.x[i : i + 1], inp.targets[i : i + 1]
        paper, seconds = timed_maps(inp.model, x, t, setting.method, paper_settings, **extra)
        paper_secs.append(seconds)
        line = [f"paper {seconds:.1f}s"]
        for value in setting.candidates:
            fast, seconds = timed_maps(
                inp.model, x, t, setting.method, {**fixed, setting.key: value}, **extra
            )
            rs[value].append(pearson(fast[0], paper[0]))
            secs[value].append(seconds)
            line.append(f"{value}: r={rs[value][-1]:.3f} {seconds:.1f}s")
        if seeds and i < floor_images:
            other = {**paper_settings, "seed": seeds[1]}
            again, _ = timed_maps(inp.model, x, t, setting.method, other, **extra)
            floor_rs.append(pearson(again[0], paper[0]))
            line.append(f"seed {seeds[1]}: r={floor_rs[-1]:.3f}")
        _log(f"  {setting.method} {inp.ids[i]}: " + ", ".join(line))
        if progress and i + 1 < images:
            progress(summary(i + 1))
    return summary(images)


def measure_curves(inp: Inputs, images: int, progress: Progress | None = None) -> dict:
    """AUCs of a few cheap maps per image at each candidate step count against 100 steps,
    image by image (``progress`` gets the result so far after each image)."""
    all_steps = (CURVE_PAPER_STEPS, *CURVE_CANDIDATES)
    aucs: dict[int, dict[str, list[float]]] = {n: {m: [] for m in MODES} for n in all_steps}
    secs: dict[int, list[float]] = {n: [] for n in all_steps}
    names: list[str] = []

    def summary(done: int) -> dict:
        paper = {mode: np.asarray(aucs[CURVE_PAPER_STEPS][mode]) for mode in MODES}
        candidates = []
        for steps in CURVE_CANDIDATES:
            entry: dict = {"value": steps, "seconds_per_image": float(np.mean(secs[steps]))}
            entry.update({mode: auc_stats(aucs[steps][mode], paper[mode]) for mode in MODES})
            entry["spearman_min"] = min(entry[mode]["spearman"] for mode in MODES)
            entry["pearson_min"] = min(entry[mode]["pearson"] for mode in MODES)
            candidates.append(entry)
        result = {
            "setting": "curve_steps",
            "paper": CURVE_PAPER_STEPS,
            "maps": names,
            "images": inp.ids[:done],
            "pairs": done * len(CURVE_MAPS),
            "paper_seconds_per_image": float(np.mean(secs[CURVE_PAPER_STEPS])),
            "seconds_note": f"insertion + deletion of all {len(CURVE_MAPS)} maps of an image",
            "candidates": candidates,
            "chosen": next((c["value"] for c in candidates if c["spearman_min"] >= FLOOR), None),
            "aucs": {
                str(n): {m: [round(v, 6) for v in aucs[n][m]] for m in MODES} for n in all_steps
            },
        }
        if done < images:
            result["partial"] = f"{done} of {images} photos done"
        return result

    for i in range(images):
        x, t = inp.x[i : i + 1], inp.targets[i : i + 1]
        named = {}
        for method, layer in CURVE_MAPS:
            m = compute_maps(inp.model, x, t, method, None, **({"layer": layer} if layer else {}))
            named[f"{method}@{layer}" if layer else method] = m[0].numpy()
        names = list(named)
        line = []
        for steps in all_steps:
            start = time.perf_counter()
            got = curve_aucs(inp.probabilities, inp.pixels[i : i + 1], [named], [int(t)], steps)
            secs[steps].append(time.perf_counter() - start)
            for mode in MODES:
                aucs[steps][mode].extend(got[mode].tolist())
            line.append(f"{steps} steps {secs[steps][-1]:.1f}s")
        _log(f"  curves {inp.ids[i]}: " + ", ".join(line))
        if progress and i + 1 < images:
            progress(summary(i + 1))
    result = summary(images)
    for c in result["candidates"]:
        _log(
            f"  curves: {c['value']} steps, "
            + ", ".join(
                f"{mode} r={c[mode]['pearson']:.3f} rho={c[mode]['spearman']:.3f} "
                f"|d|={c[mode]['mean_abs_diff']:.4f}"
                for mode in MODES
            )
        )
    return result


# --- bfloat16 forward passes ---------------------------------------------------------------

#: The forward-only techniques at their fast settings, and the metrics' maps: what the fast
#: preset runs in bfloat16 where the probe finds it faster.
PRECISION_MAPS: tuple[tuple[str, dict], ...] = (
    ("rise", {"masks": 1000, "seed": 0}),
    ("scorecam", {"channels": 64, "layer": "bn2"}),
    ("occlusion", {}),
)


def _bf16(fn: Callable[[], object]) -> object:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn()


def measure_precision(inp: Inputs, images: int) -> dict:
    """bfloat16 (autocast) against float32 for what the fast preset runs in bfloat16: the
    forward-only techniques' maps (Pearson r per image, same seed) and the metric scores
    of the ``CURVE_MAPS`` maps (insertion / deletion AUCs at the fast preset's 12 steps;
    Average Drop per map, in points). The bfloat16 side runs on the copy with batch norms
    folded, as a run's forward-only passes do. Also the speed of each precision (the
    probe)."""
    from reportgen.models import folded_copy
    from reportgen.pipeline import make_probabilities
    from reportgen.timing import probe

    x, t = inp.x[:images], inp.targets[:images]
    fast, _ = folded_copy(inp.model, tuple(inp.spec.input_size))  # what a run's bf16 passes use
    maps: dict[str, dict] = {}
    for method, settings in PRECISION_MAPS:
        kwargs = {"batch_size": 8, "mean": inp.spec.mean, "std": inp.spec.std}
        start = time.perf_counter()
        full = compute_maps(inp.model, x, t, method, settings, **kwargs)
        middle = time.perf_counter()
        half = _bf16(lambda m=method, s=settings, k=kwargs: compute_maps(fast, x, t, m, s, **k))
        rs = [pearson(a, b) for a, b in zip(full, half, strict=True)]
        maps[method] = {
            "settings": settings,
            "r_per_image": [round(r, 4) for r in rs],
            "mean_r": float(np.mean(rs)),
            "min_r": float(np.min(rs)),
            "seconds": {"fp32": middle - start, "bf16": time.perf_counter() - middle},
        }
        _log(f"  {method}: bf16 vs fp32 mean r {np.mean(rs):.4f}, min {np.min(rs):.4f}")
    mean = torch.tensor(inp.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(inp.spec.std).view(1, 3, 1, 1)
    cpu = torch.device("cpu")
    by = {
        "fp32": inp.probabilities,
        "bf16": make_probabilities(fast, mean, std, cpu, 8, dtype=torch.bfloat16),
    }
    named = []
    for i in range(images):
        one = {}
        for method, layer in CURVE_MAPS:
            m = compute_maps(
                inp.model,
                x[i : i + 1],
                t[i : i + 1],
                method,
                None,
                **({"layer": layer} if layer else {}),
            )
            one[f"{method}@{layer}" if layer else method] = m[0].numpy()
        named.append(one)
    targets = [int(v) for v in t]
    aucs = {p: curve_aucs(fn, inp.pixels[:images], named, targets, 12) for p, fn in by.items()}
    drops = {}
    for p, fn in by.items():
        reference = fn(inp.pixels[:images])[np.arange(images), targets]
        drops[p] = np.asarray(
            [
                M.drop_per_image(
                    reference[i : i + 1],
                    fn(M.explanation_images(inp.pixels[i : i + 1], m[None]))[:, targets[i]],
                )[0]
                for i, one in enumerate(named)
                for m in one.values()
            ]
        )
    scores = {mode: auc_stats(aucs["bf16"][mode], aucs["fp32"][mode]) for mode in MODES}
    scores["average_drop"] = auc_stats(drops["bf16"], drops["fp32"])
    for name, st in scores.items():
        _log(f"  {name}: rho {st['spearman']:.4f}, mean |d| {st['mean_abs_diff']:.4f}")
    speed = probe(inp.model, tuple(inp.spec.input_size), cpu, forward_model=fast)
    inp.model.to(memory_format=torch.contiguous_format)
    return {
        "what": "bfloat16 autocast against float32, same images, settings and seeds",
        "images": inp.ids[:images],
        "maps": maps,
        "scores": scores,
        "score_maps": [f"{m}@{lay}" if lay else m for m, lay in CURVE_MAPS],
        "probe": speed,
        "speedup": speed["forward_ms"] / speed["forward_bf16_ms"],
    }


# --- synthesis step counts ----------------------------------------------------------------

#: Candidate step counts of the synthesis techniques against their paper settings
#: (``reportgen.techniques.synthesis.PAPER_STEPS``).
SYNTHESIS_CANDIDATES = {
    "filter_vis": (32, 48, 64, 96),
    "inversion": (32, 50, 100),
    "class_model": (48, 64, 128),
}
SYNTHESIS_FLOOR = 0.8  # median share of the paper setting's gain a fast setting must reach


def _gain_share(
    start: torch.Tensor, final: torch.Tensor, paper: torch.Tensor, lower_is_better: bool = False
) -> list[float]:
    """Per item, the share of the paper setting's improvement over the start that
    ``final`` reaches (1: as far as the paper setting, 0: no better than the start)."""
    sign = -1.0 if lower_is_better else 1.0
    gain, full = sign * (final - start), sign * (paper - start)
    return [float(g / f) if f > 0 else float("nan") for g, f in zip(gain, full, strict=True)]


def measure_synthesis(inp: Inputs, images: int = 2) -> dict:
    """How far each synthesis technique gets in fewer steps: the share of the paper
    setting's gain in its objective (channel mean for filter_vis, one channel per feature
    layer; relative feature error for inversion at the run's depths, on ``images``
    photos; class logit for class_model, the photos' predicted classes), median and
    minimum over the items, same seed."""
    from reportgen import learned, techniques
    from reportgen.techniques.synthesis import PAPER_STEPS

    spec, model = inp.spec, inp.model
    common = {"mean": spec.mean, "std": spec.std, "seed": 0}
    jobs = {
        "filter_vis": ({"units": [(layer, 0) for layer in spec.feature_layers]}, False),
        "class_model": ({"classes": sorted({int(c) for c in inp.targets[:images]})}, False),
    }
    out: dict[str, dict] = {}
    for name, (kwargs, lower) in jobs.items():
        out[name] = _synthesis_candidates(name, model, None, {**common, **kwargs}, lower)
    x = inp.x[:images]
    shares: dict[int, list[float]] = {}
    seconds: dict[int, float] = {}
    paper = techniques.get("inversion").settings("paper")
    for layer in learned.inversion_layers(list(spec.feature_layers)):
        res = _synthesis_candidates("inversion", model, x, {**common, "layer": layer}, True)
        for c in res["candidates"]:
            shares.setdefault(c["value"], []).extend(c["share"])
            seconds[c["value"]] = seconds.get(c["value"], 0.0) + c["seconds"]
    out["inversion"] = _summarise("inversion", shares, seconds, paper)
    for name, res in out.items():
        res["paper"] = PAPER_STEPS[name]
        _log(
            f"  {name}: "
            + ", ".join(
                f"{c['value']} steps median {c['median']:.3f} min {c['min']:.3f}"
                for c in res["candidates"]
            )
        )
    return out


def _synthesis_candidates(name: str, model, x, kwargs: dict, lower: bool) -> dict:
    from reportgen import techniques

    technique = techniques.get(name)
    paper = technique.settings("paper")
    run = lambda settings: technique.run(model, x, **{**kwargs, **settings})  # noqa: E731
    reference = run(paper)
    shares, seconds = {}, {}
    for steps in SYNTHESIS_CANDIDATES[name]:
        start = time.perf_counter()
        got = run({**technique.settings("fast"), "steps": steps})
        seconds[steps] = time.perf_counter() - start
        shares[steps] = _gain_share(got.start, got.final, reference.final, lower)
        if name == "class_model":  # the paper's size differs: gain from its own start
            full = reference.final - reference.start
            shares[steps] = [float(g / f) for g, f in zip(got.final - got.start, full, strict=True)]
    return _summarise(name, shares, seconds, paper)


def _summarise(name: str, shares: dict, seconds: dict, paper: dict) -> dict:
    candidates = [
        {
            "value": steps,
            "share": [round(v, 4) for v in vals],
            "median": float(np.nanmedian(vals)),
            "min": float(np.nanmin(vals)),
            "seconds": seconds[steps],
        }
        for steps, vals in shares.items()
    ]
    return {
        "setting": "steps",
        "paper_settings": paper,
        "candidates": candidates,
        "chosen": next((c["value"] for c in candidates if c["median"] >= SYNTHESIS_FLOOR), None),
    }


def table(results: dict) -> str:
    """The short table: setting, candidate, mean r, min r, seconds per image."""
    rows = [f"{'setting':<30} {'value':>6} {'mean r':>7} {'min r':>7} {'s/image':>8}"]
    for name, res in results.get("maps", {}).items():
        label = f"{name}.{res['setting']}"
        rows.append(
            f"{label:<30} {res['paper']:>6} {'paper':>7} {'':>7} "
            f"{res['paper_seconds_per_image']:>8.2f}"
        )
        for c in res["candidates"]:
            rows.append(
                f"{'':<30} {c['value']:>6} {c['mean_r']:>7.3f} {c['min_r']:>7.3f} "
                f"{c['seconds_per_image']:>8.2f}"
            )
        if "noise_floor" in res:
            nf = res["noise_floor"]
            rows.append(
                f"{'  noise floor (2 seeds)':<30} {res['paper']:>6} {nf['mean_r']:>7.3f} "
                f"{nf['min_r']:>7.3f} {'':>8}"
            )
    curves = results.get("curves")
    if curves:
        rows.append(
            f"{'curve_steps (ins/del)':<30} {curves['paper']:>6} {'paper':>7} {'':>7} "
            f"{curves['paper_seconds_per_image']:>8.2f}"
        )
        for c in curves["candidates"]:
            pr = "/".join(f"{c[m]['pearson']:.3f}" for m in MODES)
            sp = "/".join(f"{c[m]['spearman']:.3f}" for m in MODES)
            rows.append(f"{'':<30} {c['value']:>6} r {pr} rho {sp} {c['seconds_per_image']:>6.2f}s")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    names = [s.method for s in GRID]
    parser = argparse.ArgumentParser(prog="python -m evaluation.presets", description=__doc__)
    parser.add_argument("--images", type=int, default=None, help="default photos (all: 12)")
    parser.add_argument(
        "--rise-images", type=int, default=None, help="photos for RISE (default: --images)"
    )
    parser.add_argument(
        "--curve-images", type=int, default=None, help="photos for the curves (default: --images)"
    )
    parser.add_argument(
        "--floor-images",
        type=int,
        default=None,
        help="photos for RISE's seed noise floor (default: as many as --rise-images)",
    )
    parser.add_argument(
        "--only",
        default="all",
        help=f"comma-separated parts: curves, precision, synthesis, {', '.join(names)}; others "
        "are kept "
        "from --out",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    extra = ["curves", "precision", "synthesis"]
    parts = [*extra, *names] if args.only == "all" else args.only.split(",")
    unknown = set(parts) - {*extra, *names}
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}")

    inp = default_inputs(args.images)
    n = len(inp.ids)
    results: dict = {}
    if args.only != "all" and args.out.is_file():
        results = json.loads(args.out.read_text())
    results.update(
        {
            "what": "fast (shortened) settings against the paper settings on the default photos",
            "model": inp.spec.name,
            "input_size": list(inp.spec.input_size),
            "photos": inp.ids,
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "floor": FLOOR,
            "timing_note": "wall-clock per image (batch of 1), run under nice -n 15 on a "
            "shared 2-core machine: other work may inflate single numbers",
        }
    )
    results.setdefault("maps", {})
    command = " ".join(["nice -n 15 python -m evaluation.presets", *(argv or sys.argv[1:])])
    earlier = results.pop("commands", [])
    earlier += [results.pop("command")] if "command" in results else []
    results["commands"] = [*earlier, command]  # the runs that made each part

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")

    def partial(part: str) -> Progress:
        def keep(res: dict) -> None:
            if part == "curves":
                results["curves"] = res
            else:
                results["maps"][part] = res
            save()

        return keep

    by_name = {setting.method: setting for setting in GRID}
    order = [*(name for name in names if name != "rise"), "curves", "rise", "precision"]
    for part in (p for p in [*order, "synthesis"] if p in parts):  # cheap first
        if part == "synthesis":
            _log("synthesis step counts against the paper's")
            results["synthesis"] = measure_synthesis(inp)
            save()
            continue
        if part == "precision":
            images = min(n, args.rise_images or n)
            _log(f"bfloat16 against float32 on {images} photos")
            results["precision"] = measure_precision(inp, images)
            save()
            continue
        if part == "curves":
            images = min(n, args.curve_images or n)
            _log(f"curves on {images} photos")
            results["curves"] = measure_curves(inp, images, partial("curves"))
            if images < n:
                results["curves"]["note"] = f"on the first {images} of the {n} photos (CPU time)"
            save()
            continue
        images = min(n, args.rise_images or n) if part == "rise" else n
        floor_images = min(images, args.floor_images or images) if part == "rise" else images
        _log(f"{part} on {images} photos")
        res = measure_setting(inp, by_name[part], images, floor_images, partial(part))
        if images < n:
            res["note"] = f"measured on the first {images} of the {n} photos (CPU time)"
        if floor_images < images:
            res["noise_floor"]["note"] = f"on the first {floor_images} photos (CPU time)"
        results["maps"][part] = res
        save()
    size = tuple(inp.spec.input_size)
    for name, res in results["maps"].items():
        key = res["setting"]
        res["same_seed"] = SHARED_DRAWS.get(name, "")
        res["paper_passes_per_image"] = passes_per_image(
            name, {**res["fixed"], key: res["paper"]}, size
        )
        for c in res["candidates"]:
            c["passes_per_image"] = passes_per_image(name, {**res["fixed"], key: c["value"]}, size)
    if "curves" in results:
        curves = results["curves"]
        curves["paper_passes_per_image"] = passes_per_image("curves", {"steps": 100}, size)
        for c in curves["candidates"]:
            c["passes_per_image"] = passes_per_image("curves", {"steps": c["value"]}, size)
    results["chosen"] = {
        **{name: res["chosen"] for name, res in results["maps"].items()},
        **({"curve_steps": results["curves"]["chosen"]} if "curves" in results else {}),
    }
    save()
    print(table(results))
    print("smallest candidate reaching", FLOOR, json.dumps(results["chosen"]))
    print("written", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
