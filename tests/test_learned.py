"""What the network learned, end to end on the default model and photos: the synthesis and
data-set views land in tables, images and pages that agree with each other. What each
optimisation computes is tested in test_synthesis.py and test_neurons.py; here the step
counts are tiny, so only the plumbing is under test."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reportgen import learned
from reportgen.cli import main
from reportgen.store import Store, learned_path

from .conftest import LEARNED_METHODS, LEARNED_TINY, shared_run
from .sitecheck import check_site

IMAGES = 5
LEARNED = "feature_maps,gradcam,gradcampp,saliency,baseline_edges," + LEARNED_METHODS
ARGS = ["--limit", str(IMAGES), "--batch-size", "3", "--methods", LEARNED, "--classes", "1"]
ARGS += [*LEARNED_TINY, "--curve-steps", "4"]  # the curves: test_site.py, test_metrics.py


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return shared_run(tmp_path_factory, "learned", ARGS)


def table(out, name: str) -> pd.DataFrame:
    return Store(out).read_table(name)


def test_pages_are_filled_and_pass_the_html_check(site):
    page = (site / "learned.html").read_text()
    for section in ("filters", "silent", "classes", "dreams", "inversion", "fooling", "embedding"):
        assert f'id="{section}"' in page, section
    assert check_site(site) == []
    channel = next((site / "layers" / "bn2").glob("*.html")).read_text()
    assert "What it responds to" in channel and "Top-9 patches" in channel


def test_filter_vis_draws_every_channel_page_channel_with_both_recipes(site):
    synthesis = table(site, "synthesis")
    channels = table(site, "channels")
    vis = synthesis[synthesis.technique == "filter_vis"]
    for layer, rows in channels.groupby("layer"):
        wanted = {str(c) for c in rows.channel.unique()}
        mine = vis[vis.layer == layer]
        assert set(mine[mine.variant == "fourier"].item) == wanted
        pixel = set(mine[mine.variant == "pixel"].item)
        assert len(pixel) == learned.PIXEL_RECIPE_UNITS and pixel <= wanted
        for c in wanted:
            assert (site / "img" / learned_path("filter_vis", f"{layer}/{c}", "fourier")).is_file()
        for c in pixel:  # the pixel recipe's own 150 px yield to --set filter_vis.size=64
            drawn = site / "img" / learned_path("filter_vis", f"{layer}/{c}", "pixel")
            with Image.open(drawn) as im:
                assert im.size == (64, 64)
        # the natural level: each channel's strongest photo, from the stored channel means
        means = np.stack(
            [
                np.load(site / "data" / "maps" / i / f"channels@{layer}.npz")["map"]
                for i in table(site, "images").image
            ]
        )
        natural = mine[mine.metric == "natural"].set_index("item").value
        for c, value in natural.items():
            assert value == pytest.approx(means[:, int(c)].max(), rel=1e-5)


def test_top_patches_are_the_highest_stored_peaks_inside_the_image(site):
    patches = table(site, "patches")
    ids = list(table(site, "images").image)
    for (layer, c), rows in patches.groupby(["layer", "channel"]):
        peaks = np.stack(
            [np.load(site / "data" / "maps" / i / f"peaks@{layer}.npz")["map"] for i in ids]
        )
        rows = rows.sort_values("rank")
        assert len(rows) == min(learned.PATCHES, IMAGES)
        expected = sorted(peaks[:, c, 0], reverse=True)
        assert rows.activation.tolist() == pytest.approx(expected, rel=1e-6)
        for _, tied in rows.groupby("activation"):  # equal peaks: furthest past the clamp first
            assert tied.pre_activation.is_monotonic_decreasing
        assert (rows.top >= 0).all() and (rows.left >= 0).all()
        assert (rows.bottom <= 224).all() and (rows.right <= 224).all()
        assert (rows.bottom > rows.top).all() and (rows.right > rows.left).all()
        assert (site / "img" / learned_path("top_patches", f"{layer}/{c}", "deconv")).is_file()
    dead = table(site, "dead").set_index("layer")
    for layer, row in dead.iterrows():
        peaks = np.stack(
            [np.load(site / "data" / "maps" / i / f"peaks@{layer}.npz")["map"] for i in ids]
        )
        assert row.silent == int((peaks[..., 0].max(0) <= 0).sum())


def test_the_atlas_reaches_every_channel_with_its_strongest_crop(site):
    """Every channel of every feature layer (bn2: all 1,280) has its top images in the
    atlas table and a tile in its layer's atlas image: the crop around the channel's
    highest peak (a silent channel's tile grey); the layer page embeds it all."""
    from PIL import Image

    from reportgen import data, models, sources
    from reportgen.learned.channels import ATLAS_MIN_CROP, ATLAS_TOP
    from reportgen.store import ATLAS_COLUMNS, ATLAS_TILE
    from reportgen.techniques.neurons import crop, receptive_field, tile_box

    atlas = table(site, "atlas")
    ids = list(table(site, "images").image)
    model = None
    for layer, rows in atlas.groupby("layer"):
        peaks = np.stack(
            [np.load(site / "data" / "maps" / i / f"peaks@{layer}.npz")["map"] for i in ids]
        )
        channels = peaks.shape[1]
        assert sorted(rows.channel.unique()) == list(range(channels))
        assert (rows.groupby("channel").size() == min(ATLAS_TOP, IMAGES)).all()
        firsts = rows[rows["rank"] == 0].set_index("channel")
        assert firsts.activation.to_numpy() == pytest.approx(peaks[..., 0].max(0), rel=1e-6)
        sheet = np.asarray(Image.open(site / "img" / learned_path("atlas", layer)), float)
        assert sheet.shape[:2] == (-(-channels // ATLAS_COLUMNS) * ATLAS_TILE, 32 * ATLAS_TILE)
        page = (site / "layers" / f"{layer}.html").read_text()
        assert 'id="every-channel"' in page and f"Every channel ({channels})" in page
        if layer != "bn2":
            continue
        assert channels == 1280
        model, _ = models.load_model(models.get_spec("efficientnet_lite0"))
        field = receptive_field(model, layer, (224, 224))
        side = max(ATLAS_MIN_CROP, min(max(field.size), 3 * max(field.stride)))
        records = {r.id: r for r in sources.dataset(None, models.imagenet_class_names())[1]}
        for c in (0, 7, 1279):
            i = int(np.argmax(peaks[:, c, 0]))
            if peaks[i, c, 0] <= 0:
                continue
            photo = data.model_input(data.load_photo(records[ids[i]])[0], (224, 224))
            photo = (photo * 255).round().astype(np.uint8)
            box = tile_box(field, int(peaks[i, c, 1]), int(peaks[i, c, 2]), (224, 224), side)
            want = np.asarray(
                Image.fromarray(crop(photo, box)).resize((ATLAS_TILE, ATLAS_TILE), Image.LANCZOS),
                float,
            )
            r, k = divmod(c, ATLAS_COLUMNS)
            t = ATLAS_TILE
            got = sheet[r * t : (r + 1) * t, k * t : (k + 1) * t]
            # JPEG at quality 75 moves a tile by about 8 levels; another tile is ~75 away
            assert np.abs(got - want).mean() < 15
    assert model is not None, "bn2 has an atlas"


def test_class_models_cover_the_predicted_classes_and_those_asked_for(site):
    synthesis = table(site, "synthesis")
    drawn = set(synthesis[synthesis.technique == "class_model"].item.astype(int))
    predictions = table(site, "predictions")
    assert drawn == set(predictions[predictions["rank"] == 1].class_id) | {1}


def test_inversion_runs_at_four_depths_and_fooling_never_targets_the_prediction(site):
    synthesis = table(site, "synthesis")
    run = json.loads((site / "data" / "run.json").read_text())
    depths = learned.inversion_layers(run["model"]["feature_layers"])
    assert len(depths) == learned.INVERSION_DEPTHS and depths[-1] == "bn2"
    inv = synthesis[(synthesis.technique == "inversion") & (synthesis.metric == "relative_error")]
    assert len(inv) == IMAGES * len(depths) and (inv.value >= 0).all()
    fool = synthesis[synthesis.technique == "fooling"].pivot(index="item", columns="metric")
    fool = fool["value"]
    assert len(fool) == IMAGES and (fool.goal != fool.predicted).all()
    assert set(fool.success.unique()) <= {0.0, 1.0}


def test_embedding_is_deterministic_for_a_seed(site):
    store = Store(site)
    images = table(site, "images").to_dict("records")
    predictions = table(site, "predictions").to_dict("records")
    first = learned.embedding_rows(store, images, predictions, seed=0)
    again = learned.embedding_rows(store, images, predictions, seed=0)
    assert len(first) == IMAGES and first == again
    stored = table(site, "embedding")
    assert stored.x.tolist() == pytest.approx([r["x"] for r in first])
    assert len({(r["x"], r["y"]) for r in first}) == IMAGES  # no two images on one point


def test_resume_remakes_none_of_the_run_wide_views(site):
    parts = site / "data" / "parts" / "model"
    before = {p.name: p.stat().st_mtime_ns for p in parts.glob("after-*.json")}
    # the channel pages, top_patches, filter_vis, class_model, deepdream, sanity
    assert len(before) == 6
    assert main(["run", "--out", str(site), "--resume", *ARGS]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in parts.glob("after-*.json")} == before
    assert os.path.getsize(site / "learned.html") > 0


def test_sanity_check_randomises_down_to_the_stem_and_flags_the_control(site):
    """Cascading randomisation in the run: step 0 is the trained model (Spearman 1 for
    every map); the edge-detector baseline ignores the weights, so it stays at 1 to the
    last step while Grad-CAM falls."""
    sanity = table(site, "sanity")
    assert set(sanity.method) == {"gradcam@bn2", "gradcampp@bn2", "saliency@input"} | {
        "baseline_edges@input"
    }
    assert sanity.image.nunique() == learned.SANITY_IMAGES
    first = sanity[sanity.step == 0]
    assert (first.block == "none").all() and np.allclose(first.spearman, 1)
    last = sanity[sanity.step == sanity.step.max()].groupby("method").spearman.mean()
    assert last["baseline_edges@input"] == pytest.approx(1.0)
    assert last["gradcam@bn2"] < 0.5
    for method in sanity.method.unique():
        assert (site / "img" / learned_path("sanity", method)).is_file()
    assert "Sanity check" in (site / "index.html").read_text()


def test_independent_randomisation_runs_with_the_sanity_check(site):
    """One block at a time, for the CAMs, the gradient and the control: every step of the
    cascade, the control flat at 1, Grad-CAM below it where its layer's block is random."""
    alone, cascade = table(site, "sanity_independent"), table(site, "sanity")
    assert set(alone.method) == {"gradcam@bn2", "gradcampp@bn2", "saliency@input"} | {
        "baseline_edges@input"
    }
    steps = lambda t: t.drop_duplicates("step")[["step", "block"]].values.tolist()  # noqa: E731
    assert steps(alone) == steps(cascade)
    assert alone.image.nunique() == learned.INDEPENDENT_IMAGES
    assert np.allclose(alone[alone.method == "baseline_edges@input"].spearman, 1)
    first = alone[alone.step == 1].groupby("method").spearman.mean()  # the classifier alone
    assert first["gradcam@bn2"] < 0.5
    index = (site / "index.html").read_text()
    assert 'id="sanity-independent"' in index and (site / "img/sanity_independent.svg").is_file()
    assert f"the cascade's first {learned.INDEPENDENT_IMAGES} images" in index


def test_random_logit_test_runs_with_the_sanity_check(site):
    """Each sanity image is explained for another class too: the edge baseline's map does
    not change (class-blind, marked on the index), Grad-CAM's does."""
    rows = table(site, "random_logit")
    assert set(rows.method) == set(table(site, "sanity").method)
    assert rows.image.nunique() == learned.SANITY_IMAGES
    means = rows.groupby("method").spearman.mean()
    assert means["baseline_edges@input"] == pytest.approx(1.0)
    assert means["gradcam@bn2"] < 0.9
    index = (site / "index.html").read_text()
    assert 'id="random-logit"' in index and "class-blind" in index
