"""How the insertion / deletion scores of a finished run change with the curves' step count:
every scored map of every image, re-scored at each candidate count and at the paper's 100
steps, in the run's own way (folded model, its memory layout and forward precision,
batched passes). What matters to a reader is the leaderboard, so besides the AUCs' rank
correlation it compares the methods' mean AUCs: their order, and how many pairs of
methods swap places.

    python -m evaluation.presets_run_curves site --steps 6,8,10,12 --out uniform.json
    python -m evaluation.presets_run_curves site --steps 8x1.5,10x1.5,8x2,12 \
        --reference uniform.json --out spaced.json

(``8x1.5``: 8 steps with spacing 1.5, ``evaluation.metrics.curve_plan``; the committed
``evaluation/bench/presets/run-curves-cpu-2core.json`` joins the two.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from evaluation import metrics as M
from evaluation.presets_agreement import CURVE_PAPER_STEPS, MODES, auc_stats
from evaluation.presets_settings import default_inputs
from reportgen.batcher import Batcher
from reportgen.context import make_probabilities
from reportgen.models import folded_copy
from reportgen.probe import native_bf16
from reportgen.store import Store
from reportgen.techniques.cam import upsample


def run_maps(site: Path) -> tuple[list[str], list[str], dict[str, int]]:
    """The run's images, its scored map keys (``method@layer``) and each image's target."""
    metrics = pd.read_csv(site / "data" / "metrics.csv")
    scored = metrics[metrics.metric == "insertion_auc"]
    keys = sorted({f"{m}@{layer}" for m, layer in zip(scored.method, scored.layer, strict=True)})
    targets = metrics[metrics.metric == "target"].groupby("image").value.first()
    images = list(dict.fromkeys(scored.image))
    return images, keys, {image: int(targets[image]) for image in images}


Schedule = tuple[int, float]  # (steps, spacing): see evaluation.metrics.curve_plan


def parse_schedules(text: str) -> list[Schedule]:
    """``"8x2,12"`` -> ``[(8, 2.0), (12, 1.0)]``: steps, and their spacing (default 1)."""
    out = []
    for part in text.split(","):
        steps, _, spacing = part.strip().partition("x")
        out.append((int(steps), float(spacing or 1)))
    return out


def label(schedule: Schedule) -> str:
    steps, spacing = schedule
    return str(steps) if spacing == 1 else f"{steps}x{spacing:g}"


def curve_aucs(site: Path, schedules: Sequence[Schedule], rows: int = 8, limit=None) -> dict:
    """AUC per (schedule label, mode) of every (image, map) pair, image-major, map-minor."""
    images, keys, targets = run_maps(site)
    images = images[:limit]
    inp = default_inputs()
    order = {image: k for k, image in enumerate(inp.ids)}
    folded, _ = folded_copy(inp.model, tuple(inp.spec.input_size))
    bf16 = torch.bfloat16 if native_bf16(torch.device("cpu")) else None  # as a run decides
    mean = torch.tensor(inp.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(inp.spec.std).view(1, 3, 1, 1)
    probabilities = make_probabilities(
        folded.to(memory_format=torch.channels_last),
        mean,
        std,
        torch.device("cpu"),
        rows,
        torch.channels_last,
        bf16,
    )
    store = Store(site)
    aucs: dict[str, dict[str, list[float]]] = {label(s): {m: [] for m in MODES} for s in schedules}
    seconds: dict[str, float] = defaultdict(float)
    for image in images:
        pixels = inp.pixels[order[image]]
        blurred = M.substrate_image(pixels, None, "insertion")
        size = inp.spec.input_size
        up = [
            upsample(torch.from_numpy(store.load_map(image, k))[None], size)[0].numpy()
            for k in keys
        ]
        for n, spacing in schedules:
            start = time.perf_counter()
            batcher = Batcher(probabilities, rows)
            found: dict[str, list[float]] = {m: [0.0] * len(keys) for m in MODES}
            for j, saliency in enumerate(up):
                step = M.curve_step(saliency.shape, n)
                for mode in MODES:
                    substrate = blurred if mode == "insertion" else None
                    plan = M.curve_plan(
                        pixels, saliency, mode=mode, step=step, substrate=substrate, spacing=spacing
                    )

                    def done(out, j=j, mode=mode, plan=plan, c=targets[image], found=found):
                        found[mode][j] = plan.curve(out[:, c]).auc

                    batcher.add(plan.images(), done)
            batcher.flush()
            seconds[label((n, spacing))] += time.perf_counter() - start
            for mode in MODES:
                aucs[label((n, spacing))][mode] += found[mode]
        print(f"{image}: done", flush=True)
    return {"images": images, "keys": keys, "aucs": aucs, "seconds": dict(seconds)}


def leaderboard_agreement(fast: np.ndarray, paper: np.ndarray, keys: list[str]) -> dict:
    """``[images, maps]`` AUCs: each map's mean over images, ranked, against the paper's."""
    a, b = fast.mean(0), paper.mean(0)
    pairs = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))]
    swapped = [(keys[i], keys[j]) for i, j in pairs if np.sign(a[i] - a[j]) != np.sign(b[i] - b[j])]
    per_image = [stats.spearmanr(f, p).statistic for f, p in zip(fast, paper, strict=True)]
    return {
        "spearman_means": float(stats.spearmanr(a, b).statistic),
        "kendall_means": float(stats.kendalltau(a, b).statistic),
        "pairs_swapped": len(swapped),
        "pairs": len(pairs),
        "swapped": [" / ".join(p) for p in swapped],
        # how far apart the paper setting put the methods that swapped places
        "largest_swapped_gap": max(
            (float(abs(b[keys.index(x)] - b[keys.index(y)])) for x, y in swapped), default=0.0
        ),
        "per_image_spearman_mean": float(np.mean(per_image)),
        "per_image_spearman_min": float(np.min(per_image)),
        "mean_abs_diff_means": float(np.abs(a - b).mean()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="a finished run's output folder")
    parser.add_argument(
        "--steps", default="6,8,12", help="candidates: STEPS or STEPSxSPACING, comma-separated"
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="an earlier result of this command on the same run: its 100-step AUCs are reused",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    args = parser.parse_args(argv)
    candidates = parse_schedules(args.steps)
    paper_label = label((CURVE_PAPER_STEPS, 1.0))
    earlier = json.loads(args.reference.read_text()) if args.reference else None
    schedules = candidates if earlier else [(CURVE_PAPER_STEPS, 1.0), *candidates]
    found = curve_aucs(args.site, schedules, limit=args.limit)
    if earlier:
        if (
            earlier["images"][: len(found["images"])] != found["images"]
            or earlier["maps"] != found["keys"]
        ):
            raise SystemExit(f"--reference {args.reference} scored other images or maps")
        k = len(found["images"]) * len(found["keys"])
        found["aucs"][paper_label] = {m: earlier["aucs"][paper_label][m][:k] for m in MODES}
        found["seconds"][paper_label] = earlier["seconds"][paper_label]
    n, keys = len(found["images"]), found["keys"]
    result = {
        "what": "insertion / deletion AUCs of a run's maps at fewer steps against 100 steps",
        "site": str(args.site),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "images": found["images"],
        "maps": keys,
        "precision": f"{'bfloat16 autocast' if native_bf16(torch.device('cpu')) else 'float32'}"
        ", folded model, channels-last, 8 rows a pass",
        "seconds": found["seconds"],
        "candidates": [],
        "aucs": found["aucs"],
    }
    paper = found["aucs"][paper_label]
    for schedule in candidates:
        entry: dict = {"value": label(schedule), "steps": schedule[0], "spacing": schedule[1]}
        for mode in MODES:
            fast = np.asarray(found["aucs"][label(schedule)][mode]).reshape(n, len(keys))
            ref = np.asarray(paper[mode]).reshape(n, len(keys))
            entry[mode] = {
                **auc_stats(fast.ravel(), ref.ravel()),
                "leaderboard": leaderboard_agreement(fast, ref, keys),
            }
            board = entry[mode]["leaderboard"]
            print(
                f"{label(schedule)} {mode}: pooled rho {entry[mode]['spearman']:.4f}, means rho "
                f"{board['spearman_means']:.4f}, per image rho "
                f"{board['per_image_spearman_mean']:.3f} "
                f"(min {board['per_image_spearman_min']:.3f}), pairs swapped "
                f"{board['pairs_swapped']} of {board['pairs']} (largest gap "
                f"{board['largest_swapped_gap']:.4f})",
                flush=True,
            )
        result["candidates"].append(entry)
    run = json.loads((args.site / "data" / "run.json").read_text())
    ran = label((run["curve_steps"], run.get("curve_spacing", 1.0)))
    if ran in found["aucs"]:  # the re-scoring reproduces the run's own scores
        metrics = pd.read_csv(args.site / "data" / "metrics.csv")
        scores = metrics.set_index(["image", "method", "layer", "metric"]).value
        result["run_check"] = {
            mode: float(
                np.abs(
                    np.subtract(
                        [
                            scores[(image, *key.split("@", 1), f"{mode}_auc")]
                            for image in found["images"]
                            for key in keys
                        ],
                        found["aucs"][ran][mode],
                    )
                ).max()
            )
            for mode in MODES
        }
        print(f"max |AUC - run's AUC| ({ran} steps): {result['run_check']}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
