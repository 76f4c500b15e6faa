"""The docs name real tests: every `path::test` in docs/reliability.md is a test function in that file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("libs/", "steps/", "orchestration/", "tools/")


def named_tests(doc: str) -> list[tuple[str, str]]:
    """(file, function) for every test the doc's tables name; `X/f.py` uses a "`X` = `folder/`" prefix,
    `::name` and a bare `f.py::name` continue from the file named before them in the same cell."""
    prefixes = dict(re.findall(r"`(\w+)` = `([\w/]+/)`", doc))
    found = []
    for cell in re.findall(r"\| ([^|\n]*::[^|\n]*) \|\s*$", doc, flags=re.MULTILINE):
        current = ""
        for ref in re.findall(r"`([^`\s]*::[^`\s]*)`", cell):
            path, name = ref.split("::", 1)
            if not path:
                path = current
            elif not path.startswith(ROOTS):
                key, _, rest = path.partition("/")
                path = prefixes[key] + rest if rest and key in prefixes else str(Path(current).parent / path)
            current = path
            found.append((path, name.split("[")[0]))
    return found


def test_every_test_that_docs_reliability_names_exists():
    refs = named_tests((REPO / "docs" / "reliability.md").read_text())
    assert len(refs) >= 100
    missing = []
    for path, name in refs:
        file = REPO / path
        functions = set()
        if file.is_file():
            functions = {n.name for n in ast.walk(ast.parse(file.read_text())) if isinstance(n, ast.FunctionDef)}
        if name not in functions:
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"


def test_the_reference_parser_follows_prefixes_and_continuations():
    doc = "`P` = `steps/p/tests/`.\n\n| a | b | `P/t.py::test_one`, `::test_two`, `u.py::test_three[x]` |\n"
    assert named_tests(doc) == [
        ("steps/p/tests/t.py", "test_one"),
        ("steps/p/tests/t.py", "test_two"),
        ("steps/p/tests/u.py", "test_three"),
    ]
