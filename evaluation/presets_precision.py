"""bfloat16 against float32 for what the fast preset runs in bfloat16 (forward-only
techniques' maps, the metrics' scores): the precision part of ``evaluation.presets``."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from evaluation import metrics as M
from evaluation.presets_agreement import MODES, auc_stats, compute_maps, curve_aucs, pearson
from evaluation.presets_settings import CURVE_MAPS, Inputs, _log

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
    of the ``CURVE_MAPS`` maps (insertion / deletion AUCs at 12 even steps, the fast preset's
    when this was measured; Average Drop per map, in points). The bfloat16 side runs on the
    copy with batch norms folded, as a run's forward-only passes do. Also the speed of each
    precision (the probe)."""
    from reportgen.context import make_probabilities
    from reportgen.models import folded_copy
    from reportgen.probe import per_row_times, probe

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
    size = tuple(inp.spec.input_size)  # both precisions at the probe's shape, as a run's end
    speed.update(per_row_times(inp.model, size, cpu, speed["layout"], speed["rows"], fast))
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
