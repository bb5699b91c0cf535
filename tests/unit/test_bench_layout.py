"""The benchmarks' layout holds, and each check can fail: a folder per benchmark with its script
and README line, nothing but the shared modules at bench/'s top, no module over 450 lines in
bench/ or the model server's package, and bench reaching core only through public modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
SHARED = {"common.py", "report.py"}  # what every benchmark shares, at bench/'s top
MAX_LINES = 450


def misplaced(bench: Path) -> list[str]:
    """What breaks the layout: a script at the top beside the shared modules, or a folder
    without its NAME_bench.py and README.md."""
    found = [p.name for p in bench.glob("*.py") if p.name not in SHARED]
    for folder in sorted(p for p in bench.iterdir() if p.is_dir()):
        if folder.name in ("results", "__pycache__"):
            continue
        for need in (f"{folder.name}_bench.py", "README.md"):
            if not (folder / need).is_file():
                found.append(f"{folder.name}/{need}")
    return found


def too_long(root: Path, limit: int = MAX_LINES) -> list[str]:
    return [
        f"{p.relative_to(root)}: {n} lines"
        for p in sorted(root.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > limit
    ]


def private_core_imports(source: str) -> list[str]:
    """mlrig.core modules that a file imports although they are a feature's internals: a
    `_private` module anywhere on the path (the rehearsal's parts are
    mlrig.core.stack._rehearse.*, its public module mlrig.core.stack.rehearse)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return sorted(
        {
            n
            for n in names
            if n.startswith("mlrig.core.") and any(part.startswith("_") for part in n.split("."))
        }
    )


def test_a_folder_per_benchmark_with_its_script_and_readme() -> None:
    assert len([p for p in BENCH.iterdir() if p.is_dir()]) >= 10
    assert misplaced(BENCH) == []


def test_the_layout_check_fails_on_a_loose_script_or_a_folder_without_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "common.py").write_text("")
    (tmp_path / "loose_bench.py").write_text("")
    (tmp_path / "empty").mkdir()
    assert misplaced(tmp_path) == ["loose_bench.py", "empty/empty_bench.py", "empty/README.md"]


def test_no_module_over_450_lines_in_bench_or_the_model_server() -> None:
    assert too_long(BENCH) == []
    assert too_long(REPO / "docker" / "serving") == []


def test_the_size_check_fails_on_a_long_module(tmp_path: Path) -> None:
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "fits.py").write_text("x = 1\n" * MAX_LINES)
    assert too_long(tmp_path) == [f"long.py: {MAX_LINES + 1} lines"]


def test_bench_reaches_core_only_through_public_modules() -> None:
    files = sorted(BENCH.rglob("*.py"))
    assert len(files) > 10
    found = {str(p.relative_to(BENCH)): private_core_imports(p.read_text()) for p in files}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_public_module_check_fails_on_an_internal_import() -> None:
    planted = (
        "from mlrig.core.stack._rehearse.env import Services\n"
        "from mlrig.core.stack import _private\n"
        "import mlrig.core.image._layer\n"
        "from mlrig.core.stack.rehearse import Services, exit_reason\n"
    )
    assert private_core_imports(planted) == [
        "mlrig.core.image._layer",
        "mlrig.core.stack._private",
        "mlrig.core.stack._rehearse.env",
        "mlrig.core.stack._rehearse.env.Services",
    ]
