"""A whole run: images per second, and its efficiency (the time the forward and backward
passes it needs would take at the plain speed of the model, divided by the time it took).

At full size (``reportgen bench``): every technique and metric at their defaults on
BATCH embedded photos; the smoke size uses the tests' cheap settings.
"""

from __future__ import annotations

import json
import time

import torch

from reportgen import pipeline
from reportgen.config import RunConfig

from .conftest import BATCH, SIZE

CHEAP = {
    "rise": {"masks": 32},
    "smoothgrad": {"samples": 3},
    "integrated_gradients": {"steps": 4},
    "occlusion": {"window": 56, "stride": 56},
}


def seconds_per_row(model: torch.nn.Module, x: torch.Tensor, backward: bool) -> float:
    """Median time of one row through the model: inference only, or forward + backward
    to the input (what a gradient technique needs at least)."""
    times = []
    for _ in range(5):
        began = time.perf_counter()
        if backward:
            inp = x.detach().clone().requires_grad_(True)
            model(inp).max(1).values.sum().backward(inputs=[inp])
        else:
            with torch.inference_mode():
                model(x)
        times.append(time.perf_counter() - began)
    return sorted(times)[len(times) // 2] / x.shape[0]


def test_full_run(benchmark, lite0, inputs, tmp_path_factory):
    model, _ = lite0
    x, _ = inputs
    out = tmp_path_factory.mktemp("bench-run")
    config = RunConfig(
        out=str(out),
        limit=BATCH,
        batch_size=8,
        methods="all" if SIZE == "full" else "gradcam,gradcampp,saliency,occlusion,rise",
        options={} if SIZE == "full" else CHEAP,
        curve_steps=16 if SIZE == "full" else 4,
        device=str(x.device.type),
    )
    began = time.perf_counter()
    benchmark.pedantic(lambda: pipeline.run(config, progress=False), rounds=1, iterations=1)
    wall = time.perf_counter() - began
    run = json.loads((out / "data" / "run.json").read_text())
    forward = seconds_per_row(model, x, backward=False)
    gradient = seconds_per_row(model, x, backward=True)
    plain = run["forward_rows"] - run["gradient_rows"]
    needed = plain * forward + run["gradient_rows"] * gradient
    benchmark.group = "full run"
    benchmark.extra_info.update(
        {
            "who": "ours",
            "images": BATCH,
            "images_per_second": BATCH / wall,
            "forward_rows": run["forward_rows"],
            "gradient_rows": run["gradient_rows"],
            "needed_seconds": needed,
            "wall_seconds": wall,
            "efficiency": needed / wall,
            "batch": BATCH,
            "device": x.device.type,
            "threads": torch.get_num_threads(),
            "size": SIZE,
        }
    )
    assert run["images"] == BATCH and run["forward_rows"] > BATCH
