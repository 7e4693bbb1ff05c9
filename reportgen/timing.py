"""Per-technique wall time, synchronised with the device so GPU work is counted."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch


class Timer:
    """Times one call at a time; ``last`` holds the latest ``{seconds, images, warmup}``.

    The first call of each (method, layer) in a process is a warm-up (lazy
    initialisation, allocator growth, cuDNN search); ``timing_rows`` leaves it
    out when any later call exists. Failed calls set nothing.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.seen: set[tuple[str, str]] = set()
        self.last: dict = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, method: str, layer: str, images: int):
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.last = {
            "method": method,
            "layer": layer,
            "seconds": time.perf_counter() - start,
            "images": images,
            "warmup": (method, layer) not in self.seen,
        }
        self.seen.add((method, layer))


def timing_rows(calls: list[dict], model: str, device: str, threads: int) -> list[dict]:
    """One row per (method, layer) from ``Timer.last`` records, warm-ups left out when
    any other call exists (a resumed or sharded run has one warm-up per process)."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for call in calls:
        grouped[(call["method"], call["layer"])].append(call)
    rows = []
    for (method, layer), group in grouped.items():
        warm = [c for c in group if not c["warmup"]]
        timed = warm or group
        seconds = sum(c["seconds"] for c in timed)
        images = sum(c["images"] for c in timed)
        rows.append(
            {
                "model": model,
                "method": method,
                "layer": layer,
                "device": device,
                "threads": threads,
                "batches": len(timed),
                "images": images,
                "warmup_excluded": len(timed) < len(group),
                "total_seconds": seconds,
                "ms_per_image": 1000 * seconds / max(images, 1),
            }
        )
    return rows
