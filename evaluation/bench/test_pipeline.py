"""A whole run: images per second, its efficiency (its floor, the model rows it ran at the
start-up probe's per-row times, divided by its wall time: docs/performance.md) and the
probe's results on this device.

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


def test_full_run(benchmark, lite0, inputs, tmp_path_factory):
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
    phases = json.loads((out / "data" / "phases.json").read_text())
    benchmark.group = "full run"
    benchmark.extra_info.update(
        {
            "who": "ours",
            "images": BATCH,
            "images_per_second": BATCH / wall,
            "forward_rows": run["forward_rows"],
            "gradient_rows": run["gradient_rows"],
            "needed_seconds": phases["floor_seconds"],  # the run's floor (docs/performance.md)
            "wall_seconds": wall,
            "efficiency": phases["efficiency"],
            "coverage": phases["coverage"],
            # this device's per-row times by layout, rows, precision (start and end's best)
            "probe": phases["probe"],
            "forward_precision": run["forward_precision"],
            "batch": BATCH,
            "device": str(config.device),
            "threads": torch.get_num_threads(),
            "size": SIZE,
        }
    )
    assert run["images"] == BATCH and run["forward_rows"] > BATCH
    assert phases["coverage"] > 0.9 and 0 < phases["efficiency"]
