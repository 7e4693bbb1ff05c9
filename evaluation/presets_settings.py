"""The measurement of the techniques' shortened settings and of the curves' step counts
on the default photos (the grid, the inputs, per-image progress): ``evaluation.presets``
runs it and writes the results."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from evaluation.presets_agreement import (
    CURVE_PAPER_STEPS,
    MODES,
    Probabilities,
    auc_stats,
    compute_maps,
    curve_aucs,
    pearson,
    timed_maps,
)

FLOOR = 0.95  # mean r (maps) or Spearman (AUCs) a fast setting must reach


@dataclass(frozen=True)
class Setting:
    """One technique's shortened setting: the values tried against the paper's value."""

    method: str
    key: str
    paper: int | None  # None: the technique's unshortened default (e.g. every channel)
    candidates: tuple[int, ...]
    fixed: Mapping[str, object] | None = None  # held equal in fast and paper runs
    fast: Mapping[str, object] | None = None  # in the shortened runs only (another estimator)
    name: str = ""  # the part's name when a method has two (default: the method's)

    @property
    def part(self) -> str:
        return self.name or self.method


#: The grid: RISE masks, SmoothGrad samples, IG steps, occlusion stride (window 32),
#: Score-CAM's channels at Lite0's bn2.
GRID: tuple[Setting, ...] = (
    Setting("smoothgrad", "samples", 50, (8, 16, 25), {"seed": 0}),
    Setting("integrated_gradients", "steps", 50, (8, 16, 25)),
    Setting("gradient_shap", "samples", 50, (8, 16, 25), {"seed": 0}),
    Setting("occlusion", "stride", 16, (32,), {"window": 32}),
    Setting("rise", "masks", 4000, (250, 500, 1000), {"seed": 0}),
    Setting(
        "rise", "masks", 4000, (250, 500, 1000), {"seed": 0}, {"centred": True}, "rise_centred"
    ),
    Setting("scorecam", "channels", None, (64, 128, 256), {"layer": "bn2"}),
    Setting("extremal_perturbation", "iterations", 800, (50, 64, 80, 100, 200)),
)
#: What "same seed" shares between a fast run and the paper run (read from the code).
SHARED_DRAWS = {
    "smoothgrad": "nested: samples=k uses exactly the first k of the paper run's 50 noise "
    "draws (one seeded generator), so agreement includes the shared draws; the noise floor "
    "(another seed, 50 samples) is the paper setting's own reproducibility",
    "rise_centred": "as for rise; the shortened runs use the centred estimator",
    "rise": "partly nested: masks=k shares the paper run's first k grids (drawn first from "
    "the seeded generator) but not their random shifts (drawn after all grids)",
    "integrated_gradients": "deterministic: Gauss-Legendre nodes, no randomness",
    "gradient_shap": "nested: samples=k uses exactly the first k of the paper run's 50 draws "
    "(reference, point on the path, noise: one seeded generator); the noise floor is the "
    "50-sample setting with another seed",
    "occlusion": "deterministic: no randomness",
    "scorecam": "deterministic: the K channels of largest spatial variance, a subset of all",
    "extremal_perturbation": "deterministic: the same optimisation, shortened with the "
    "paper's schedule compressed into fewer steps; the noise floor is the paper setting on "
    "the mirrored photo, mirrored back (the jitter's flips one step out of phase)",
}
#: The noise floor: the paper setting against itself with another seed.
FLOOR_SEEDS = {"rise": (0, 1), "smoothgrad": (0, 1), "gradient_shap": (0, 1)}
#: ... or, for a method without draws, its paper setting on the left-right mirrored photo,
#: mirrored back (the model, trained with flips, is nearly symmetric)
FLOOR_MIRRORED = {"extremal_perturbation"}
CURVE_CANDIDATES = (8, 12, 16)
#: Cheap maps scored by the curves (method, CAM layer): the check is of the metric.
CURVE_MAPS = (
    ("gradcam", "bn2"),
    ("saliency", None),
    ("baseline_centre", None),
    ("baseline_random", None),
    ("eigencam", "bn2"),
)


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
    """Model, photos, inputs and predicted targets as the run engine makes them
    (``batch.load_batch``; CPU)."""
    from reportgen import data, sources
    from reportgen.context import make_probabilities
    from reportgen.models import get_spec, load_model

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
_PAPER_MAPS: dict[tuple, tuple[torch.Tensor, float]] = {}  # (method, settings, image)


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
    seeds = FLOOR_SEEDS.get(setting.part)  # one floor per method: its paper setting
    mirrored = setting.part in FLOOR_MIRRORED

    def summary(done: int) -> dict:
        result = {
            "method": setting.method,
            "setting": setting.key,
            "paper": setting.paper,
            "fixed": fixed,
            **({"fast": dict(setting.fast)} if setting.fast else {}),
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
                "what": f"{setting.key}={setting.paper}, "
                + (
                    "the mirrored photo's map, mirrored back"
                    if mirrored
                    else f"seed {seeds[0]} vs seed {seeds[1]}"
                ),
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
        key = (setting.method, repr(sorted(paper_settings.items())), i)
        if key not in _PAPER_MAPS:  # two parts of one method share its paper maps
            _PAPER_MAPS[key] = timed_maps(inp.model, x, t, setting.method, paper_settings, **extra)
        paper, seconds = _PAPER_MAPS[key]
        paper_secs.append(seconds)
        line = [f"paper {seconds:.1f}s"]
        for value in setting.candidates:
            fast, seconds = timed_maps(
                inp.model,
                x,
                t,
                setting.method,
                {**fixed, **(setting.fast or {}), setting.key: value},
                **extra,
            )
            rs[value].append(pearson(fast[0], paper[0]))
            secs[value].append(seconds)
            line.append(f"{value}: r={rs[value][-1]:.3f} {seconds:.1f}s")
        if (seeds or mirrored) and i < floor_images:
            if mirrored:
                again, _ = timed_maps(
                    inp.model, x.flip(3), t, setting.method, paper_settings, **extra
                )
                again = again.flip(2)
            else:
                other = {**paper_settings, "seed": seeds[1]}
                again, _ = timed_maps(inp.model, x, t, setting.method, other, **extra)
            floor_rs.append(pearson(again[0], paper[0]))
            line.append(f"floor: r={floor_rs[-1]:.3f}")
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
