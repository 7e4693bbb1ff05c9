"""The default site in a real browser (headless Chromium), served under a sub-path.

Fails on any console error, broken link, image that did not load, a table that does
not sort, or a scale toggle that does not swap the heat maps.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from reportgen.cli import main

from .conftest import FAST_RUN

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PREFIX = "/reportgen/"

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    if os.environ.get("REPORTGEN_REQUIRE_BROWSER"):  # set by .ci/run: never skip there
        raise RuntimeError("chromium and chromedriver are required but not installed")
    pytest.skip(
        "needs Debian's chromium and chromium-driver (README: Development)", allow_module_level=True
    )


class SubPathHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site under /reportgen/ only, as GitHub Pages does for a project site."""

    def translate_path(self, path: str) -> str:
        if not path.startswith(PREFIX):
            return str(Path(self.directory) / "__outside_the_prefix__")
        return super().translate_path("/" + path[len(PREFIX) :])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser-site")
    assert main(["run", "--out", str(out), "--limit", "3", "--batch-size", "3", *FAST_RUN]) == 0
    handler = functools.partial(SubPathHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield out, f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"
    server.shutdown()


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
    "images/chelsea.html",
    "methods/gradcampp.html",
    "methods/saliency.html",
    "methods/feature_maps.html",
    "layers/bn2.html",
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


def test_shared_scale_toggle_swaps_heat_maps(served, browser):
    _, base = served
    open_page(browser, base + "images/coffee.html")
    first = browser.find_element(By.CSS_SELECTOR, "img[data-shared]")
    own = first.get_attribute("src")
    click(browser, browser.find_element(By.CSS_SELECTOR, "input.shared-scale"))
    assert first.get_attribute("src").endswith(".shared.jpg") and first.get_attribute("src") != own
    open_page(browser, base + "images/coffee.html")  # remembered, and the images load
    box = browser.find_element(By.CSS_SELECTOR, "input.shared-scale")
    assert box.is_selected()
    first = browser.find_element(By.CSS_SELECTOR, "img[data-shared]")
    assert first.get_attribute("src").endswith(".shared.jpg")
    click(browser, box)
    assert first.get_attribute("src") == own
