"""Shared inputs of the benchmarks: the default model, real photos, fixed targets.

``REPORTGEN_BENCH=full`` (what ``reportgen bench`` sets) uses a batch of 8 at 224 px and
several rounds; the default ``small`` is one pair of images, one round: a smoke test.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

SIZE = os.environ.get("REPORTGEN_BENCH", "small")
DEVICE = torch.device(os.environ.get("REPORTGEN_BENCH_DEVICE", "cpu"))
BATCH = 8 if SIZE == "full" else 2
ROUNDS = 5 if SIZE == "full" else 1
PAIRED_ROUNDS = 9 if SIZE == "full" else 1  # interleaved rounds (each runs every contender)


@pytest.fixture(scope="session")
def lite0():
    from reportgen.models import get_spec, load_model

    model, spec = load_model(get_spec("efficientnet_lite0"))
    return model.to(DEVICE).eval(), spec


@pytest.fixture(scope="session")
def inputs(lite0):
    """``(x, targets)``: the first BATCH embedded photos, normalised, and their top-1 classes."""
    from reportgen import data
    from reportgen.sources import folders

    model, spec = lite0
    _, records = folders.read_manifest()
    photos = [data.load_rgb(r) for r in records[:BATCH]]
    pixels = np.stack([data.model_input(p, spec.input_size) for p in photos])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    x = ((x - mean) / std).contiguous().to(DEVICE)
    with torch.inference_mode():
        targets = model(x).argmax(1)
    return x, targets.clone()


@pytest.fixture
def measure(benchmark):
    """``measure(group, who, fn)``: time ``fn`` (warm-up excluded) in a group beside its peer."""

    def run(group: str, who: str, fn):
        benchmark.group = group
        cuda = DEVICE.type == "cuda"
        benchmark.extra_info.update(
            {
                "who": who,
                "batch": BATCH,
                "device": DEVICE.type,
                "device_name": torch.cuda.get_device_name(DEVICE) if cuda else "cpu",
                "threads": torch.get_num_threads(),
                "size": SIZE,
            }
        )

        def synchronised():  # CUDA launches are asynchronous: wait for the work
            out = fn()
            if cuda:
                torch.cuda.synchronize(DEVICE)
            return out

        return benchmark.pedantic(
            synchronised, rounds=ROUNDS, warmup_rounds=1 if SIZE == "full" else 0
        )

    return run


@pytest.fixture
def paired(benchmark):
    """``paired(group, {who: fn})``: interleaved A/B timing. Each pytest-benchmark round runs
    every ``fn`` once, in an order that rotates by round, each timed on its own (synchronised
    clock); the per-round times land in ``extra_info["paired"]``, the warm-up round left out.
    Ratios of times taken seconds apart are robust to the drift that separate benchmarks
    (minutes apart) suffer on shared machines."""

    def run(group: str, calls: dict):
        import time

        benchmark.group = group
        names = list(calls)
        times: dict[str, list[float]] = {who: [] for who in names}
        rounds = [0]

        def one_round():
            k = rounds[0] % len(names)
            rounds[0] += 1
            for who in names[k:] + names[:k]:
                start = time.perf_counter()
                calls[who]()
                if DEVICE.type == "cuda":
                    torch.cuda.synchronize(DEVICE)
                times[who].append(time.perf_counter() - start)

        warmup = 1 if SIZE == "full" else 0
        benchmark.pedantic(one_round, rounds=PAIRED_ROUNDS, warmup_rounds=warmup)
        benchmark.extra_info.update(
            {
                "who": "paired",
                "paired": {who: t[warmup:] for who, t in times.items()},
                "batch": BATCH,
                "device": DEVICE.type,
                "device_name": torch.cuda.get_device_name(DEVICE)
                if DEVICE.type == "cuda"
                else "cpu",
                "threads": torch.get_num_threads(),
                "size": SIZE,
            }
        )

    return run
