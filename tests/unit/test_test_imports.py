"""Test modules share code through tests.helpers only: never another test module or a conftest."""

from __future__ import annotations

import ast

from tests.helpers import REPO_ROOT

ALLOWED = {"tests", "tests.helpers"}


def imported_test_modules(source: str) -> set[str]:
    """The tests.* modules a source imports (relative imports count: they reach a sibling)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.ImportFrom) and node.module == "tests":
            found.update(f"tests.{a.name}" for a in node.names)  # `from tests import conftest`
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {m for m in found if m.startswith(".") or m.split(".")[0] == "tests"}


def test_no_test_module_imports_another() -> None:
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(bad)
        for path in sorted((REPO_ROOT / "tests").rglob("*.py"))
        if (bad := imported_test_modules(path.read_text()) - ALLOWED)
    }
    assert offenders == {}, "move shared helpers into tests/helpers.py"


def test_the_check_sees_both_import_forms() -> None:
    src = "from tests.unit.test_contract import sample\nimport tests.conftest\n"
    assert imported_test_modules(src) == {"tests.unit.test_contract", "tests.conftest"}
    assert imported_test_modules("from tests.helpers import sample\n") == {"tests.helpers"}
    assert imported_test_modules("from tests import conftest\n") == {"tests.conftest"}
    assert imported_test_modules("from .conftest import DOMAIN\n") == {".conftest"}
    assert imported_test_modules("import json\nfrom mlrig import wait\n") == set()
