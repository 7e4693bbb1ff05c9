"""Per-technique time, forward passes and peak memory, measured as docs/performance.md says:
CUDA events on a GPU, a synchronised clock on CPU, the first call left out as a warm-up."""

from __future__ import annotations

import resource
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch import nn

from . import faults
from .capture import hooks


class PassCounter:
    """Counts the model's work in full-pass rows: the multiply-adds of every convolution and
    linear layer that runs, divided by those of one row at the model's input size (counted
    on construction). A pass at 128 px of a 224 px model counts about a third of a row, a
    pass stopped at a layer or replayed from a stored layer counts only the part that ran,
    so the floor built on these counts holds for every phase. ``grad_rows``: the part run
    with autograd recording (a backward follows); ``half_rows``: the part run in bfloat16
    (autocast), which the floor prices at the probe's bfloat16 speed.

    Multiply-adds are not time: early layers (large maps, depthwise filters) are bound by
    memory and take a larger share of a pass's time than of its multiply-adds. ``weigh``
    gives each layer its measured share of a full pass's time (``time_shares``, taken by
    the probe), so a pass stopped at an early layer counts the time the device needs for
    that part, not its arithmetic.

    The hooks are closures, not bound methods, so copies of the model (``copy.deepcopy``:
    the sanity check's randomised networks) keep counting into this counter. A module whose
    ``forward`` is replaced on the instance (a replay returning stored outputs) computes
    nothing and is not counted."""

    def __init__(self, model: nn.Module, input_size: tuple[int, int] | None = None):
        self.macs = 0.0
        self.grad_macs = 0.0
        self.half_macs = 0.0
        self.per_row = 0.0
        self.row_macs: list[float] = []  # per counted module: its multiply-adds in one row
        # per counted module, in model.modules() order: [factor, multiply-adds of its last call]
        self.cells: list[list[float]] = []
        self.handles = [
            m.register_forward_hook(self._hook()) for m in model.modules() if _counted(m)
        ]
        if input_size is not None:
            self.calibrate(model, input_size)

    def _hook(self):
        self.cells.append(cell := [1.0, 0.0])

        def count(module: nn.Module, _inputs, out) -> None:
            if "forward" in module.__dict__ or not isinstance(out, torch.Tensor):
                return
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                macs = out.numel() * (module.in_channels // module.groups) * kh * kw
            else:
                macs = out.numel() * module.in_features
            cell[1] = macs
            macs *= cell[0]
            self.macs += macs
            if torch.is_grad_enabled():
                self.grad_macs += macs
            elif out.dtype == torch.bfloat16:
                self.half_macs += macs

        count.counts_only = True  # a fused convolution may still fuse (convs._Fused)
        return count

    def calibrate(self, model: nn.Module, input_size: tuple[int, int]) -> None:
        """One row's multiply-adds at the input size, from a one-row pass (not counted)."""
        device = next(model.parameters()).device
        before = (self.macs, self.grad_macs, self.half_macs)
        factors = [cell[0] for cell in self.cells]
        for cell in self.cells:
            cell[:] = [1.0, 0.0]
        with torch.inference_mode():
            model(torch.zeros(1, 3, *input_size, device=device))
        self.per_row = self.macs - before[0]
        self.row_macs = [cell[1] for cell in self.cells]
        for cell, factor in zip(self.cells, factors, strict=True):
            cell[0] = factor
        self.macs, self.grad_macs, self.half_macs = before

    def weigh(self, shares: list[float] | None) -> None:
        """Count each layer's multiply-adds at its share of a full pass's time (``shares``:
        one per counted module, in ``model.modules()`` order, summing to 1), so a full row
        still counts 1 and part of a pass counts the time that part takes."""
        if not shares or len(shares) != len(self.cells) or not self.per_row:
            return
        for cell, share, macs in zip(self.cells, shares, self.row_macs, strict=True):
            cell[0] = share * self.per_row / macs if macs else 0.0

    @property
    def rows(self) -> float:
        return self.macs / self.per_row if self.per_row else 0.0

    @property
    def grad_rows(self) -> float:
        return self.grad_macs / self.per_row if self.per_row else 0.0

    @property
    def half_rows(self) -> float:
        return self.half_macs / self.per_row if self.per_row else 0.0

    def counts(self) -> tuple[float, float, float]:
        return self.rows, self.grad_rows, self.half_rows

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _counted(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d | nn.Linear)


def time_shares(model: nn.Module, x: torch.Tensor, repeats: int = 2) -> list[float]:
    """Each convolution's and linear layer's share of a forward pass's time on ``x``, in
    ``model.modules()`` order (what ``PassCounter.weigh`` takes): the time from the layer's
    start to the next one's (its normalisation and activation included), the last to the
    end of the pass; the least of ``repeats`` passes, after a warm-up pass."""
    modules = [m for m in model.modules() if _counted(m)]
    index = {id(m): i for i, m in enumerate(modules)}
    cuda = x.device.type == "cuda"
    marks: list[tuple[int, float]] = []

    def mark(module: nn.Module, _args) -> None:
        if cuda:
            torch.cuda.synchronize(x.device)
        marks.append((index[id(module)], time.perf_counter()))

    best = [float("inf")] * len(modules)
    with hooks(pre=[(m, mark) for m in modules]), torch.inference_mode():
        for repeat in range(repeats + 1):
            marks.clear()
            model(x)
            if cuda:
                torch.cuda.synchronize(x.device)
            end = time.perf_counter()
            spent = [0.0] * len(modules)
            for (i, since), (_, until) in zip(marks, [*marks[1:], (-1, end)], strict=True):
                spent[i] += until - since
            if repeat:  # the first pass is the warm-up
                best = [min(b, s) for b, s in zip(best, spent, strict=True)]
    total = sum(best)
    return [b / total for b in best] if total > 0 else []


COUNTS = ("rows", "grad_rows", "half_rows")  # what a phase's row in the table counts


class Phases:
    """Wall time and model rows by phase of the run. A phase entered inside another is
    charged its own time, not its parent's, so the phases add up to the run and a table of
    them accounts for every second that any phase covers.

    ``rows`` / ``grad_rows`` / ``half_rows`` are the model rows run in the phase
    (``PassCounter``), from which the run's floor is computed (``floor_seconds``)."""

    def __init__(self, counter: PassCounter | None = None):
        self.counter = counter
        self.table: dict[str, dict[str, float]] = {}
        self.stack: list[list] = []  # [name, since, *counts then]
        self.part = ""  # the parts name this process's table is stored under

    def _snapshot(self) -> tuple[float, ...]:
        return self.counter.counts() if self.counter else (0.0,) * len(COUNTS)

    def _row(self, name: str) -> dict[str, float]:
        return self.table.setdefault(
            name, {"seconds": 0.0, **dict.fromkeys(COUNTS, 0.0), "calls": 0}
        )

    def _charge(self, entry: list, now: float) -> None:
        counts = self._snapshot()
        row = self._row(entry[0])
        row["seconds"] += now - entry[1]
        for key, value, then in zip(COUNTS, counts, entry[2:], strict=True):
            row[key] += value - then
        entry[1:] = [now, *counts]

    @contextmanager
    def __call__(self, name: str):
        faults.checkpoint(name, [entry[0] for entry in self.stack])  # the tests' kills
        if self.stack:
            self._charge(self.stack[-1], time.perf_counter())
        self.stack.append([name, time.perf_counter(), *self._snapshot()])
        self._charge(self.stack[-1], self.stack[-1][1])  # the row exists from the start
        self.table[name]["calls"] += 1
        try:
            yield
        finally:
            entry = self.stack.pop()
            self._charge(entry, time.perf_counter())
            if self.stack:
                self.stack[-1][1:] = [time.perf_counter(), *self._snapshot()]

    def snapshot(self) -> dict[str, dict[str, float]]:
        """The table with the open phases' time so far charged (they stay open)."""
        now = time.perf_counter()
        for entry in self.stack[-1:]:  # only the innermost runs; its parents are paused
            self._charge(entry, now)
        return {name: dict(row) for name, row in self.table.items()}

    def add(self, name: str, seconds: float, **counts: float) -> None:
        """Charge time measured elsewhere (e.g. imports before the run existed)."""
        row = self._row(name)
        row["seconds"] += seconds
        for key, value in counts.items():
            row[key] += value
        row["calls"] += 1


def merge_phases(tables: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Phase tables of several processes (shards, resumed runs) added up."""
    merged: dict[str, dict[str, float]] = {}
    for table in tables:
        for name, row in table.items():
            mine = merged.setdefault(name, dict.fromkeys(row, 0))
            for key, value in row.items():
                mine[key] = mine.get(key, 0) + value
    return merged


def phase_rows(table: dict[str, dict[str, float]], probe: dict | None, wall: float) -> list[dict]:
    """The phase table: each phase's time, share of the run's wall time, model rows, its
    floor (those rows at the probe's best per-row times: forward, bfloat16 forward, forward
    + backward) and efficiency (floor / time). Largest first."""
    probe = probe or {}
    forward = probe.get("forward_ms", 0.0) / 1000
    half = probe.get("forward_bf16_ms", probe.get("forward_ms", 0.0)) / 1000
    backward = probe.get("backward_ms", 0.0) / 1000
    rows = []
    for name, row in table.items():
        half_rows = row.get("half_rows", 0.0)
        plain = row["rows"] - row["grad_rows"] - half_rows
        floor = plain * forward + half_rows * half + row["grad_rows"] * backward
        rows.append(
            {
                "phase": name,
                "seconds": row["seconds"],
                "share": row["seconds"] / wall if wall else float("nan"),
                "calls": int(row["calls"]),
                **{key: round(row.get(key, 0.0), 1) for key in COUNTS},
                "floor_seconds": floor,
                "efficiency": floor / row["seconds"] if row["seconds"] > 0 else float("nan"),
            }
        )
    return sorted(rows, key=lambda r: -r["seconds"])


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

    def __init__(
        self, device: torch.device, counter: PassCounter | None = None, phases: Phases | None = None
    ):
        self.device = torch.device(device)
        self.counter = counter
        self.phases = phases or Phases(counter)
        self.seen: set[tuple[str, str]] = set()
        self.last: dict = {}

    @contextmanager
    def __call__(self, method: str, layer: str, images: int):
        with self.phases(f"{method}@{layer}"), self._timed(method, layer, images):
            yield

    @contextmanager
    def _timed(self, method: str, layer: str, images: int):
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
                # rounded: time-weighted rows carry float noise (5.0000000000007)
                "passes_per_image": round(sum(passes) / sum(c["images"] for c in group), 6)
                if passes
                else None,
                "peak_mb": max(peaks) if peaks else None,
            }
        )
    return rows
