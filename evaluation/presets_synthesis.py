"""How far the synthesis techniques get in fewer steps than the paper's: the share of
the paper setting's gain in each objective (the synthesis part of ``evaluation.presets``)."""

from __future__ import annotations

import time

import numpy as np
import torch

from evaluation.presets_settings import Inputs, _log

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
