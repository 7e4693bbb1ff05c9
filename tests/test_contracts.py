"""Contracts every registered technique keeps, over the whole registry: a technique added
to the registry is checked here without a line of its own (like timm's model tests and
captum's hook-removal tests). Each runs the technique the way the engine does
(``compute``), with its fast preset, on the tiny ReLU network."""

import pytest
import torch

from evaluation import catalogue
from reportgen import learned, techniques
from reportgen.compute import compute
from reportgen.store import PIXEL_LAYER
from tests.conftest import TinyGapNet

SCORED = [t for t in techniques.REGISTRY.values() if t.scored]
TARGETS = [0, 3, 1]


@pytest.fixture
def batch() -> torch.Tensor:
    """Three inputs large enough for every technique's default window (occlusion: 32 px)."""
    torch.manual_seed(1)
    return torch.randn(3, 3, 48, 48)


def maps(model, x: torch.Tensor, targets, technique) -> torch.Tensor:
    layer = "features" if technique.needs_layer else PIXEL_LAYER
    units = [(technique, layer)]
    (found,) = compute(
        model, x, targets, units, "fc", settings=lambda t: t.preset("fast"), strict=True
    )
    return found.maps.detach().float()


@pytest.mark.parametrize("technique", SCORED, ids=lambda t: t.name)
def test_model_left_exactly_as_found(technique, batch):
    """Same mode, same gradient flags, same weights, same module objects, no hook."""
    torch.manual_seed(0)
    model = TinyGapNet(inplace=True).train()
    model.fc.weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    maps(model, batch, TARGETS, technique)
    assert dict(model.named_modules()) == modules  # nothing swapped in and left there
    assert all(m.training for m in model.modules())
    assert not model.fc.weight.requires_grad and model.fc.bias.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(
        not (m._forward_hooks or m._backward_hooks or m._forward_pre_hooks) for m in model.modules()
    )
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize(
    "technique",
    [t for t in SCORED if t.family != "baseline"],  # baselines ignore the targets
    ids=lambda t: t.name,
)
def test_per_item_targets_equal_single_calls(technique, tiny, batch):
    """In float64: an optimisation (Extremal Perturbation's 100 steps) grows the last-bit
    differences between a batch's and a single image's summation order about 10^7-fold,
    which float32 cannot absorb but float64 can."""
    tiny, batch = tiny.double(), batch.double()
    together = maps(tiny, batch, TARGETS, technique)
    alone = torch.cat(
        [maps(tiny, batch[i : i + 1], [TARGETS[i]], technique) for i in range(len(batch))]
    )
    assert together.shape == alone.shape
    assert torch.allclose(together, alone, rtol=1e-4, atol=1e-5 * float(alone.abs().max()))


@pytest.mark.parametrize("technique", SCORED, ids=lambda t: t.name)
def test_deterministic(technique, tiny, batch):
    """The same call twice gives the same maps: every random draw comes from a seeded
    generator of the technique's own."""
    assert torch.equal(maps(tiny, batch, TARGETS, technique), maps(tiny, batch, TARGETS, technique))


def test_every_view_is_driven_by_the_engine():
    """A technique that is not a scored map has a ``View`` (else the engine would never
    run it), and every view is a technique or a metric group."""
    views = [t.name for t in techniques.REGISTRY.values() if not t.scored]
    assert views and all(name in learned.VIEWS for name in views)
    for name in learned.VIEWS:
        assert name in techniques.REGISTRY or name in catalogue.GROUPS


def test_shared_passes_give_each_technique_its_own_maps(tiny, batch, monkeypatch):
    """One ``compute`` call makes the plain and the guided input gradients once each and takes
    guided Grad-CAM's Grad-CAM map from the fused capture: every map equals the one its
    technique makes alone, and the model runs 3 + 3 + 3 + 1 rows instead of 19."""
    from reportgen.capture import record_outputs
    from reportgen.models import default_cam_layer
    from reportgen.techniques import gradient

    layer = default_cam_layer(*record_outputs(tiny, batch[:1]))
    names = ("saliency", "input_x_gradient", "guided_backprop", "guided_gradcam")
    units = [(techniques.get("gradcam"), layer)]
    units += [(techniques.get(name), PIXEL_LAYER) for name in names]
    alone = {
        (t.name, lay): next(iter(compute(tiny, batch, TARGETS, [(t, lay)], strict=True))).maps
        for t, lay in units
    }
    rows, made = [], []
    hook = tiny.register_forward_hook(lambda _m, args, _out: rows.append(len(args[0])))
    plain = gradient.input_gradient
    monkeypatch.setattr(gradient, "input_gradient", lambda *a: made.append(a[3]) or plain(*a))
    together = {
        (c.method, c.layer): c.maps for c in compute(tiny, batch, TARGETS, units, strict=True)
    }
    hook.remove()
    assert together.keys() == alone.keys()
    assert all(torch.equal(together[key], alone[key]) for key in alone)
    assert sorted(made, key=str) == [None, "guided"]  # one gradient per rule
    assert sum(rows) == 3 + 3 + 3 + 1  # fused capture, two gradients, guided Grad-CAM's layer probe
