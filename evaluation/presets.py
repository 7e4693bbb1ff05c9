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
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

# The measurement lives in the sibling modules
from evaluation.presets_agreement import (
    MODES,
    passes_per_image,
)
from evaluation.presets_precision import measure_precision
from evaluation.presets_settings import (
    FLOOR,
    GRID,
    SHARED_DRAWS,
    Progress,
    _log,
    default_inputs,
    measure_curves,
    measure_setting,
)
from evaluation.presets_synthesis import measure_synthesis

OUT = Path(__file__).parent / "bench" / "presets" / "cpu-2core.json"


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
            floor = f"  noise floor ({'mirrored' if 'mirror' in nf['what'] else '2 seeds'})"
            rows.append(
                f"{floor:<30} {res['paper']:>6} {nf['mean_r']:>7.3f} {nf['min_r']:>7.3f} {'':>8}"
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
    names = [s.part for s in GRID]
    parser = argparse.ArgumentParser(prog="python -m evaluation.presets", description=__doc__)
    parser.add_argument("--images", type=int, default=None, help="default photos (all: 12)")
    parser.add_argument(
        "--rise-images",
        type=int,
        default=None,
        help="photos for RISE and extremal perturbation (default: --images)",
    )
    parser.add_argument(
        "--curve-images", type=int, default=None, help="photos for the curves (default: --images)"
    )
    parser.add_argument(
        "--floor-images",
        type=int,
        default=None,
        help="photos for the costly methods' noise floor (default: as many as --rise-images; 0: "
        "none, the part keeps the floor measured before)",
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

    by_name = {setting.part: setting for setting in GRID}
    costly = ("rise", "rise_centred", "extremal_perturbation")
    order = [*(name for name in names if name not in costly), "curves", *costly, "precision"]
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
        images = min(n, args.rise_images or n) if part in costly else n
        floor_images = images if args.floor_images is None else args.floor_images
        floor_images = min(images, floor_images) if part in costly else images
        _log(f"{part} on {images} photos")
        before = results["maps"].get(part, {}).get("noise_floor")
        res = measure_setting(inp, by_name[part], images, floor_images, partial(part))
        if before and "noise_floor" not in res:  # --floor-images 0: the earlier command's
            res["noise_floor"] = {**before, "note": "kept from an earlier command"}
        if images < n:
            res["note"] = f"measured on the first {images} of the {n} photos (CPU time)"
        if 0 < floor_images < images and "noise_floor" in res:
            res["noise_floor"]["note"] = f"on the first {floor_images} photos (CPU time)"
        results["maps"][part] = res
        save()
    size = tuple(inp.spec.input_size)
    for name, res in results["maps"].items():
        key, method = res["setting"], res["method"]
        res["same_seed"] = SHARED_DRAWS.get(name, "")
        res["paper_passes_per_image"] = passes_per_image(
            method, {**res["fixed"], key: res["paper"]}, size
        )
        for c in res["candidates"]:
            c["passes_per_image"] = passes_per_image(
                method, {**res["fixed"], key: c["value"]}, size
            )
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
