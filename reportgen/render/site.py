"""The site's files: Jinja environment and filters, thumbnails, the size budget, and the
incremental writer (a page or file is written only when its input changed)."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import zlib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from PIL import Image

from evaluation import catalogue

from .. import faults
from ..store import (
    ATLAS_COLUMNS,
    ATLAS_TILE,
    atomic_write,
    channel_map_path,
    feature_grid_path,
    learned_path,
    map_data_path,
    overlay_path,
)

THUMB_SIZE = 192  # long side of gallery thumbnails, px
RAW_DATA = ("data/maps", "data/parts")  # kept for notebooks and --resume, not published
# Size budget of the published site (README: Output layout): a fixed share for what every
# site has once (channel pages and their overlays, plots, assets, and since the synthesis
# views about 3.2 MB of filter visualisations, top patches, sanity strips and class models
# on the default run) and a share per image
BUDGET_FIXED = 7_000_000  # 5 MB, plus about 2 MB for the layer atlases (every channel)
BUDGET_PER_IMAGE = 2_500_000


def number(value, digits: int = 2) -> str:
    """Jinja filter: a number for a table cell, an en dash when missing."""
    try:
        if value is None or np.isnan(value):
            return "–"
    except TypeError:
        return str(value)
    return f"{value:.{digits}f}"


def significant(value, digits: int = 3) -> str:
    """Jinja filter: a number of any magnitude (a map's scale) in ``digits`` significant digits."""
    return number(value) if number(value) == "–" else f"{value:.{digits}g}"


def hue(value) -> int:
    """Jinja filter: a stable colour (hue in degrees) for a class name or id."""
    return zlib.crc32(str(value).encode()) % 360


def spread(values, low: float = 4, high: float = 96) -> list[float]:
    """Jinja filter: values mapped linearly onto [low, high] (a scatter's positions in %)."""
    values = np.asarray(values, dtype=float)
    lo, hi = values.min(), values.max()
    return list(low + (high - low) * (values - lo) / (hi - lo if hi > lo else 1))


def where(table, **equal):
    """Jinja filter: the rows of a table whose columns equal the values given."""
    keep = np.ones(len(table), dtype=bool)
    for column, value in equal.items():
        keep &= (table[column] == value).to_numpy()
    return table[keep]


def thumb(path: str) -> str:
    """The WebP gallery thumbnail of the site image ``img/<rel>``: ``img/thumbs/<rel>.webp``."""
    assert path.startswith("img/"), path
    return "img/thumbs/" + path[len("img/") :].rsplit(".", 1)[0] + ".webp"


def environment() -> Environment:
    folder = resources.files("reportgen.templates")
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = number
    env.globals["catalogue"] = catalogue.CATALOGUE  # the scores an image page lists, in order
    env.filters["sig"] = significant
    env.filters["hue"] = hue
    env.filters["spread"] = spread
    env.filters["where"] = where
    env.filters["mean"] = lambda values: float(np.mean(list(values)))
    env.globals["overlay"] = lambda image, method, layer: (
        "img/" + overlay_path(image, method, layer)
    )
    env.globals["map_data"] = lambda image, method, layer: (
        "img/" + map_data_path(image, method, layer)
    )
    env.globals["thumb"] = thumb
    env.globals["channel_map"] = lambda layer, channel, image: (
        "img/" + channel_map_path(layer, int(channel), image)
    )
    env.globals["feature_grid"] = lambda image, layer: "img/" + feature_grid_path(image, layer)
    env.globals["atlas_columns"], env.globals["atlas_tile"] = ATLAS_COLUMNS, ATLAS_TILE
    env.globals["learned"] = lambda technique, key, variant="": (
        "img/" + learned_path(technique, str(key), variant)
    )
    return env


@dataclass(frozen=True)
class Section:
    """A part of a page that a view adds: its anchor, its title for the page's contents,
    and its HTML."""

    anchor: str
    title: str
    body: Markup


@functools.cache
def section_templates(kind: str) -> tuple[str, ...]:
    """The section templates of a page kind, in name order (listed once per process: every
    layer and channel page asks)."""
    folder = resources.files("reportgen.templates").joinpath("sections", kind)
    return tuple(sorted(p.name for p in folder.iterdir() if p.name.endswith(".html")))


def sections(env: Environment, kind: str, **context) -> list[Section]:
    """The sections views add to pages of ``kind``: each template in
    ``templates/sections/<kind>/`` (in name order, so a number prefix places it) rendered
    with the page's context; one that renders nothing is left out. A section template sets
    ``anchor`` and ``title`` at its top."""
    found = []
    for name in section_templates(kind):
        module = env.get_template(f"sections/{kind}/{name}").make_module(vars=context)
        body = str(module)
        if body.strip():
            found.append(Section(module.anchor, module.title, Markup(body)))
    return found


def write_thumbnail(source: Path, target: Path) -> None:
    """A WebP copy of ``source`` with a long side of ``THUMB_SIZE`` px."""

    def write(tmp: str) -> None:
        with Image.open(source) as image:
            small = image.convert("RGB")
            small.thumbnail((THUMB_SIZE, THUMB_SIZE))
            # method 2 of libwebp's 0-6 effort scale: half the time of its default 4 at
            # 5 % more bytes (a 384 px overlay: 3.3 ms, 4.1 kB), over a thousand a run
            small.save(tmp, "WEBP", quality=75, method=2)

    atomic_write(target, write)


@dataclass
class SiteSize:
    """Bytes on disk: what a Pages deployment publishes, and the raw data it leaves out."""

    published: int  # everything but RAW_DATA: pages, assets, images, tables
    raw_data: int  # RAW_DATA: raw maps (npz) and parts
    images: int  # explained images

    @property
    def budget(self) -> float:
        return BUDGET_FIXED + BUDGET_PER_IMAGE * self.images

    @property
    def per_image(self) -> float:
        return self.published / max(self.images, 1)

    @classmethod
    def recorded(cls, out: str | Path) -> SiteSize:
        """The size the last ``render(out)`` measured (kept in its status file)."""
        status = json.loads((Path(out) / SiteWriter.STATUS).read_text())
        return cls(**status["size"])

    def __str__(self) -> str:
        return (
            f"site {self.published / 1e6:.1f} MB ({self.per_image / 1e6:.2f} MB per image; "
            f"budget {self.budget / 1e6:.1f} MB = {BUDGET_FIXED / 1e6:g} + "
            f"{BUDGET_PER_IMAGE / 1e6:g} per image), "
            f"plus {self.raw_data / 1e6:.1f} MB of raw maps and parts (not published)"
        )


def site_size(out: str | Path, images: int) -> SiteSize:
    """Measure the site under ``out`` that explains ``images`` images (the status file aside)."""
    out = Path(out)
    published = raw = 0
    for path in out.rglob("*"):
        if path.is_file() and path.name != SiteWriter.STATUS:
            rel = path.relative_to(out).as_posix()
            if rel.startswith(RAW_DATA):
                raw += path.stat().st_size
            else:
                published += path.stat().st_size
    return SiteSize(published, raw, images)


UNSIZED_IMG = re.compile(r'<img\b(?![^>]*\bwidth=)([^>]*?)\bsrc="([^"]+)"')
SVG_SIZE = re.compile(rb'<svg[^>]*?\bwidth="([\d.]+)(pt|px)?"[^>]*?\bheight="([\d.]+)(pt|px)?"')


_SIZES: dict[tuple[Path, float], tuple[int, int]] = {}


def image_size(path: Path) -> tuple[int, int] | None:
    """A written image's size in CSS pixels (an SVG's points at 96/72), or None if it is not
    there or unreadable. Cached by path and modification time."""
    try:
        key = (path, path.stat().st_mtime)
        if key not in _SIZES:
            found = _read_size(path)
            if found is None:
                return None
            _SIZES[key] = found
        return _SIZES[key]
    except OSError:
        return None


def _read_size(path: Path) -> tuple[int, int] | None:
    try:
        if path.suffix == ".svg":
            found = SVG_SIZE.search(path.read_bytes()[:2000])
            if not found:
                return None
            w, wu, h, hu = found.groups()
            scale = {b"pt": 96 / 72}
            return round(float(w) * scale.get(wu, 1)), round(float(h) * scale.get(hu, 1))
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError):
        return None


def sized_images(html: str, page_dir: Path) -> str:
    """Every ``<img>`` without a width gets its file's width and height, so the browser
    keeps its box before it loads (no layout shift; anchors land where they point). CSS
    still scales it (``height: auto``)."""

    def add(m: re.Match) -> str:
        src = m.group(2)
        size = None if ":" in src else image_size((page_dir / src).resolve())
        if size is None:
            return m.group(0)
        return f'<img width="{size[0]}" height="{size[1]}"{m.group(1)}src="{src}"'

    return UNSIZED_IMG.sub(add, html)


class SiteWriter:
    """Writes pages and files only when their content changed, like coverage.py's report.

    A status file keeps a hash of each output's input, so an unchanged re-render writes
    nothing and says so; outputs of an earlier render that this one did not make (an old
    hashed asset, the page of an image no longer in the run) are deleted.
    """

    STATUS = ".reportgen-status.json"
    OWNED = ("assets", "img/thumbs")  # folders that hold only what render writes

    def __init__(self, out: Path, env: Environment):
        self.out, self.env = out, env
        path = out / self.STATUS
        status = json.loads(path.read_text()) if path.is_file() else {}
        self.status: dict[str, str] = status.get("files", {})
        self.seen: set[str] = set()
        self.written = 0
        self.pages = 0

    def _changed(self, rel: str, digest: str) -> bool:
        self.seen.add(rel)
        if self.status.get(rel) == digest and (self.out / rel).is_file():
            return False
        self.status[rel] = digest
        self.written += rel.endswith(".html")
        return True

    def page(self, rel: str, template: str, **context) -> None:
        faults.checkpoint("page")  # the durability tests' kill mid-render
        self.pages += 1
        html = self.env.get_template(template).render(
            root="../" * rel.count("/"), page=rel, **context
        )
        html = sized_images(html, (self.out / rel).parent)
        if self._changed(rel, hashlib.sha256(html.encode()).hexdigest()):
            atomic_write(self.out / rel, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))

    def file(self, rel: str, source: bytes, make) -> None:
        """``make(path)`` writes ``rel`` when ``source`` (its input) changed."""
        if self._changed(rel, hashlib.sha256(source).hexdigest()):
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            make(self.out / rel)

    def thumbnail(self, path: str) -> None:
        """The thumbnail of the site image ``path`` (see ``thumb``), when that image exists."""
        source = self.out / path
        if source.is_file():
            self.file(thumb(path), source.read_bytes(), lambda t: write_thumbnail(source, t))

    def assets(self, folder) -> dict[str, str]:
        """Copy the static files under content-hashed names; returns
        ``{"style.css": "assets/style.<hash8>.css", ...}``."""
        names = {}
        for item in sorted(folder.iterdir(), key=lambda item: item.name):
            if item.is_file():
                content = item.read_bytes()
                stem, _, suffix = item.name.partition(".")
                rel = f"assets/{stem}.{hashlib.sha256(content).hexdigest()[:8]}.{suffix}"
                self.file(rel, content, lambda path, c=content: path.write_bytes(c))
                names[item.name] = rel
        return names

    def prune(self) -> None:
        """Delete what an earlier render wrote and this one did not."""
        stale = set(self.status) - self.seen
        for folder in self.OWNED:
            if (self.out / folder).is_dir():
                files = (p for p in (self.out / folder).rglob("*") if p.is_file())
                stale |= {p.relative_to(self.out).as_posix() for p in files} - self.seen
        for rel in stale:
            (self.out / rel).unlink(missing_ok=True)
            self.status.pop(rel, None)
        for folder in self.OWNED:  # and the folders that emptied
            for path in sorted((self.out / folder).rglob("*"), reverse=True):
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()

    def save(self, size: SiteSize) -> None:
        text = json.dumps({"files": self.status, "size": asdict(size)}, indent=0, sort_keys=True)
        atomic_write(self.out / self.STATUS, lambda tmp: Path(tmp).write_text(text))
