"""The rendered site without a browser: HTML check, incremental rendering of pages,
thumbnails and hashed assets, the comparison page's data, the about page, the size budget."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape
from PIL import Image

from reportgen.cli import main
from reportgen.render import BUDGET_FIXED, BUDGET_PER_IMAGE, THUMB_SIZE, SiteSize, render, site_size

from .conftest import FAST_SITE_IMAGES
from .sitecheck import check_site

IMAGES = FAST_SITE_IMAGES


@pytest.fixture
def site(fast_site) -> Path:
    """The session's fast site (conftest)."""
    return fast_site


def files(out: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of the site but the status file: mtime and content hash."""
    return {
        p.relative_to(out).as_posix(): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).digest(),
        )
        for p in out.rglob("*")
        if p.is_file() and p.name != ".reportgen-status.json"
    }


def test_every_page_type_passes_the_html_check(site):
    for page in [
        "index.html",
        "about.html",
        "compare.html",
        "images/chelsea.html",
        "methods/gradcam.html",
        "methods/filters.html",
        "layers/bn2.html",
    ]:
        assert (site / page).is_file(), page
    assert check_site(site) == []
    assert not [p for p in site.rglob("*") if p.name.startswith("_")]  # GitHub Pages drops them


def test_the_html_check_finds_each_kind_of_problem(tmp_path):
    good = (
        '<!doctype html><html lang="en"><head><title>t</title></head><body><h1>x</h1></body></html>'
    )
    (tmp_path / "good.html").write_text(good)
    assert check_site(tmp_path) == []
    (tmp_path / "bad.html").write_text(
        "<!doctype html><html><head><title>t</title></head><body><h1>a</h1><h1>b</h1>"
        '<div><p>unclosed</div><img src="good.html"><a href="/abs.html">x</a>'
        '<a href="file:///etc/passwd">y</a><img src="missing.png" alt="gone">'
        '<span id="d"></span><span id="d"></span>'
        '<script type="application/json">{"a": NaN}</script></body></html>'
    )
    problems = "\n".join(check_site(tmp_path))
    for expected in [
        "no lang",
        "2 <h1>",
        "</div> closes <p>",
        "has no alt",
        "absolute link /abs",
        "absolute link file://",
        "missing.png does not resolve",
        "duplicate id 'd'",
        "JSON does not parse",
    ]:
        assert expected in problems, expected


def test_unchanged_render_writes_nothing(site):
    render(site)  # settle whatever the run's own render left
    before = files(site)
    assert render(site)[0] == 0
    assert files(site) == before  # pages, thumbnails and assets untouched


def test_assets_have_content_hashed_names_and_old_ones_go(site):
    assets = sorted(p.name for p in (site / "assets").iterdir())
    assert [re.sub(r"\.[0-9a-f]{8}\.", ".*.", a) for a in assets] == [
        "colourmaps.*.js",
        "favicon.*.svg",
        "site.*.js",
        "style.*.css",
    ]
    for name in assets:
        digest = hashlib.sha256((site / "assets" / name).read_bytes()).hexdigest()[:8]
        assert name.split(".")[1] == digest
        assert f'assets/{name}"' in (site / "about.html").read_text()
    stale = [site / "assets/style.0badc0de.css", site / "img/thumbs/maps/gone/x@y.webp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("from an earlier render")
    written, _ = render(site)
    assert written == 0 and not any(p.exists() for p in stale)


def test_thumbnails_are_small_webp_and_follow_their_source(site):
    source = site / "img/maps/chelsea/gradcam@bn2.webp"
    thumb = site / "img/thumbs/maps/chelsea/gradcam@bn2.webp"
    with Image.open(thumb) as image:
        assert image.format == "WEBP" and max(image.size) == THUMB_SIZE
    assert (site / "img/thumbs/photos/chelsea.webp").is_file()  # under drawn views
    assert (site / "img/thumbs/photos/chelsea.boxes.webp").is_file()
    saved = source.read_bytes()
    try:
        Image.open(source).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(source)
        before = thumb.read_bytes()
        assert render(site)[0] == 0  # no page changed
        assert thumb.read_bytes() != before
        thumb.unlink()
        render(site)
        assert thumb.is_file()  # a missing thumbnail is made again
    finally:
        source.write_bytes(saved)
        render(site)


def compare_data(site: Path) -> dict:
    html = (site / "compare.html").read_text()
    return json.loads(re.search(r'id="compare-data">(.*?)</script>', html, re.S).group(1))


def test_compare_data_names_files_that_exist(site):
    data = compare_data(site)
    photos = ["chelsea", "coffee", "rocket"][:IMAGES]
    assert list(data["scores"]) == photos and data["default"]["i"] == photos
    assert len(data["default"]["m"]) == 4 and not any(
        k.startswith("baseline") for k in data["default"]["m"]
    )
    checked = 0
    for image, row in data["scores"].items():
        for key, values in row.items():
            method, layer = key.split("@", 1)
            assert len(values) == len(data["metrics"]) and values[0] is not None  # Average Drop
            for pattern in data["paths"].values():
                path = pattern.format(image=image, method=method, layer=layer).split("#")[0]
                assert (site / path).is_file(), path
                checked += 1
    assert checked > 100


def test_about_page_says_how_to_reproduce_the_run(site):
    run = json.loads((site / "data/run.json").read_text())
    about = (site / "about.html").read_text()
    for text in [
        run["command"],
        run["model"]["name"],
        run["device"],
        run["date"],
        "Seed",
        "embedded",
    ]:
        assert text in about, text
    for library, version in run["versions"].items():
        assert f"<td>{library}</td><td>{version}</td>" in about
    for page in site.rglob("*.html"):
        assert 'about.html"' in page.read_text(), page


def test_site_size_is_within_the_budget(site):
    """README: the published site (all but data/maps and data/parts) stays under
    BUDGET_FIXED + BUDGET_PER_IMAGE bytes per explained image."""
    size = site_size(site, IMAGES)
    assert size.published > 0 and size.raw_data > 0
    assert size.published <= BUDGET_FIXED + BUDGET_PER_IMAGE * IMAGES, str(size)
    assert SiteSize.recorded(site) == size  # what the CLI prints after rendering
    print(size)


def test_render_from_an_empty_status_rewrites_every_page(site, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(site, copy)
    (copy / ".reportgen-status.json").unlink()
    written, pages = render(copy)
    assert written == pages and check_site(copy) == []


@pytest.mark.parametrize("cmap", ["jet", "viridis"])
def test_colourise_matches_matplotlib(cmap):
    """The table lookup gives matplotlib's colours: every bin edge, 1.0, values out of
    range and NaN, in float32 and float64."""
    from matplotlib import colormaps

    from reportgen.figures import colourise

    edges = np.arange(257) / 256
    x = np.concatenate([edges, edges - 1e-7, [-0.1, 1.2, np.nan, 0.99999994]])
    for values in (x, x.astype(np.float32), np.random.default_rng(0).random((50, 50))):
        expected = (colormaps[cmap](values)[..., :3] * 255).round().astype(np.uint8)
        assert np.array_equal(colourise(values, cmap), expected)


def test_map_data_round_trips_and_keeps_small_values():
    """The in-browser views' levels decode to within half a level of the value, in both
    the square-root (unsigned) and signed encodings; a value 1 % of the largest still
    gets its own levels (a linear 8-bit scale gives it 3 of 255)."""
    from reportgen.figures import decode_map, encode_map

    rng = np.random.default_rng(0)
    unsigned = rng.gamma(0.3, size=(40, 30)) ** 2  # heavy-tailed, as gradient maps are
    signed = rng.standard_normal((7, 7)) ** 3
    for m in (unsigned, signed):
        levels, meta = encode_map(m)
        assert meta["signed"] == bool(m.min() < 0) and levels.dtype == np.uint8
        back = decode_map(levels, meta)
        share = np.sqrt(np.abs(m) / meta["a"])  # what a level quantises
        step = 1 / 255 if not meta["signed"] else 1 / 127
        assert np.all(np.abs(np.sqrt(np.abs(back) / meta["a"]) - share) <= step / 2 + 1e-9)
        assert np.array_equal(np.sign(back[np.abs(back) > 0]), np.sign(m[np.abs(back) > 0]))
    assert 0 < meta["top"] <= meta["a"]
    levels, meta = encode_map(np.array([[0.0, 0.01, 1.0]]))
    assert levels.tolist() == [[0, 26, 255]]
    assert meta["lo"] == 0 and 0.01 < meta["hi"] < 1  # own scale: up to the 99th percentile


def test_site_colour_tables_are_matplotlibs():
    """The static colour script the site's views read is what figures makes from
    matplotlib (regenerate: python -c "from reportgen import figures;
    print(figures.colour_tables_js(), end='')" > templates/static/colourmaps.js)."""
    from reportgen.figures import colour_tables_js

    static = Path(__file__).parents[1] / "templates/static/colourmaps.js"
    assert static.read_text() == colour_tables_js()


def test_rankings_tables_and_figures(site):
    """The run writes the rankings and the metrics' agreement; the index draws a
    critical-difference diagram per headline metric and says what 2 images can decide."""
    import pandas as pd

    from evaluation.catalogue import CATALOGUE
    from evaluation.rankings import AGREEMENT_COLUMNS, RANKING_COLUMNS, images_for_wilcoxon

    rankings = pd.read_csv(site / "data" / "rankings.csv")
    agreement = pd.read_csv(site / "data" / "metric_agreement.csv")
    assert list(rankings.columns) == RANKING_COLUMNS and not rankings.empty
    assert list(agreement.columns) == AGREEMENT_COLUMNS and not agreement.empty
    assert set(rankings.n_images) == {IMAGES}
    index = (site / "index.html").read_text()
    for m in CATALOGUE:
        if m.headline and m.id in set(rankings.metric):
            assert f'src="img/cd-{m.id}.svg"' in index
            assert (site / "img" / f"cd-{m.id}.svg").stat().st_size > 1000
    rows = rankings.drop_duplicates(["method", "layer"]).shape[0]
    assert f"need at least {images_for_wilcoxon(rows - 1)} images" in index
    assert 'src="img/agreement.svg"' in index
    assert 'src="img/stability.svg"' in index
    svg = (site / "img" / "stability.svg").read_text()
    headline = [m for m in CATALOGUE if m.headline and m.id in set(rankings.metric)]
    assert all(f"{m.name} ({IMAGES} images)" in svg for m in headline)


def test_methods_that_assume_non_negative_activations_are_flagged_at_a_signed_layer(tmp_path):
    """Lite0's blocks.5 is a linear bottleneck (about half its activations below zero):
    Grad-CAM++ is flagged there in the leaderboard and on its page, not at bn2 (ReLU6), and
    the layer page says which kind of layer a CAM layer is."""
    import pandas as pd

    out = tmp_path / "site"
    args = ["--limit", "1", "--methods", "gradcam,gradcampp", "--layers", "bn2,blocks.5"]
    assert main(["run", "--out", str(out), *args, "--metrics", "faithfulness"]) == 0
    metrics = pd.read_csv(out / "data" / "metrics.csv")
    share = metrics[metrics.metric == "negative_share"].groupby("layer").value.mean()
    assert share["bn2"] == 0.0 and share["blocks.5"] > 10.0
    index = (out / "index.html").read_text()
    flagged = re.findall(r'methods/(\w+)\.html#at-([\w.]+)">[^<]*</a> <a class="warn"', index)
    assert flagged == [("gradcampp", "blocks.5")]
    assert 'id="ill-posed"' in index
    page = (out / "methods" / "gradcampp.html").read_text()
    assert "Ill-posed in this run at blocks.5" in page
    assert "Ill-posed in this run" not in (out / "methods" / "gradcam.html").read_text()


@pytest.mark.parametrize(
    "target, words",
    [("predicted", "top-1 prediction"), ("label", "first labelled class"), ("7", "class 7")],
)
def test_pages_state_the_target_rule_the_run_used(site, tmp_path, target, words):
    copy = tmp_path / "copy"
    shutil.copytree(site, copy)
    run_json = copy / "data" / "run.json"
    run = json.loads(run_json.read_text())
    run["settings"]["target"] = target
    run_json.write_text(json.dumps(run))
    render(copy)
    image = next((copy / "images").glob("*.html"))
    for page in (copy / "index.html", copy / "published.html", image):
        assert re.search(rf"xplain(s|ing)? [^.<]*{words}", page.read_text()), page.name


def test_misclassified_images_are_marked_and_every_map_names_its_class(site, tmp_path):
    """An image whose top-1 class is none of its labelled classes carries a mark in the
    gallery and on its page; every image page names the class its maps explain (the
    ``target`` the run scored). The first image is relabelled to a class it is not seen as."""
    import pandas as pd

    copy = tmp_path / "copy"
    shutil.copytree(site, copy)
    images = pd.read_csv(copy / "data" / "images.csv")
    top = pd.read_csv(copy / "data" / "predictions.csv").query("rank == 1").set_index("image")
    metrics = pd.read_csv(copy / "data" / "metrics.csv").query("metric == 'target'")
    first = images.image[0]
    images.loc[0, "classes"] = str((int(top.class_id[first]) + 1) % 1000)
    images.to_csv(copy / "data" / "images.csv", index=False)
    render(copy)
    index = (copy / "index.html").read_text()
    for row in images.itertuples():
        page = (copy / "images" / f"{row.image}.html").read_text()
        labelled = {int(float(c)) for c in str(row.classes).split() if c != "nan"}
        wrong = bool(labelled) and int(top.class_id[row.image]) not in labelled
        caption = re.search(
            rf'<a href="images/{row.image}.html">{row.image}</a>.*?</figcaption>', index
        )
        seen = f"✗ seen as {escape(top.class_name[row.image])}"  # as Jinja writes it
        assert (seen in caption.group(0)) == wrong and ("✗ Misclassified" in page) == wrong
        target = int(metrics[metrics.image == row.image].value.iloc[0])
        assert f"Every map below explains class {target}," in page, row.image
    assert "✗ seen as" in index and "labelled images" in index
    # the leaderboard again on the correctly classified images alone
    correct = [
        r.image
        for r in images.itertuples()
        if int(top.class_id[r.image])
        in {int(float(c)) for c in str(r.classes).split() if c != "nan"}
    ]
    board = index.split('id="correct-table"')[1].split("</table>")[0]
    counts = [int(n) for n in re.findall(r"</td><td>[^<]+</td><td>(\d+)</td>", board)]
    assert counts and max(counts) == len(correct) < len(images)


def test_leaderboard_columns_have_a_visible_legend_and_pairs_a_page_of_their_own(site):
    """Every column heading is expanded under the table (no hover needed), every row's
    p-values are in a table, and the pairwise tables, most of the index's bytes
    otherwise, are on pairs.html, one per metric, each reachable from its list."""
    index = (site / "index.html").read_text()
    head = index.split('id="leaderboard-table"')[1].split("</thead>")[0]
    headings = re.findall(
        r'<th data-type="num" data-group[^>]*>([^<]+) <span class="better">', head
    )
    legend = index.split('id="columns-legend"')[1].split("</dl>")[0]
    assert headings and all(f"<dt>{escape(h)}</dt>" in legend for h in headings)
    rows = index.split('id="leaderboard-table"')[1].split("</table>")[0].count("<tr>") - 1
    p_values = index.split('id="p-value-table"')[1].split("</table>")[0]
    assert p_values.count("<tr>") - 1 == rows
    pairs = (site / "pairs.html").read_text()
    assert 'class="matrix"' not in index and 'href="pairs.html"' in index
    links = re.findall(r'href="#(pairs-[^"]+)"', pairs)
    assert links and all(f'<details id="{anchor}">' in pairs for anchor in links)
    assert pairs.count('class="matrix"') == len(links)


def test_cells_on_too_few_images_are_grey_with_their_count(site):
    """The fast site explains 3 images, fewer than the 5 a cell needs to count as more than
    an anecdote: every leaderboard cell with a mean is greyed and shows n = 3."""
    index = (site / "index.html").read_text()
    board = index.split('id="leaderboard-table"')[1].split("</table>")[0]
    cells = re.findall(r'<td data-group[^>]*data-value="[^"]+"[^>]*>.*?</td>', board)
    assert cells and all("data-few" in c and "n = 3</span>" in c for c in cells)
    assert "rests on fewer than 5 images" in index


def test_rows_with_the_same_map_are_marked_with_the_reason(site):
    """At Lite0's bn2 (global average pooling and a linear classifier follow) Grad-CAM,
    HiResCAM and XGrad-CAM compute CAM's map: the group's best-ranked row stands, the
    others point to it, and a note gives the reason."""
    index = (site / "index.html").read_text()
    note = index.split('id="same-maps"')[1].split("</p>")[0]
    assert all(t in note for t in ("CAM", "Grad-CAM", "HiResCAM", "XGrad-CAM", "bn2"))
    assert "global average pooling and a linear classifier" in note
    board = index.split('id="leaderboard-table"')[1].split("</table>")[0]
    marks = {}
    for method in ("cam", "gradcam", "hirescam", "xgradcam"):
        cell = board.split(f'href="methods/{method}.html#at-bn2">')[1].split("</td>")[0]
        marks[method] = re.findall(r'class="same-mark" href="#same-maps"[^>]*>= ([^<]+)<', cell)
    heads = [m for m, found in marks.items() if not found]
    assert len(heads) == 1, marks
    title = board.split(f'href="methods/{heads[0]}.html#at-bn2">')[1].split("<")[0]
    assert all(found == [title] for m, found in marks.items() if m != heads[0]), marks


def test_index_opens_with_a_verdict_linked_to_its_evidence(site):
    """A line per headline ranking and the baselines' bar, before the leaderboard; each
    'Why' link lands on its critical-difference diagram."""
    index = (site / "index.html").read_text()
    verdict = index.split('<section class="verdict"')[1].split("</section>")[0]
    assert index.index('class="verdict"') < index.index('id="leaderboard"')
    links = re.findall(r'href="#(cd-[^"]+)"', verdict)
    assert links and all(f'id="{anchor}"' in index for anchor in links)
    assert "The bar</strong>: maps that ignore the model score" in verdict


def test_images_get_their_files_size(tmp_path):
    """Width and height from the file (an SVG's points at 96/72 px), so the browser keeps
    the box before the image loads; sizes already given, data URLs and missing files are
    left alone."""
    from reportgen.render.site import sized_images

    (tmp_path / "img").mkdir()
    Image.new("RGB", (30, 20)).save(tmp_path / "img" / "a.jpg")
    (tmp_path / "img" / "b.svg").write_text('<svg width="72pt" height="36pt" viewBox="0 0 72 36">')
    page = tmp_path / "images"
    page.mkdir()
    html = (
        '<img loading="lazy" src="../img/a.jpg" alt="a"><img class="plot" src="../img/b.svg">'
        '<img src="../img/a.jpg" width="5" height="5"><img src="data:image/png;base64,AA">'
        '<img src="../img/missing.png">'
    )
    assert sized_images(html, page) == (
        '<img width="30" height="20" loading="lazy" src="../img/a.jpg" alt="a">'
        '<img width="96" height="48" class="plot" src="../img/b.svg">'
        '<img src="../img/a.jpg" width="5" height="5"><img src="data:image/png;base64,AA">'
        '<img src="../img/missing.png">'
    )
