"""The run's options checked and parsed: every refusal names the option and what to do.

Imported by the engine (``context``), which calls these once, before any image is read.
"""

from __future__ import annotations

import sys

import torch

from evaluation import catalogue

from .capture import resolve_layer
from .hints import not_a_feature_map
from .layout import layout_of, prefix_tokens
from .models import list_layers

# --metrics names -> what each adds to metrics.csv per image (evaluation/catalogue.py)
METRIC_GROUPS = {group: catalogue.group_help(group) for group in catalogue.GROUPS}
DEFAULT_METRICS = catalogue.DEFAULT_GROUPS
# --quality presets of the metrics (the techniques' are in their registrations). Curve steps:
# "paper" moves 1 % of the pixels a step (100 steps). "fast": 8 steps crowded at the start
# (point i at (i/8)^1.5 of the pixels, where the curves move most), measured on every scored
# map of the 12 default photos against 100 steps: CURVE_STEPS_WHY, docs/performance.md.
# Forward passes that need no gradient (the metrics' and the perturbation techniques' marked
# bf16) run in "forward" precision: fast: bfloat16 where the device computes it natively
# (RISE 2.2x faster than float32 on a 2-core AVX-512 BF16 CPU; agreement: docs/performance.md).
# Faithfulness correlation: "paper" 100 random subsets per image (Bhatt et al., Quantus's
# default), "fast" 50 (shared by every map of the image: 50 rows per image in all).
# Sanity check: "paper" explains at every step of the randomisation (one block more each);
# "fast" at every third step, the first and last always: the blocks are still randomised
# one by one, so every point it draws is the full cascade's (fewer points, none moved;
# Lite0's 19 steps: 7 points instead of 19). The costly methods (hundreds of passes a map,
# on the first image): "paper" after the first step (the logits) and the last; "fast" after
# the last only, the check's verdict (the same model: each block's weights are drawn from
# its own seed), in half the time (Extremal Perturbation alone took 11 s a step).
METRIC_PRESETS = {
    "fast": {
        "curve_steps": 8,
        "curve_spacing": 1.5,
        "forward": "bf16",
        "correlation_runs": 50,
        "sensitivity_draws": 10,
        "sanity_every": 3,
        "sanity_costly_steps": 1,
    },
    "paper": {
        "curve_steps": 100,
        "curve_spacing": 1.0,
        "forward": "fp32",
        "correlation_runs": 100,
        "sensitivity_draws": 200,
        "sanity_every": 1,
        "sanity_costly_steps": 2,
    },
}
CURVE_STEPS_WHY = (
    "8 steps in the fast preset, crowded at the start (point i at (i/8)^1.5 of the pixels): "
    "on every scored map of the 12 default photos the AUCs rank as 100 steps do (Spearman "
    "0.995 insertion, 0.986 deletion; the methods' means 0.990 and 0.996), where 12 even "
    "steps, a third more passes, reached 0.999 and 0.961"
)


TOPK_MAX = 10  # --target topk:K: K maps per image at most


class OptionError(ValueError):
    """A command-line value that cannot be used (exit status 2)."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise OptionError(f"--device '{name}' is unknown; valid: auto, cpu, cuda")
    return torch.device(name)


def check_layers(model, spec, names: list[str]) -> None:
    """Every CAM layer exists and its output reads as a spatial map (its own layout, or
    ``--reshape``'s), or a clear error."""
    shapes = {layer.name: layer for layer in list_layers(model, spec)}
    for name in names:
        resolve_layer(model, name)
        if name not in shapes:
            raise OptionError(f"--layers: {not_a_feature_map(name, 'no tensor')}")
        shape = shapes[name].shape
        try:
            layout = layout_of(name, shape, spec.input_size, spec.reshape, prefix_tokens(model), 1)
        except ValueError as err:
            raise OptionError(f"--layers: {err}") from err
        if layout.positions(shape) == 1:  # a pooled output: every CAM would be one number
            raise OptionError(f"--layers: {not_a_feature_map(name, shape)}")


def forward_dtype(quality: str, probe: dict) -> torch.dtype | None:
    """bfloat16 for the forward-only passes where the preset allows it and the device
    computes in bfloat16 natively (``probe.native_bf16``, recorded by the probe: a fixed
    property, so runs on one machine agree; the probe's timed speed-up is reported, not
    used); None (float32) otherwise."""
    if METRIC_PRESETS[quality]["forward"] != "bf16" or not probe.get("bf16_native"):
        return None
    return torch.bfloat16


def parse_metrics(text: str) -> tuple[str, ...]:
    """``--metrics``: ``default``, ``all`` or a comma-separated list of groups."""
    if text == "default":
        return DEFAULT_METRICS
    if text == "all":
        return tuple(METRIC_GROUPS)
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if name not in METRIC_GROUPS:
            raise OptionError(
                f"--metrics '{name}' is unknown; valid: default, all, {', '.join(METRIC_GROUPS)}"
            )
    return names


def parse_class(text: str, classes: int, option: str, others: str = "") -> int:
    """A class id in range, or an error naming the option (and its ``others`` values)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < classes:
        raise OptionError(
            f"{option} '{text.strip()}' is not a class of this model: use {others}a class id "
            f"from 0 to {classes - 1}"
        )
    return value


def parse_target(text: str, classes: int) -> str | int:
    """``--target``: ``predicted``, ``label``, ``labels``, ``topk:K`` or a class id in range."""
    if text in ("predicted", "label", "labels"):
        return text
    if text.startswith("topk:"):
        k = text[len("topk:") :]
        if not (k.isdigit() and 1 <= int(k) <= min(classes, TOPK_MAX)):
            raise OptionError(
                f"--target '{text}': K must be a whole number from 1 to {min(classes, TOPK_MAX)} "
                "(a map per image and each of its K most probable classes)"
            )
        return f"topk:{int(k)}"
    return parse_class(text, classes, "--target", "predicted, label, labels, topk:K, or ")


def warn_other_version(earlier: dict, now: dict, where) -> bool:
    """Warn (stderr) when results in ``where`` were made by another reportgen version or
    commit than ``now``'s (``run.json``'s ``versions``): mixing them may mix definitions."""
    keys = ("reportgen", "commit")
    changed = [
        f"{key} {earlier.get(key)!r} -> {now.get(key)!r}"
        for key in keys
        if earlier.get(key) != now.get(key)
    ]
    if changed:
        print(
            f"reportgen: warning: '{where}' was made by another reportgen "
            f"({'; '.join(changed)}): results of the two may differ in definitions",
            file=sys.stderr,
        )
    return bool(changed)


def check_same_settings(earlier: dict, now: dict, out) -> None:
    """Refuse to mix results of different settings in one folder, naming what differs."""
    changed = [
        f"{key} {earlier.get(key)!r} -> {now.get(key)!r}"
        for key in sorted(set(earlier) | set(now))
        if earlier.get(key) != now.get(key)
    ]
    if changed:
        raise OptionError(
            f"'{out}' holds a run with other settings ({'; '.join(changed)}): use the same "
            "options to continue it, or another --out (or no --resume) to start afresh"
        )


def numbers(text: str | None, option: str, kind: type, counts: tuple[int, ...], positive=False):
    """``"a,b,c"`` as a tuple of ``kind`` with one of ``counts`` values (one side stands for
    a square input); None when not given."""
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in counts or (positive and min(values) <= 0):
        sizes = " or ".join(str(c) for c in counts)
        raise OptionError(
            f"{option} '{text}': give {sizes} comma-separated {'positive ' if positive else ''}"
            f"{'integers' if kind is int else 'numbers'}"
        )
    return values * 2 if len(values) == 1 else values
