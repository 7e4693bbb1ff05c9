"""The fused CAM engine: one capture for many methods and layers gives exactly the maps of
one method at a time, and the run records what it costs."""

import json

import pandas as pd
import pytest
import torch

import reportgen
from evaluation.bench.report import load
from reportgen import techniques
from reportgen.techniques.cam import cam_maps

SIX = ["gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "eigencam"]


def test_fused_maps_equal_one_method_at_a_time(lite0):
    model, spec = lite0
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    targets = torch.tensor([3, 281])
    layers = ["bn2", "blocks.5"]
    fused = cam_maps(model, x, targets, layers, SIX, spec.classifier)
    assert set(fused) == {(m, lay) for m in SIX for lay in layers}
    for (method, layer), maps in fused.items():
        alone = techniques.get(method).run(model, x, targets, layer=layer)
        torch.testing.assert_close(maps, alone, rtol=1e-5, atol=1e-6, msg=f"{method}@{layer}")
    together = reportgen.explain(model, x, SIX + ["saliency"], layer="bn2", target=targets)
    assert list(together) == SIX + ["saliency"]
    torch.testing.assert_close(
        together["gradcampp"], reportgen.explain(model, x, "gradcampp", layer="bn2", target=targets)
    )


def test_fused_engine_records_errors_per_unit(lite0):
    model, spec = lite0
    errors = {}
    maps = cam_maps(
        model,
        torch.randn(1, 3, 224, 224),
        [0],
        ["bn2", "blocks.5"],
        ["cam"],
        spec.classifier,
        errors,
    )
    assert ("cam", "bn2") in maps and ("cam", "blocks.5") not in maps
    assert "cam at layer 'blocks.5'" in errors[("cam", "blocks.5")]


def test_parameters_get_no_gradient_and_keep_their_flags(lite0):
    model, spec = lite0
    model.zero_grad(set_to_none=True)  # the model is shared: another test may leave grads
    flags = [p.requires_grad for p in model.parameters()]
    cam_maps(model, torch.randn(1, 3, 224, 224), [0], ["bn2"], ["gradcam"], spec.classifier)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_benchmark_report_gives_ratios(tmp_path):
    def bench(group, who, median):
        info = {"who": who, "device": "cpu", "batch": 8, "threads": 2, "size": "full"}
        return {
            "group": group,
            "name": who,
            "stats": {"median": median, "iqr": 0.01},
            "extra_info": info,
        }

    raw = {
        "machine_info": {"cpu": {"brand_raw": "Test CPU"}},
        "datetime": "2026-11-23T00:00:00",
        "benchmarks": [
            bench("six gradient CAMs", "ours", 0.05),
            bench("six gradient CAMs", "pytorch-grad-cam", 1.0),
            bench("six gradient CAMs", "forward pass", 0.04),
            bench("occlusion", "captum", 2.0),
        ],
    }
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps(raw))
    result = load(path)
    assert result["cpu"] == "Test CPU" and result["batch"] == 8
    ratios = {(r["group"], r["other"]): r["ratio"] for r in result["rows"]}
    assert ratios == pytest.approx(
        {
            ("six gradient CAMs", "pytorch-grad-cam"): 0.05,
            ("six gradient CAMs", "forward pass"): 1.25,
        }
    )


def test_profile_run_writes_kernel_tables_and_perf_page(tmp_path):
    from reportgen.cli import main

    argv = ["run", "--out", str(tmp_path), "--limit", "1", "--methods", "gradcam,occlusion"]
    assert (
        main([*argv, "--set", "occlusion.window=112", "--set", "occlusion.stride=112", "--profile"])
        == 0
    )
    table = pd.read_csv(tmp_path / "data" / "profile" / "cam engine.csv")
    assert {"operator", "calls", "self_cpu_ms"} <= set(table.columns) and len(table) > 3
    assert any("conv" in op for op in table.operator)
    timings = pd.read_csv(tmp_path / "data" / "timings.csv").set_index("method")
    assert timings.loc["occlusion", "passes_per_image"] == 5  # 2 x 2 windows + the clean image
    assert (timings.loc["gradcam", "passes_per_image"] == 1).all()  # both layers, one pass
    perf = (tmp_path / "perf.html").read_text()
    assert "Kernel tables" in perf and "cam engine" in perf and "occlusion" in perf
