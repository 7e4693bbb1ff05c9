"""The start-up probe: the model's best per-row pass time on this device, the batch size and
memory layout every batched phase of the run uses, and the per-row times the run's floor
(docs/performance.md) is built on."""

from __future__ import annotations

import platform
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from .timing import time_shares

PROBE_ROWS = {"cpu": (8, 16, 32), "cuda": (16, 64, 256)}  # rows per pass the probe tries
# A pass this long is not grown further: a larger one spreads only the per-pass costs
# (thread start-up, Python, the first layers' small work) over more rows, and those are a
# few ms, while probing a heavy model (Swin-T) at 32 rows took most of a one-image run
LONG_PASS_SECONDS = 0.1
LAYOUTS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


def _best_seconds(fn, repeats: int, device: torch.device) -> float:
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - began)
    return best


def device_name(device: torch.device) -> str:
    """The GPU's or the CPU's model name (``/proc/cpuinfo`` where there is one): a probe
    made on one machine is not another's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    found = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return found[0] if found else platform.processor()


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes in bfloat16 natively (a CUDA GPU that supports it; a CPU
    with AVX-512 BF16 or AMX): where autocast to bfloat16 speeds passes up instead of
    emulating them. A property of the machine, so every run on it decides alike."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return device.type == "cpu" and any(getattr(cpu, c, lambda: False)() for c in checks)


def per_row_times(
    model: nn.Module,
    input_size: tuple[int, int],
    device: torch.device,
    layout: str,
    rows: int,
    forward_model: nn.Module | None = None,
) -> dict[str, float]:
    """At one shape: ms a row forward in float32 and in bfloat16 (autocast), and forward +
    backward to the input, on ``forward_model`` when given (the folded copy the run's
    passes run on), each after a warm-up pass, the best of two timed passes (a single
    one taken while the machine is busy would inflate the floor): at the end of a run,
    at the probe's chosen shape (the floor takes each figure's best of these and the
    probe's)."""
    x = torch.zeros(rows, 3, *input_size, device=device).contiguous(memory_format=LAYOUTS[layout])
    ahead = forward_model if forward_model is not None else model
    times = {}
    for key, cast in (
        ("forward_ms", nullcontext),
        ("forward_bf16_ms", lambda: torch.autocast(device.type, dtype=torch.bfloat16)),
    ):
        with torch.inference_mode(), cast():
            ahead(x)  # warm-up: this precision's kernels
            times[key] = 1000 * _best_seconds(lambda: ahead(x), 2, device) / rows
    x.requires_grad_(True)

    def backward() -> None:
        ahead(x).sum().backward(inputs=[x])

    with torch.enable_grad():
        backward()  # warm-up: autograd's first backward
        times["backward_ms"] = 1000 * _best_seconds(backward, 2, device) / rows
    return times


def best_times(*probes: dict | None) -> dict:
    """The first probe with each per-row time the lowest any of them measured: a probe
    taken while the machine was busy must not inflate the floor (the start-up probe
    times one of them, the end of the run all three)."""
    found = [p for p in probes if p]
    if not found:
        return {}
    keys = ("forward_ms", "forward_bf16_ms", "backward_ms")
    measured = {k: min(p[k] for p in found if k in p) for k in keys if any(k in p for p in found)}
    return {**found[0], **measured}


def probe(
    model: nn.Module,
    input_size: tuple[int, int],
    device: torch.device,
    layouts: tuple[str, ...] = ("nhwc", "nchw"),
    sizes: tuple[int, ...] | None = None,
    half: bool = False,
    forward_model: nn.Module | None = None,
) -> dict:
    """The model's best per-row inference time on this device: each memory layout at each
    batch size of ``PROBE_ROWS`` (a warm-up pass at each, as a new shape picks its kernels
    on its first call, then the best of two timed passes; a layout stops growing once a
    larger pass is slower a row, 1.5x slower than the best so far, or once a pass takes over
    ``LONG_PASS_SECONDS``), in the precision
    the run's batched passes will use (bfloat16 autocast with ``half``, else float32). The best
    (layout, rows) is what every batched phase of the run uses, and its time a row the
    first of the per-row times the run's floor is built on; each layer's share of a pass's
    time there is measured too (``time_shares``, for ``PassCounter.weigh``). The other
    precision's forward and a forward + backward are timed at the end of the run
    (``per_row_times``), warm: in a fresh CI process they took 8x and 4x their warm time
    at start-up, after a warm-up pass, and most of the probe's 19 s.

    Passes are timed on ``forward_model`` when given (the copy with batch norms folded
    that the run's passes use). Both models are left in the best layout. Takes a few
    seconds on a 2-core CPU."""
    sizes = sizes or PROBE_ROWS.get(device.type, PROBE_ROWS["cpu"])

    def cast(bf16: bool):
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    ahead = forward_model if forward_model is not None else model
    tried = []
    for layout in layouts:
        ahead.to(memory_format=LAYOUTS[layout])  # outside inference mode: parameters stay usable
        x = torch.zeros(max(sizes), 3, *input_size, device=device)
        x = x.contiguous(memory_format=LAYOUTS[layout])
        with torch.inference_mode(), cast(half):
            for rows in sizes:
                ahead(x[:rows])  # warm-up: allocator, kernel choice for this shape
                seconds = _best_seconds(lambda r=rows, x=x: ahead(x[:r]), 2, device)
                tried.append({"layout": layout, "rows": rows, "ms_per_row": 1000 * seconds / rows})
                now, before = tried[-1]["ms_per_row"], tried[-2] if len(tried) > 1 else {}
                if before.get("layout") == layout and now > before["ms_per_row"]:
                    break  # slower a row than a smaller pass: larger ones will not win
                if now > 1.5 * min(t["ms_per_row"] for t in tried):
                    break  # far behind another layout: larger passes gained 1.2x at most
                if now * rows / 1000 > LONG_PASS_SECONDS:
                    break
    best = min(tried, key=lambda t: t["ms_per_row"])
    for m in {id(model): model, id(ahead): ahead}.values():
        m.to(memory_format=LAYOUTS[best["layout"]])
    x = torch.zeros(best["rows"], 3, *input_size, device=device)
    with cast(half):
        shares = time_shares(model, x.contiguous(memory_format=LAYOUTS[best["layout"]]))
    return {
        "layout": best["layout"],
        "rows": best["rows"],
        "batched": "bf16" if half else "fp32",
        ("forward_bf16_ms" if half else "forward_ms"): best["ms_per_row"],
        "bf16_native": native_bf16(device),
        "tried": tried,
        "time_shares": shares,
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
    }
