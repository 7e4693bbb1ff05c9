"""Max-sensitivity (Yeh et al. 2019): by hand, against Quantus with the same noise, and in
a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from reportgen import techniques
from reportgen.scoring import max_sensitivity


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_by_hand():
    """Φ(x) = x²: a relative change computable on paper; the largest over the draws."""
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    noises = [torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 1.0], [3.0, 0.0]])]
    worst = max_sensitivity(lambda v: {("sq", ""): v**2}, x, noises)[("sq", "")]
    # image 0: ‖(3, 0)‖ / ‖(1, 4)‖ and ‖(0, 5)‖ / ‖(1, 4)‖; image 1: a zero map, undefined
    assert worst[0].item() == pytest.approx(5 / 17**0.5)
    assert np.isnan(worst[1].item())


def test_agrees_with_quantus_on_the_same_noise(monkeypatch):
    quantus = pytest.importorskip("quantus")
    model = Small().eval()
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (3, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 2, 1])
    draws = 6
    noises = [rng.uniform(-0.2, 0.2, (3, 3 * 8 * 8)) for _ in range(draws)]
    queue = list(noises)
    monkeypatch.setattr(np.random, "uniform", lambda *a, **k: queue.pop(0))
    saliency = techniques.get("saliency").run

    def explain(model, inputs, targets, **_) -> np.ndarray:
        maps = saliency(model, torch.as_tensor(inputs), torch.as_tensor(targets))
        return maps.detach().numpy()[:, None]

    theirs = quantus.MaxSensitivity(
        nr_samples=draws, lower_bound=0.2, normalise=False, abs=False, disable_warnings=True
    )(
        model=model, x_batch=x, y_batch=y, a_batch=explain(model, x, y), explain_func=explain,
        device="cpu",
    )  # fmt: skip
    assert queue == []
    targets = torch.as_tensor(y)

    def maps_of(inputs: torch.Tensor) -> dict:
        return {("saliency", "input"): saliency(model, inputs, targets).detach().flatten(1)}

    ours = max_sensitivity(
        maps_of,
        torch.as_tensor(x),
        [torch.as_tensor(n, dtype=torch.float32).view(3, 3, 8, 8) for n in noises],
    )[("saliency", "input")]
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4)


def test_a_run_scores_the_cheap_methods_only(tmp_path):
    """``--metrics robustness``: a value per image for the methods of a pass or two, none
    for RISE (thousands of passes a draw), and a leaderboard column."""
    import pandas as pd

    from reportgen.cli import main

    out = tmp_path / "run"
    args = ["--data", "synthetic", "--limit", "4", "--methods", "gradcam,saliency,rise"]
    args += ["--set", "rise.masks=8", "--metrics", "robustness"]
    assert main(["run", "--out", str(out), *args]) == 0
    metrics = pd.read_csv(out / "data" / "metrics.csv")
    sens = metrics[metrics.metric == "max_sensitivity"]
    assert set(sens.method) == {"gradcam", "saliency"}
    assert sens.groupby("method").image.nunique().eq(4).all() and (sens.value >= 0).all()
    assert "Max-sensitivity" in (out / "index.html").read_text()
