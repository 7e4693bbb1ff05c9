"""The default site in a real browser (headless Chromium), served under a sub-path.

Fails on any console error, broken link, image that did not load, a table that does
not sort or filter, a map view that does not swap the heat maps, a comparison grid that
does not follow its selection, a keyboard shortcut that does nothing, or a page that
scrolls sideways on a phone.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reportgen import figures

from .conftest import FAST_SITE_IMAGES, PREFIX, serve

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    if os.environ.get("REPORTGEN_REQUIRE_BROWSER"):  # set by .ci/run: never skip there
        raise RuntimeError("chromium and chromedriver are required but not installed")
    pytest.skip(
        "needs Debian's chromium and chromium-driver (README: Development)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def served(fast_site):
    with serve(fast_site) as base:
        yield fast_site, base


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tempfile.mkdtemp()}",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    driver.set_window_size(1280, 1000)
    yield driver
    driver.quit()


def open_page(browser, url: str) -> None:
    browser.get(url)
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")  # lazy images
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const imgs = Array.from(document.images);
        imgs.forEach(i => { i.loading = 'eager'; });
        Promise.all(imgs.map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))
            .then(() => done());
    """)
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.src)"
    )
    assert broken == [], f"{url}: images that did not load: {broken}"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], f"{url}: console errors: {errors}"


PAGES = [
    "index.html",
    "about.html",
    "compare.html",
    "images/chelsea.html",
    "methods/gradcampp.html",
    "methods/saliency.html",
    "methods/feature_maps.html",
    "layers/bn2.html",
    "learned.html",
    "published.html",
]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_type_loads_cleanly(served, browser, page):
    _, base = served
    open_page(browser, base + page)
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"
    )
    for link in links:
        assert link.startswith(base) or link.startswith("https://"), f"{page}: {link}"


def test_internal_links_resolve_under_the_prefix(served, browser):
    """Every internal link of every page answers 200 under /reportgen/."""
    import urllib.request

    out, base = served
    seen: set[str] = set()
    for page in sorted(out.rglob("*.html")):
        browser.get(base + page.relative_to(out).as_posix())
        for link in browser.execute_script(
            "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"
        ):
            target = link.split("#")[0]
            if target.startswith(base) and target not in seen:
                seen.add(target)
                with urllib.request.urlopen(target) as response:
                    assert response.status == 200, target
    assert len(seen) > 10


def test_leaderboard_sorts_in_the_browser(served, browser):
    _, base = served
    browser.get(base + "index.html")
    browser.execute_script("localStorage.clear()")
    browser.get(base + "index.html")
    table = browser.find_element(By.ID, "leaderboard-table")
    heading = table.find_elements(By.CSS_SELECTOR, "thead th")[3]  # Average Drop

    def column() -> list[float]:
        return [
            float(td.get_attribute("data-value"))
            for td in table.find_elements(By.CSS_SELECTOR, "tbody tr td:nth-child(4)")
        ]

    click(browser, heading)
    assert column() == sorted(column()) and heading.get_attribute("aria-sort") == "ascending"
    click(browser, heading)
    assert column() == sorted(column(), reverse=True)
    browser.get(base + "index.html")  # the choice survives a reload (localStorage)
    table = browser.find_element(By.ID, "leaderboard-table")
    assert (
        table.find_elements(By.CSS_SELECTOR, "thead th")[3].get_attribute("aria-sort")
        == "descending"
    )


def click(browser, element) -> None:
    """Scroll the element clear of the sticky header, then click it."""
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def fresh(browser, url: str) -> None:
    """Open ``url`` with nothing remembered from earlier tests."""
    browser.get(url)
    browser.execute_script("localStorage.clear()")
    open_page(browser, url)


def map_sources(browser) -> list[str]:
    """The src of every heat map on the page, after checking that each one loaded."""
    return browser.execute_script("""
        return Array.from(document.querySelectorAll('img[data-map]')).map(
            i => i.complete && i.naturalWidth ? i.src : 'not loaded: ' + i.src)
    """)


def wait_for_maps(browser) -> None:
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const imgs = Array.from(document.querySelectorAll('img[data-map]'));
        imgs.forEach(i => { i.loading = 'eager'; });
        Promise.all(imgs.map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))
            .then(() => done());
    """)


def choose_view(browser, view: str) -> list[str]:
    click(browser, browser.find_element(By.CSS_SELECTOR, f"input[name=map-view][value={view}]"))
    wait_for_maps(browser)
    return map_sources(browser)


def drawn(browser, index: int) -> dict:
    """Heat map ``index`` once the page has drawn it: its canvas's pixels and look."""
    browser.execute_script(
        "document.querySelectorAll('img[data-map]')[arguments[0]].scrollIntoView()", index
    )
    return browser.execute_async_script(
        """
        const [index, done] = arguments;
        const img = document.querySelectorAll('img[data-map]')[index];
        (function poll(tries) {
          const canvas = img.parentNode.querySelector('canvas.heat-layer');
          if (!(canvas && canvas.width) && tries > 0) return setTimeout(() => poll(tries - 1), 50);
          if (!canvas) return done(null);
          const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
          const map = new URL(img.getAttribute('data-map'), location.href).href;
          done({key: img.getAttribute('data-key'), map: map,
                width: canvas.width, height: canvas.height, rgba: Array.from(data),
                opacity: canvas.style.opacity, rendering: getComputedStyle(canvas).imageRendering,
                src: img.src, photo: img.getAttribute('data-photo')});
        })(100);
    """,
        index,
    )


SLIDE = (  # drag the slider to VALUE and let go
    "arguments[0].value = VALUE; arguments[0].dispatchEvent(new Event('input'));"
    " arguments[0].dispatchEvent(new Event('change'))"
)


def expected_colours(out: Path, got: dict, cmap: str) -> np.ndarray:
    """What the raw view should show for the map: its data script decoded in Python,
    rectified, on its own scale, in ``cmap``."""
    text = (out / got["map"].split(PREFIX, 1)[1]).read_text()
    data = json.loads(text[text.index(", ") + 2 : text.rindex(");")])
    levels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data["png"]))))
    values = np.maximum(figures.decode_map(levels, data), 0)
    unit = np.clip((values - data["lo"]) / (data["hi"] - data["lo"]), 0, 1)
    return figures.colourise(unit, cmap)


@pytest.mark.parametrize("page", ["images/coffee.html", "methods/gradcampp.html"])
def test_map_views_are_drawn_from_each_maps_data(served, browser, page):
    """Own scale: the server's overlays. Any other view, colour map or opacity: a canvas
    over the photo, coloured from the map's data exactly as Python colours it, the
    choice remembered; back to the default, the overlays return."""
    out, base = served
    fresh(browser, base + page)
    first = map_sources(browser)
    thumbs = "methods/" in page  # method pages show thumbnails, image pages the overlays
    assert first and all(s.endswith(".webp") and ("/thumbs/" in s) == thumbs for s in first)
    legend = browser.find_element(By.CSS_SELECTOR, ".colour-legend")
    assert legend.text.startswith("this map's min") and "(viridis)" in legend.text
    assert not browser.find_elements(By.CSS_SELECTOR, "a.drawn")
    sources = choose_view(browser, "raw")
    assert all("/photos/" in s for s in sources), sources  # the photo under each canvas
    for index in (0, len(sources) - 1):  # the last one drawn once scrolled to
        got = drawn(browser, index)
        want = expected_colours(out, got, "viridis")
        assert (got["height"], got["width"]) == want.shape[:2]
        rgb = np.asarray(got["rgba"], dtype=int).reshape(*want.shape[:2], 4)[..., :3]
        assert np.abs(rgb - want).max() <= 4  # float32 in the browser: a neighbouring entry
        assert got["opacity"] == "1" and got["rendering"] == "pixelated"
    Select(browser.find_element(By.CSS_SELECTOR, "select[name=colour-map]")).select_by_value("jet")
    assert "(jet)" in legend.text
    got = drawn(browser, 0)
    rgb = np.asarray(got["rgba"], dtype=int).reshape(got["height"], got["width"], 4)[..., :3]
    assert np.abs(rgb - expected_colours(out, got, "jet")).max() <= 4
    choose_view(browser, "signed")
    assert "(RdBu_r)" in legend.text
    slider = browser.find_element(By.CSS_SELECTOR, "input[name=opacity]")
    browser.execute_script(
        SLIDE.replace("VALUE", "0.3"),
        slider,
    )
    got = drawn(browser, 0)
    assert got["opacity"] == "0.3" and got["width"] >= 224  # up-sampled onto the photo
    assert "… " in browser.find_element(By.CSS_SELECTOR, ".scale").text
    open_page(browser, base + page)  # remembered
    assert browser.find_element(By.CSS_SELECTOR, "input[value=signed]").is_selected()
    assert drawn(browser, 0)["opacity"] == "0.3"
    Select(browser.find_element(By.CSS_SELECTOR, "select[name=colour-map]")).select_by_value(
        "viridis"
    )
    browser.execute_script(
        SLIDE.replace("VALUE", "0.5"),
        browser.find_element(By.CSS_SELECTOR, "input[name=opacity]"),
    )
    assert choose_view(browser, "own") == first
    assert not browser.find_elements(By.CSS_SELECTOR, "a.drawn")


def test_every_channel_of_bn2_opens_from_its_atlas(served, browser):
    """A channel by address, by the number box, by previous/next and by clicking its
    tile: each shows that channel's strongest images with the field of the peak."""
    _, base = served
    open_page(browser, base + "layers/bn2.html#channel=1279")
    panel = browser.find_element(By.ID, "channel-detail")
    assert panel.is_displayed() and "Channel 1279 of 1280" in panel.text
    click(browser, browser.find_element(By.CSS_SELECTOR, "form.channel-go [data-step='1']"))
    assert "#channel=0" in browser.current_url and "Channel 0 of 1280" in panel.text
    number = browser.find_element(By.CSS_SELECTOR, "form.channel-go input[name=channel]")
    number.clear()
    number.send_keys("641\n")
    assert "Channel 641 of 1280" in panel.text
    atlas = browser.find_element(By.CSS_SELECTOR, "img[data-atlas]")
    browser.execute_async_script(
        """
        const [img, done] = arguments;
        img.loading = 'eager';
        img.scrollIntoView({block: 'center'});
        if (img.complete && img.naturalWidth) done(); else img.onload = () => done();
    """,
        atlas,
    )
    browser.execute_script(
        """
        const img = arguments[0], box = img.getBoundingClientRect();
        const scale = box.width / img.naturalWidth;  // tile (row 2, column 5): channel 69
        img.dispatchEvent(new MouseEvent('click', {bubbles: true,
            clientX: box.left + (5 * 40 + 20) * scale, clientY: box.top + (2 * 40 + 20) * scale}));
    """,
        atlas,
    )
    assert "#channel=69" in browser.current_url and "Channel 69 of 1280" in panel.text
    fields = browser.find_elements(By.CSS_SELECTOR, "#channel-detail .field")
    assert fields and all(f.size["width"] > 0 for f in fields)


def test_leaderboard_column_groups_hide_and_stay_hidden(served, browser):
    """Secondary columns start hidden (a compact table), a group's box hides its columns,
    the choice survives a reload; the header row and method column stay in view."""
    _, base = served
    fresh(browser, base + "index.html")
    table = browser.find_element(By.ID, "leaderboard-table")

    def shown() -> list[str]:
        return [
            th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th") if th.is_displayed()
        ]

    compact = shown()
    assert "Average Drop" in " ".join(compact)
    boxes = browser.find_elements(By.CSS_SELECTOR, "fieldset.columns input")
    click(browser, next(b for b in boxes if b.get_attribute("value") == "detail"))
    everything = shown()
    assert len(everything) > len(compact)
    click(browser, next(b for b in boxes if b.get_attribute("value") == "faithfulness"))
    assert "Average Drop" not in " ".join(shown()) and len(shown()) < len(everything)
    open_page(browser, base + "index.html")
    table = browser.find_element(By.ID, "leaderboard-table")
    assert "Average Drop" not in " ".join(shown())
    sticky = browser.execute_script(
        "const t = arguments[0]; return [getComputedStyle(t.querySelector('thead th')).position,"
        " getComputedStyle(t.querySelector('tbody td')).position]",
        table,
    )
    assert sticky == ["sticky", "sticky"]


def test_filter_box_hides_rows_and_is_remembered(served, browser):
    _, base = served
    fresh(browser, base + "index.html")

    def visible() -> list[str]:
        rows = browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table tbody tr")
        return [r.text for r in rows if r.is_displayed()]

    everything = visible()
    box = browser.find_element(By.CSS_SELECTOR, "input.filter")
    click(browser, box)
    box.send_keys("grad-cam bn2")
    shown = visible()
    assert 0 < len(shown) < len(everything)
    assert all("grad-cam" in row.lower() and "bn2" in row for row in shown)
    open_page(browser, base + "index.html")  # remembered
    assert visible() == shown
    box = browser.find_element(By.CSS_SELECTOR, "input.filter")
    assert box.get_attribute("value") == "grad-cam bn2"
    box.clear()
    box.send_keys(" ")  # an input event with an empty filter
    assert len(visible()) == len(everything)


def press(browser, key: str) -> None:
    browser.find_element(By.TAG_NAME, "body").send_keys(key)


def test_keyboard_shortcuts(served, browser):
    _, base = served
    fresh(browser, base + "methods/gradcam.html")
    nxt = browser.find_element(By.CSS_SELECTOR, 'a[data-key="]"]').get_attribute("href")
    press(browser, "]")
    assert browser.current_url == nxt and nxt != base + "methods/gradcam.html"
    press(browser, "[")
    assert browser.current_url == base + "methods/gradcam.html"
    open_page(browser, base + "images/chelsea.html")
    nxt = browser.find_element(By.CSS_SELECTOR, "a[rel=next]").get_attribute("href")
    press(browser, Keys.ARROW_RIGHT)
    assert browser.current_url == nxt == base + "images/coffee.html"
    help_box = browser.find_element(By.ID, "shortcuts")
    assert not help_box.is_displayed()
    press(browser, "?")
    assert help_box.is_displayed() and "next method" in help_box.text
    press(browser, "?")
    assert not help_box.is_displayed()


def grid(browser) -> tuple[list[str], list[str]]:
    """The comparison grid's column keys (method @ layer) and row images."""
    columns = browser.find_elements(By.CSS_SELECTOR, "#compare-grid thead th")[1:]
    rows = browser.find_elements(By.CSS_SELECTOR, "#compare-grid tbody th")
    return [c.text for c in columns], [r.text for r in rows]


def test_compare_follows_its_selection_and_the_address(served, browser):
    out, base = served
    fresh(browser, base + "compare.html")
    columns, rows = grid(browser)
    photos = ["chelsea", "coffee", "rocket", "astronaut"][:FAST_SITE_IMAGES]
    assert len(columns) == 4 and rows == photos
    assert not any("Baseline" in c for c in columns)
    assert "#m=" in browser.current_url and "&i=" in browser.current_url
    cells = browser.find_elements(By.CSS_SELECTOR, "#compare-grid td")
    labels = ("Drop", "Y (full image)", "O (explanation)", "Loc(0.5)")  # the catalogue's cells
    assert len(cells) == 4 * len(photos) and all(
        all(lab in c.text for lab in labels) for c in cells
    )
    assert all(s.endswith(".webp") for s in map_sources(browser))
    click(browser, browser.find_element(By.CSS_SELECTOR, "input[name=i][value=coffee]"))
    columns, rows = grid(browser)
    assert rows == [p for p in photos if p != "coffee"] and "coffee" not in browser.current_url
    linked = base + "compare.html#m=saliency@input,gradcampp@bn2&i=rocket"
    open_page(browser, linked)  # a comparison is linkable
    columns, rows = grid(browser)
    assert rows == ["rocket"] and len(columns) == 2
    assert "/photos/" in choose_view(browser, "raw")[0]
    assert drawn(browser, 0)["width"] > 0
    open_page(browser, base + "compare.html")  # the last selection is remembered
    assert grid(browser)[0] == columns
    choose_view(browser, "own")


def test_compare_works_from_disk(served, browser):
    """file:// forbids fetch(); the grid's data is in the page."""
    out, _ = served
    open_page(browser, (out / "compare.html").as_uri() + "#m=gradcam@bn2&i=chelsea,coffee")
    assert grid(browser)[1] == ["chelsea", "coffee"]
    assert all(s.startswith("file://") for s in map_sources(browser))


@pytest.mark.parametrize(
    "page",
    ["index.html", "images/chelsea.html", "compare.html", "about.html", "methods/gradcam.html"],
)
def test_phone_width_does_not_scroll_sideways(served, browser, page):
    _, base = served
    browser.set_window_size(390, 844)
    try:
        open_page(browser, base + page)
        wide = browser.execute_script("""
            const page = document.documentElement;
            return page.scrollWidth > page.clientWidth ? [page.scrollWidth, page.clientWidth] : null
        """)
        assert wide is None, f"{page} is wider than a phone: {wide}"
    finally:
        browser.set_window_size(1280, 1000)


@pytest.mark.parametrize("page", ["index.html", "compare.html", "images/chelsea.html"])
def test_tab_alone_reaches_every_control(served, browser, page):
    """Keyboard only: from the top of the page, Tab visits every visible control (links,
    buttons, boxes, sliders, lists, summaries; one stop per radio group, whose arrows move
    inside it) before it cycles back."""
    from selenium.webdriver.common.action_chains import ActionChains

    _, base = served
    fresh(browser, base + page)
    count = browser.execute_script("""
        const sel = 'a[href], button, input, select, textarea, summary, [tabindex]';
        const groups = new Set();
        let n = 0;
        document.querySelectorAll(sel).forEach(e => {
            const r = e.getBoundingClientRect(), s = getComputedStyle(e);
            const outer = e.tagName === 'SUMMARY' ? e.parentElement.parentElement : e;
            const folded = outer && outer.closest('details:not([open])');  // content not shown
            const hidden = folded || !r.width || !r.height || s.visibility === 'hidden';
            if (e.tabIndex < 0 || e.disabled || hidden) return;
            if (e.type === 'radio') {  // a group: the radios of one name in one form
                const key = e.name + '@' + Array.prototype.indexOf.call(document.forms, e.form);
                if (groups.has(key)) return;
                groups.add(key);
            }
            e.dataset.stop = n++;
        });
        document.activeElement.blur();
        return n;
    """)
    assert count > 10
    seen, actions = set(), ActionChains(browser)
    for _ in range(3 * count):
        actions.send_keys(Keys.TAB).perform()
        stop = browser.execute_script(
            "const e = document.activeElement; return e && e.dataset ? e.dataset.stop : null"
        )
        if stop is not None:
            if int(stop) in seen and len(seen) >= count:
                break
            seen.add(int(stop))
    missed = sorted(set(range(count)) - seen)
    described = browser.execute_script(
        "return arguments[0].map(i => document.querySelector(`[data-stop='${i}']`).outerHTML"
        ".slice(0, 120))",
        missed[:5],
    )
    assert not missed, f"{page}: {len(missed)} of {count} controls never get focus: {described}"


@pytest.mark.parametrize(
    "page", ["index.html", "compare.html", "images/chelsea.html", "layers/bn2.html"]
)
def test_nothing_moves_while_the_script_loads(fast_site, browser, page):
    """The first paint already shows what site.js adds or hides (filter boxes, column
    groups, the comparison grid, the map views' help): with every script held back for a
    second and a half, as on a slow network or a busy machine, the page does not move.
    Layout shift as the browser measures it (the Layout Instability API)."""
    with serve(fast_site, script_delay=1.5) as base:
        browser.get(base + page)
        browser.execute_script("localStorage.clear()")
        browser.get(base + page)
        shifts = browser.execute_async_script("""
            const done = arguments[arguments.length - 1], seen = [];
            new PerformanceObserver(list => seen.push(...list.getEntries()))
                .observe({type: 'layout-shift', buffered: true});
            setTimeout(() => done(seen.filter(e => !e.hadRecentInput).map(e => [e.value,
                e.sources.map(s => s.node ? s.node.nodeName + '#' + s.node.id : '?')])), 800);
        """)
    total = sum(value for value, _ in shifts)
    assert total < 0.01, f"{page}: layout shift {total:.3f} while its script loads: {shifts}"


def test_skip_link_and_theme_switch(served, browser):
    """The first Tab reaches a skip link that moves focus to the content; the theme switch
    cycles system -> light -> dark -> system, changes the colours at once and is
    remembered on the next page before it paints (set in the page's head)."""
    _, base = served
    fresh(browser, base + "index.html")
    press(browser, Keys.TAB)
    skip = browser.switch_to.active_element
    assert skip.get_attribute("class") == "skip" and skip.is_displayed()
    skip.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "main"
    background = "return getComputedStyle(document.body).backgroundColor"
    theme = "return document.documentElement.getAttribute('data-theme')"
    button = browser.find_element(By.CSS_SELECTOR, ".theme-toggle")
    assert button.text == "Theme: system" and browser.execute_script(theme) is None
    click(browser, button)
    assert browser.execute_script(theme) == "light"
    assert browser.execute_script(background) == "rgb(251, 251, 253)"
    click(browser, button)
    assert browser.execute_script(theme) == "dark" and button.text == "Theme: dark"
    assert browser.execute_script(background) == "rgb(20, 23, 28)"
    open_page(browser, base + "images/chelsea.html")
    assert browser.execute_script(theme) == "dark"
    assert browser.execute_script(background) == "rgb(20, 23, 28)"
    click(browser, browser.find_element(By.CSS_SELECTOR, ".theme-toggle"))
    assert browser.execute_script(theme) is None
