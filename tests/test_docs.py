"""The documentation's code runs as written."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), flags=re.S)


def test_api_examples_run(capsys):
    code = blocks("api.md")
    assert len(code) >= 4
    scope: dict = {}
    for block in code:  # one scope: later blocks use earlier ones' names, as a reader would
        exec(compile(block, "docs/api.md", "exec"), scope)  # noqa: S102
    assert "gradcam layer4 (2, 2, 2) ok" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["metrics.md", "api.md", "performance.md"])
def test_docs_name_only_files_that_exist(name):
    root = DOCS.parent
    for path in re.findall(
        r"`((?:evaluation|reportgen|tests|docs|templates)/[\w/.]+)`", (DOCS / name).read_text()
    ):
        assert (root / path).exists() or (root / (path + ".py")).exists(), path
