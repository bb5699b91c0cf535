"""One hop from a command to its code: `mlrig <group> <verb>` is `commands/<group>.py` over
`core/<group>/`, whose docstring names the verb. The few exceptions are listed here and
named in their package's docstring; core holds feature packages only, no flat module.

The check runs on the real typer app and on planted defects (a command with no home, a
verb its home does not name, a new flat `core/*.py`), so it is known to be able to fail.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import typer
import typer.main

CORE = Path(__file__).resolve().parents[2] / "cli" / "mlrig" / "core"

# top-level commands that share a package with another one (named in its docstring)
HOMES = {
    "init": "bootstrap",
    "update": "bootstrap",
    "trace": "provenance",
    "checkout": "provenance",
}
# commands whose typer function lives in another command module than their group's
COMMAND_MODULES = {("stack", "rehearse"): "rehearse", ("update",): "init"}
# core packages with no command of their own: the bottom layer and registry mechanics
NO_COMMAND = {"shared", "oci", "compute"}


def commands(app: typer.Typer) -> list[tuple[tuple[str, ...], str]]:
    """Every command path with the module its function is defined in."""
    found: list[tuple[tuple[str, ...], str]] = []

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs is not None:
            for name, sub in subs.items():
                walk(sub, (*path, name))
        else:
            found.append((path, cmd.callback.__module__))

    walk(typer.main.get_command(app), ())
    return found


def _docstring(package: Path) -> str:
    init = package / "__init__.py"
    if not init.exists():
        return ""
    return ast.get_docstring(ast.parse(init.read_text())) or ""


def homeless(found: list[tuple[tuple[str, ...], str]], core: Path) -> list[str]:
    """What breaks the one-hop rule; empty when every command has its home."""
    problems = []
    for path, module in found:
        group, shown = path[0], "mlrig " + " ".join(path)
        expected = f"mlrig.commands.{COMMAND_MODULES.get(path, group)}"
        if module != expected:
            problems.append(f"`{shown}` is defined in {module}, not {expected}")
        package = core / HOMES.get(group, group)
        doc = _docstring(package)
        if not doc:
            problems.append(f"`{shown}` has no home: no documented package {package.name}/")
        elif f"`mlrig {group}" not in doc or (len(path) > 1 and path[-1] not in doc):
            problems.append(f"{package.name}/'s docstring does not name `{shown}`")
    for flat in sorted(core.glob("*.py")):
        if flat.name != "__init__.py":
            problems.append(f"a flat module in core: {flat.name} (put it in its feature)")
    homes = {HOMES.get(path[0], path[0]) for path, _ in found} | NO_COMMAND
    for package in sorted(p for p in core.iterdir() if (p / "__init__.py").exists()):
        if package.name not in homes:
            problems.append(f"core/{package.name}/ is the home of no command")
    return problems


def test_every_command_is_one_hop_from_its_home() -> None:
    from mlrig.main import app

    found = commands(app)
    assert len(found) >= 29, found  # every command the CLI has today
    assert homeless(found, CORE) == []


def _scratch_core(tmp_path: Path) -> Path:
    core = tmp_path / "core"
    for package in CORE.iterdir():
        if (package / "__init__.py").exists():
            (core / package.name).mkdir(parents=True)
            (core / package.name / "__init__.py").write_text((package / "__init__.py").read_text())
    (core / "__init__.py").write_text("")
    return core


def test_the_check_fails_on_a_command_with_no_home_or_a_flat_module(tmp_path: Path) -> None:
    from mlrig.main import app

    core = _scratch_core(tmp_path)
    found = commands(app)
    assert homeless(found, core) == []  # the scratch copy holds every home

    planted = [*found, (("frobnicate",), "mlrig.commands.frobnicate")]
    assert homeless(planted, core) == [
        "`mlrig frobnicate` has no home: no documented package frobnicate/"
    ]

    planted = [*found, (("image", "sign"), "mlrig.commands.image")]
    assert homeless(planted, core) == ["image/'s docstring does not name `mlrig image sign`"]

    planted = [*found, (("image", "build"), "mlrig.commands.stack")]
    assert homeless(planted, core) == [
        "`mlrig image build` is defined in mlrig.commands.stack, not mlrig.commands.image"
    ]

    (core / "stack_helpers.py").write_text("")
    (core / "orphan").mkdir()
    (core / "orphan" / "__init__.py").write_text('"""Nobody\'s."""\n')
    assert homeless(found, core) == [
        "a flat module in core: stack_helpers.py (put it in its feature)",
        "core/orphan/ is the home of no command",
    ]
