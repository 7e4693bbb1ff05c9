"""Per-technique time, forward passes and peak memory, measured the way PERF.md says:
CUDA events on a GPU, a synchronised clock on CPU, the first call left out as a warm-up."""

from __future__ import annotations

import resource
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch import nn


class PassCounter:
    """Counts the rows that go through the model's forward (images and perturbed copies),
    and how many of them were recorded for a backward pass."""

    def __init__(self, model: nn.Module):
        self.rows = 0
        self.grad_rows = 0
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, _module, args) -> None:
        if args and isinstance(args[0], torch.Tensor):
            self.rows += args[0].shape[0]
            if torch.is_grad_enabled():
                self.grad_rows += args[0].shape[0]


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (it only rises)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)  # bytes on macOS, KiB on Linux


class Timer:
    """Times one call at a time; ``last`` holds the latest ``{method, layer, seconds, images,
    warmup, passes, peak_mb}``.

    The first call of each (method, layer) in a process is a warm-up (lazy
    initialisation, allocator growth, cuDNN search); ``timing_rows`` leaves it
    out when any later call exists. Failed calls set nothing. ``passes`` is forward
    rows per image (needs a ``PassCounter``); ``peak_mb`` the GPU's peak allocation.
    """

    def __init__(self, device: torch.device, counter: PassCounter | None = None):
        self.device = torch.device(device)
        self.counter = counter
        self.seen: set[tuple[str, str]] = set()
        self.last: dict = {}

    @contextmanager
    def __call__(self, method: str, layer: str, images: int):
        cuda = self.device.type == "cuda"
        rows = self.counter.rows if self.counter else 0
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
        began = time.perf_counter()
        yield
        if cuda:
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            seconds = time.perf_counter() - began
        self.last = {
            "method": method,
            "layer": layer,
            "seconds": seconds,
            "images": images,
            "warmup": (method, layer) not in self.seen,
            "passes": (self.counter.rows - rows) / images if self.counter else None,
            "peak_mb": torch.cuda.max_memory_allocated(self.device) / 2**20 if cuda else None,
        }
        self.seen.add((method, layer))


def timing_rows(calls: list[dict], model: str, device: str, threads: int) -> list[dict]:
    """One row per (method, layer) from ``Timer.last`` records, warm-ups left out when
    any other call exists (a resumed or sharded run has one warm-up per process).
    ``fused`` > 1: the time is an equal share of one call computing that many units."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for call in calls:
        grouped[(call["method"], call["layer"])].append(call)
    rows = []
    for (method, layer), group in grouped.items():
        warm = [c for c in group if not c["warmup"]]
        timed = warm or group
        seconds = sum(c["seconds"] for c in timed)
        images = sum(c["images"] for c in timed)
        passes = [c["passes"] * c["images"] for c in group if c.get("passes") is not None]
        peaks = [c["peak_mb"] for c in group if c.get("peak_mb") is not None]
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
                "fused": max(c.get("fused", 1) for c in timed),
                "total_seconds": seconds,
                "ms_per_image": 1000 * seconds / max(images, 1),
                "passes_per_image": sum(passes) / sum(c["images"] for c in group)
                if passes
                else None,
                "peak_mb": max(peaks) if peaks else None,
            }
        )
    return rows
