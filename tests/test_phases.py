"""The run's time accounting: phases that add up, the batcher that fills passes, and a real
run whose phase table covers its wall time and is on the performance page."""

import json

import numpy as np
import pandas as pd
import pytest

from reportgen import probe, timing
from reportgen.batcher import Batcher
from reportgen.timing import Phases, merge_phases, phase_rows


@pytest.fixture
def site(fast_site):
    """The session's fast site (conftest)."""
    return fast_site


class Clock:
    """A fake ``perf_counter`` that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_nested_phases_charge_their_own_time(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    phases = Phases()
    with phases("outer"):
        clock.now += 2
        with phases("inner"):
            clock.now += 3
        clock.now += 1
        with phases("inner"):
            clock.now += 4
    assert phases.table["outer"]["seconds"] == 3  # 2 + 1: not the inner 7
    assert phases.table["inner"]["seconds"] == 7
    assert phases.table["inner"]["calls"] == 2
    assert sum(r["seconds"] for r in phases.table.values()) == clock.now  # they add up


def test_snapshot_charges_open_phases_and_keeps_them_open(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    phases = Phases()
    with phases("render"):
        clock.now += 5
        assert phases.snapshot()["render"]["seconds"] == 5
        clock.now += 2
    assert phases.table["render"]["seconds"] == 7


def test_floor_and_efficiency_from_rows():
    table = {"a": {"seconds": 4.0, "rows": 100, "grad_rows": 10, "calls": 1}}
    measured = {"forward_ms": 20.0, "backward_ms": 60.0}
    (row,) = phase_rows(table, measured, wall=8.0)
    assert row["floor_seconds"] == pytest.approx(90 * 0.02 + 10 * 0.06)
    assert row["efficiency"] == pytest.approx(2.4 / 4.0)
    assert row["share"] == 0.5
    both = merge_phases([table, table])
    assert both["a"]["rows"] == 200 and both["a"]["seconds"] == 8.0


def test_floor_prices_bfloat16_rows_at_their_own_speed():
    table = {"a": {"seconds": 2.0, "rows": 100, "grad_rows": 0, "half_rows": 60, "calls": 1}}
    measured = {"forward_ms": 20.0, "forward_bf16_ms": 5.0, "backward_ms": 60.0}
    (row,) = phase_rows(table, measured, wall=2.0)
    assert row["floor_seconds"] == pytest.approx(40 * 0.02 + 60 * 0.005)


def test_pass_counter_counts_the_work_that_ran():
    """Rows are full passes at the input size, from the multiply-adds that ran: half the
    side is a quarter row, a pass stopped at a layer counts what ran, a module whose
    forward is replaced (a replay) counts nothing, and deep copies count into the same
    counter."""
    import copy

    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1)).eval()
    counter = timing.PassCounter(model, (16, 16))
    per_row = 16 * 16 * 4 * (3 * 9) + 16 * 16 * 4 * 4  # the two convolutions' multiply-adds
    assert counter.per_row == per_row and counter.rows == 0  # the calibration is not counted
    with torch.no_grad():
        model(torch.zeros(2, 3, 16, 16))
        assert counter.rows == pytest.approx(2)
        model(torch.zeros(1, 3, 8, 8))
        assert counter.rows == pytest.approx(2.25)
        model[0](torch.zeros(1, 3, 16, 16))  # stopped after the first layer
        assert counter.rows == pytest.approx(2.25 + 27 / 31)
        model[0].forward = lambda x: torch.zeros(x.shape[0], 4, 16, 16)  # a replayed layer
        model(torch.zeros(1, 3, 16, 16))
        assert counter.rows == pytest.approx(2.25 + 27 / 31 + 4 / 31)
        del model[0].forward
        copy.deepcopy(model)(torch.zeros(1, 3, 16, 16))
        assert counter.rows == pytest.approx(3.25 + 1)
    assert counter.grad_rows == 0 and counter.half_rows == 0
    model(torch.zeros(1, 3, 16, 16))  # grad mode: recorded for a backward
    assert counter.grad_rows == pytest.approx(1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.zeros(1, 3, 16, 16))
    assert counter.half_rows == pytest.approx(1)


def test_weighed_counter_counts_each_layers_share_of_the_time():
    """Weighed by time shares, a full pass still counts one row, a smaller input scales
    each layer by its multiply-adds, and a pass stopped after the first layer counts that
    layer's share of the time, not of the arithmetic (27/31 of it here)."""
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1)).eval()
    counter = timing.PassCounter(model, (16, 16))
    shares = timing.time_shares(model, torch.zeros(2, 3, 16, 16))
    assert len(shares) == 2 and sum(shares) == pytest.approx(1) and min(shares) > 0
    # its warm-up and two timed passes count as work too
    assert counter.rows == pytest.approx(3 * 2)
    counter.weigh([0.4, 0.6])
    with torch.no_grad():
        model(torch.zeros(3, 3, 16, 16))
        assert counter.rows == pytest.approx(6 + 3)
        model(torch.zeros(1, 3, 8, 8))
        assert counter.rows == pytest.approx(9.25)
        model[0](torch.zeros(1, 3, 16, 16))
        assert counter.rows == pytest.approx(9.25 + 0.4)
    counter.weigh([1.0])  # a profile of another model: ignored
    with torch.no_grad():
        model[0](torch.zeros(1, 3, 16, 16))
    assert counter.rows == pytest.approx(9.25 + 0.8)


def test_batcher_runs_full_passes_and_answers_in_order():
    passes = []

    def fn(batch: np.ndarray) -> np.ndarray:
        passes.append(len(batch))
        return batch * 10

    got = {}
    batcher = Batcher(fn, rows=4)
    batcher.add(np.arange(3), lambda out: got.setdefault("a", out))
    batcher.add(np.arange(3, 9), lambda out: got.setdefault("b", out))
    assert "a" in got and "b" not in got  # a's rows ran in the first full pass
    batcher.add(np.arange(0), lambda out: got.setdefault("empty", out))
    batcher.flush()
    assert passes == [4, 4, 1]
    assert got["a"].tolist() == [0, 10, 20]
    assert got["b"].tolist() == [30, 40, 50, 60, 70, 80]
    assert len(got["empty"]) == 0


def test_a_run_accounts_for_its_wall_time(site):
    totals = json.loads((site / "data" / "phases.json").read_text())
    table = pd.read_csv(site / "data" / "phases.csv")
    assert totals["coverage"] >= 0.95
    assert table.seconds.sum() == pytest.approx(totals["covered_seconds"])
    for phase in ("import libraries", "load model", "probe", "render", "write files"):
        assert phase in set(table.phase), phase
    assert any(p.startswith("metric: ") for p in table.phase)
    assert table.rows.sum() > 0 and 0 < totals["efficiency"] <= 1.5
    run = json.loads((site / "data" / "run.json").read_text())
    assert run["probe"]["layout"] in ("nchw", "nhwc") and run["probe"]["rows"] >= 1
    assert run["quality"] == "fast" and "--quality paper" in run["other_quality"]["command"]
    perf = (site / "perf.html").read_text()
    assert 'id="phases"' in perf and "render" in perf


def test_bfloat16_forward_passes_only_in_the_fast_preset_on_native_hardware():
    import torch

    from reportgen.options import forward_dtype

    assert forward_dtype("fast", {"bf16_native": True}) is torch.bfloat16
    assert forward_dtype("fast", {"bf16_native": False}) is None
    assert forward_dtype("paper", {"bf16_native": True}) is None
    assert forward_dtype("fast", {}) is None  # a probe from before the field: float32


def test_floor_takes_the_better_of_the_start_and_end_probes():
    start = {"layout": "nhwc", "rows": 8, "forward_ms": 18.0, "forward_bf16_ms": 4.0}
    start["backward_ms"] = 60.0
    end = {"forward_ms": 9.0, "forward_bf16_ms": 5.0, "backward_ms": 30.0}
    best = probe.best_times(start, end)
    assert best["forward_ms"] == 9.0 and best["forward_bf16_ms"] == 4.0
    assert best["backward_ms"] == 30.0 and best["layout"] == "nhwc" and best["rows"] == 8
    assert probe.best_times(start, None) == start and probe.best_times(None) == {}
    # the start-up probe times only its batched precision; the end fills in the others
    only = {"layout": "nhwc", "rows": 8, "forward_bf16_ms": 4.0}
    assert probe.best_times(only, end) == {**only, "forward_ms": 9.0, "backward_ms": 30.0}


def test_a_run_times_the_probe_again_at_its_end(site):
    totals = json.loads((site / "data" / "phases.json").read_text())
    end = totals["probe_end"]
    assert end["forward_ms"] > 0 and end["backward_ms"] > 0
    assert totals["probe"]["forward_ms"] <= end["forward_ms"]


def test_the_probe_stops_growing_a_layout_once_a_row_costs_more(monkeypatch):
    """Channels-last first: 10 ms a row at 8 rows, 12.5 at 16 and 3 at 32: 32 is never
    tried (a larger pass that is already slower a row ends the layout). Then NCHW at 16 ms
    a row, over 1.5x the best so far: its larger passes are not tried. 8 rows win."""
    import torch

    seen: list[tuple[str, int]] = []

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3)

        def forward(self, x):
            last = x.is_contiguous(memory_format=torch.channels_last)
            seen.append(("nhwc" if last else "nchw", len(x)))
            return self.conv(x).mean((2, 3))

    ms = {("nhwc", 8): 10.0, ("nhwc", 16): 12.5, ("nhwc", 32): 3.0, ("nchw", 8): 16.0}

    def fake(fn, repeats, device):
        fn()
        return ms.get(seen[-1], 1.0) * seen[-1][1] / 1000

    monkeypatch.setattr(probe, "_best_seconds", fake)
    found = probe.probe(Net(), (8, 8), torch.device("cpu"), sizes=(8, 16, 32))
    assert [(t["layout"], t["rows"]) for t in found["tried"]] == [
        ("nhwc", 8), ("nhwc", 16), ("nchw", 8)
    ]  # fmt: skip
    assert (found["layout"], found["rows"]) == ("nhwc", 8)


def test_the_probe_does_not_grow_a_pass_that_already_takes_long(monkeypatch):
    """A heavy model: 8 rows at 20 ms a row take 0.16 s, over ``LONG_PASS_SECONDS``; the
    probe stops there (a larger pass would spread only per-pass costs of a few ms)."""
    import torch

    seen: list[int] = []

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3)

        def forward(self, x):
            seen.append(len(x))
            return self.conv(x).mean((2, 3))

    def fake(fn, repeats, device):
        fn()
        return 0.020 * seen[-1]

    monkeypatch.setattr(probe, "_best_seconds", fake)
    found = probe.probe(Net(), (8, 8), torch.device("cpu"), ("nhwc",), sizes=(8, 16, 32))
    assert [t["rows"] for t in found["tried"]] == [8] and found["rows"] == 8


def test_a_resumed_run_takes_its_stored_probe_only_from_the_same_machine(monkeypatch):
    """``--resume`` with the same settings takes the probe the run stored, instead of
    probing again, when the device (its model name too), threads, layouts and precision
    are the same; any other stored probe is measured anew."""
    import torch

    from reportgen import context
    from reportgen.models import get_spec

    measured = {"measured": True}
    monkeypatch.setattr(context, "probe", lambda *a, **k: measured)
    monkeypatch.setattr(context, "PROBES", {})
    cpu, spec = torch.device("cpu"), get_spec("synthetic_cnn")
    stored = {
        "device": "cpu",
        "device_name": probe.device_name(cpu),
        "threads": torch.get_num_threads(),
        "batched": "bf16" if probe.native_bf16(cpu) else "fp32",
        "tried": [{"layout": "nchw"}, {"layout": "nhwc"}],
    }
    layouts = ("nchw", "nhwc")
    assert context.probed(None, None, spec, cpu, layouts, "fast", stored) is stored
    for other in ({"device_name": "another CPU"}, {"threads": 99}, {"tried": []}):
        again = context.probed(None, None, spec, cpu, layouts, "fast", {**stored, **other})
        assert again is measured, other
