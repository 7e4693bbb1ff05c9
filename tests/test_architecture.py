"""The shape of the code base: which way imports point, and how large modules grow."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("reportgen", "evaluation")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "bench" in path.parts:  # benchmark scripts import everything; nothing imports them
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the project that ``name`` imports at run time (anywhere in the file,
    functions included; ``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            target = (
                (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            )
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            found |= set(subs) or {target}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.add(tuple(sorted(group)))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    """No two modules import each other, directly or through others (imports inside
    functions count; ``if TYPE_CHECKING:`` ones do not)."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == set()


def test_evaluation_metrics_and_statistics_need_neither_torch_nor_reportgen():
    """The metrics, the catalogue and the leaderboard's statistics stand alone (the renderer
    reads them without torch)."""
    paths = sorted((ROOT / "evaluation" / "metrics").glob("*.py"))  # the package, each module
    assert paths, "evaluation/metrics/ holds no modules"
    for name in ("catalogue", "leaderboard", "published"):
        paths.append(ROOT / "evaluation" / f"{name}.py")
    for path in paths:
        name = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                assert not any(n.split(".")[0] in ("torch", "reportgen") for n in names), name


MAX_LINES = 500
# measurement scripts: they measure reportgen, so they sit above both packages
MEASUREMENTS = ("evaluation/presets", "evaluation/bench/")


def test_no_module_over_500_lines():
    """Modules stay small enough to read in one sitting."""
    big = {
        path.relative_to(ROOT).as_posix(): n
        for path in _modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert big == {}


def test_evaluation_never_imports_reportgen():
    """Imports point one way, from ``reportgen`` to ``evaluation``; only the measurement
    scripts (preset measurements, benchmarks) use both."""
    for path in sorted((ROOT / "evaluation").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(MEASUREMENTS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("reportgen"), rel
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("reportgen") for a in node.names), rel


def test_every_package_is_installed():
    """Each folder of code is in pyproject's package list (else a wheel lacks it)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    for package in PACKAGES:
        for init in (ROOT / package).rglob("__init__.py"):
            name = ".".join(init.parent.relative_to(ROOT).parts)
            assert name in listed, f"{name} is missing from pyproject.toml's packages"


# The engine and the renderer know techniques by kind and metrics by their catalogue
# entry: a name of either written into them is a special case a newcomer must find.
ENGINE = ("pipeline.py", "context.py", "batch.py", "compute.py", "render")


def _named(text: str, names: set[str], html: bool) -> set[str]:
    """The names quoted in ``text`` (in a template, also read as ``methods.NAME`` or
    ``stats.NAME``; an HTML attribute's value, e.g. an anchor id, is not a name)."""
    found = set()
    for name in names:
        quoted = (
            rf"""(?<!=)["']{re.escape(name)}["']""" if html else rf"""["']{re.escape(name)}["']"""
        )
        if re.search(quoted, text) or (
            html and re.search(rf"\b(?:methods|stats)\.{re.escape(name)}\b", text)
        ):
            found.add(name)
    return found


def test_no_technique_or_metric_named_in_the_engine_or_the_renderer():
    """Page templates and the renderer loop over the registry and the catalogue; a view's
    own section template (``templates/sections/``) is where its name belongs. Family names
    ("cam", "baseline") are the registry's vocabulary, not special cases."""
    from evaluation import catalogue
    from reportgen.techniques import REGISTRY

    families = {t.family for t in REGISTRY.values()}
    options = {"target"}  # also the name of an option (--target), not only a record's
    names = (set(REGISTRY) - families) | {m.id for m in catalogue.CATALOGUE} - options
    files = [p for part in ENGINE for p in sorted((ROOT / "reportgen").glob(part + "*"))]
    files = [f for p in files for f in ([p] if p.is_file() else sorted(p.glob("*.py")))]
    files += sorted((ROOT / "templates").glob("*.html"))
    named = {
        path.relative_to(ROOT).as_posix(): found
        for path in files
        if (found := _named(path.read_text(), names, path.suffix == ".html"))
    }
    assert named == {}
