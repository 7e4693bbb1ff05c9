"""Check a generated site: every link and image resolves, relative links only, alt text."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.missing_alt: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("href", "src", "data-own", "data-shared"):
            if attrs.get(key) is not None:
                self.refs.append((tag, attrs[key]))
        if tag == "img" and not attrs.get("alt"):
            self.missing_alt.append(attrs.get("src", "?"))


def check_site(out: Path) -> list[str]:
    """A list of problems (empty when the site is sound)."""
    problems = []
    pages = sorted(out.rglob("*.html"))
    if not pages:
        return [f"no pages under {out}"]
    for page in pages:
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for src in parser.missing_alt:
            problems.append(f"{page}: <img src={src}> has no alt text")
        for tag, ref in parser.refs:
            parts = urlsplit(ref)
            if parts.scheme in ("http", "https", "mailto"):
                continue
            if parts.scheme or ref.startswith("/"):
                problems.append(f"{page}: absolute link {ref}")
                continue
            if not parts.path:
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            if not target.is_file():
                problems.append(f"{page}: <{tag}> {ref} does not resolve")
            elif out.resolve() not in target.parents:
                problems.append(f"{page}: {ref} leaves the site")
    return problems
