"""Check a generated site's HTML: sound structure, relative links that resolve, alt text.

``check_site(out)`` returns a list of problems, empty when every page has a doctype, an
``<html lang>``, a non-empty title and exactly one ``<h1>``; every non-void element is
closed in order; ids are unique; every ``href``, ``src`` and ``data-own/photo/map/colours`` is
relative (no ``file://``, no root-absolute ``/``) and names a file inside the site; every
``<img>`` has alt text and a width and height (its box is kept while it loads: no layout
shift); every embedded JSON block parses.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}
LINKS = ("href", "src", "data-own", "data-photo", "data-map", "data-colours")


class PageParser(HTMLParser):
    """Collects one page's links and structural problems."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.stack: list[str] = []
        self.ids: set[str] = set()
        self.h1 = 0
        self.lang = None
        self.doctype = False
        self.title = ""
        self.json_blocks: list[str] = []

    def handle_decl(self, decl):
        self.doctype |= decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.lang = attrs.get("lang")
        self.h1 += tag == "h1"
        for key in LINKS:
            if attrs.get(key) is not None:
                self.refs.append((tag, attrs[key]))
        if tag == "img" and not (attrs.get("alt") or "").strip():
            self.problems.append(f"<img src={attrs.get('src', '?')}> has no alt text")
        if tag == "img" and not (attrs.get("width") and attrs.get("height")):
            self.problems.append(f"<img src={attrs.get('src', '?')}> has no width and height")
        if "id" in attrs:
            if attrs["id"] in self.ids:
                self.problems.append(f"duplicate id {attrs['id']!r}")
            self.ids.add(attrs["id"])
        if tag == "script" and attrs.get("type") == "application/json":
            self.json_blocks.append("")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag not in VOID:
            self.problems.append(f"<{tag}/> is not a void element")
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            self.problems.append(f"end tag </{tag}> of a void element")
        elif not self.stack or self.stack[-1] != tag:
            open_tag = self.stack[-1] if self.stack else "nothing"
            self.problems.append(f"</{tag}> closes <{open_tag}> (line {self.getpos()[0]})")
            if tag in self.stack:  # resynchronise, so one slip is one problem
                del self.stack[len(self.stack) - 1 - self.stack[::-1].index(tag) :]
        else:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "title":
            self.title += data
        if self.stack and self.stack[-1] == "script" and self.json_blocks:
            self.json_blocks[-1] += data

    def finish(self) -> list[str]:
        self.close()
        problems = list(self.problems)
        if self.stack:
            problems.append(f"unclosed elements: {self.stack}")
        if not self.doctype:
            problems.append("no <!doctype html>")
        if not self.lang:
            problems.append("<html> has no lang attribute")
        if not self.title.strip():
            problems.append("empty <title>")
        if self.h1 != 1:
            problems.append(f"{self.h1} <h1> elements (want 1)")
        for block in self.json_blocks:
            try:
                json.loads(block, parse_constant=_not_json)  # as strict as JSON.parse
            except ValueError as err:
                problems.append(f"embedded JSON does not parse: {err}")
        return problems


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")


def check_link(out: Path, page: Path, tag: str, ref: str) -> str | None:
    """The problem with one link of a page, or None."""
    parts = urlsplit(ref)
    if parts.scheme in ("http", "https", "mailto"):
        return None
    if parts.scheme or ref.startswith("/"):
        return f"absolute link {ref}"
    if not parts.path:
        return None  # "#anchor" or "?query" on the page itself
    target = (page.parent / unquote(parts.path)).resolve()
    if out.resolve() not in target.parents:
        return f"{ref} leaves the site"
    if not target.is_file():
        return f"<{tag}> {ref} does not resolve"
    return None


def check_site(out: Path) -> list[str]:
    """A list of problems (empty when the site is sound)."""
    pages = sorted(out.rglob("*.html"))
    if not pages:
        return [f"no pages under {out}"]
    problems = []
    for page in pages:
        parser = PageParser()
        parser.feed(page.read_text(encoding="utf-8"))
        problems += [f"{page}: {p}" for p in parser.finish()]
        for tag, ref in parser.refs:
            problem = check_link(out, page, tag, ref)
            if problem:
                problems.append(f"{page}: {problem}")
    return problems
