"""Per-technique wall time, synchronised with the device so GPU work is counted."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch


class Timer:
    """Accumulates seconds and image counts per (method, layer); failed calls are not counted.

    The first call of each (method, layer) is a warm-up (lazy initialisation,
    allocator growth, cuDNN search) and is left out when any later call exists.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.calls: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, method: str, layer: str, images: int):
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.calls[(method, layer)].append((time.perf_counter() - start, images))

    def rows(self, model: str) -> list[dict]:
        rows = []
        for (method, layer), calls in self.calls.items():
            timed = calls[1:] if len(calls) > 1 else calls
            seconds = sum(s for s, _ in timed)
            images = sum(n for _, n in timed)
            rows.append(
                {
                    "model": model,
                    "method": method,
                    "layer": layer,
                    "device": self.device.type,
                    "threads": torch.get_num_threads(),
                    "batches": len(timed),
                    "images": images,
                    "warmup_excluded": len(calls) > 1,
                    "total_seconds": seconds,
                    "ms_per_image": 1000 * seconds / max(images, 1),
                }
            )
        return rows
