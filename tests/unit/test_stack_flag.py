"""Every command that needs a stack takes `--stack`.

A command needs a stack when its code reaches `stacks.resolve_name`, the one function that
answers "which stack?" (DESIGN: "one function answers 'which stack?'"). Reaching it is read
from the source: a call graph of mlrig's functions built from their names (`module.function`
through each module's imports, lazy ones included, and a class to its methods), walked from
each command's typer function. Calls through an object (`target.up()`) are not followed, so
a command can only be missed, never flagged by mistake; the check runs on the real app and
on planted defects, so it is known to fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from mlrig.main import app

CLI = Path(__file__).resolve().parents[2] / "cli"
RESOLVE = "mlrig.core.stack.stacks.resolve_name"
runner = CliRunner()


def _module_files(root: Path) -> dict[str, Path]:
    found = {}
    for path in (root / "mlrig").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(tree: ast.Module, module: str, is_package: bool) -> dict[str, str]:
    """Every name a module binds by import, anywhere in it (mlrig imports lazily)."""
    names: dict[str, str] = {}
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                names[alias.asname or alias.name] = f"{base}.{alias.name}"
    return names


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _references(body: ast.AST, imports: dict[str, str], local: set[str], module: str) -> set[str]:
    """Qualified names a function's body mentions (calls, or functions passed along)."""
    out = set()
    for node in ast.walk(body):
        if not isinstance(node, ast.Name | ast.Attribute):
            continue
        dotted = _dotted(node)
        if not dotted:
            continue
        head, _, rest = dotted.partition(".")
        if head in imports:
            out.add(imports[head] + (f".{rest}" if rest else ""))
        elif head in local:
            out.add(f"{module}.{dotted}")
    return out


@cache
def call_graph(root: Path = CLI) -> dict[str, set[str]]:
    """{module.function (or module.Class.method): the qualified names its body mentions};
    a class points at its methods."""
    files = _module_files(root)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text())
        imports = _imports(tree, module, path.name == "__init__.py")
        top = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
        local = {n.name for n in top}
        for node in top:
            name = f"{module}.{node.name}"
            if isinstance(node, ast.FunctionDef):
                graph[name] = _references(node, imports, local, module)
                continue
            methods = [m for m in node.body if isinstance(m, ast.FunctionDef)]
            graph[name] = {f"{name}.{m.name}" for m in methods}
            for m in methods:
                graph[f"{name}.{m.name}"] = _references(m, imports, local, module)
    return graph


def reaches(start: str, target: str, graph: dict[str, set[str]]) -> bool:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name == target:
            return True
        if name in seen:
            continue
        seen.add(name)
        todo.extend(graph.get(name, ()))
    return False


def _leaves(app: typer.Typer) -> Iterator[tuple[tuple[str, ...], object]]:
    def walk(cmd: object, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], object]]:
        subs = getattr(cmd, "commands", None)
        if subs is None or getattr(cmd, "invoke_without_command", False):
            yield path, cmd  # a group that runs on its own (`deploy REF`) is a command too
        for name, sub in (subs or {}).items():
            yield from walk(sub, (*path, name))

    yield from walk(typer.main.get_command(app), ())


def missing_stack_flag(app: typer.Typer, graph: dict[str, set[str]]) -> list[str]:
    """`mlrig …` commands whose code resolves a stack but which take no --stack."""
    problems = []
    for path, cmd in _leaves(app):
        callback = getattr(cmd, "callback", None)
        if not path or callback is None:
            continue
        name = f"{callback.__module__}.{callback.__qualname__}"
        takes = any("--stack" in getattr(p, "opts", ()) for p in getattr(cmd, "params", ()))
        if not takes and reaches(name, RESOLVE, graph):
            problems.append("mlrig " + " ".join(path))
    return problems


def test_every_command_that_resolves_a_stack_takes_stack() -> None:
    graph = call_graph()
    assert missing_stack_flag(app, graph) == []
    # the walk sees the commands that do resolve one, through core and lazy imports ...
    needing = [p for p, cmd in _leaves(app) if p and reaches(_name(cmd), RESOLVE, graph)]
    for expected in (("retrain",), ("image", "build"), ("deploy",), ("trace",), ("doctor",)):
        assert expected in needing, expected
    # ... and not those that need none (a local container, an offline plan, the engine)
    for local in (("image", "run"), ("stack", "plan"), ("setup", "engine"), ("stack", "list")):
        assert local not in needing, local
    assert len(needing) >= 25, needing  # most commands work on a stack


def _name(cmd: object) -> str:
    callback = getattr(cmd, "callback", None)
    return f"{callback.__module__}.{callback.__qualname__}" if callback else ""


def test_the_check_fails_on_a_command_that_resolves_without_the_flag(tmp_path: Path) -> None:
    graph = dict(call_graph())
    planted = typer.Typer()

    @planted.command()
    def frobnicate() -> None:
        """What `mlrig retrain` was before it took --stack: a core that resolves by itself."""

    @planted.command()
    def fine(stack: str = typer.Option(None, "--stack")) -> None:
        """Resolves too, and takes the flag."""

    for command in (frobnicate, fine):
        graph[f"{command.__module__}.{command.__qualname__}"] = {"mlrig.core.retrain._repo.outputs"}
    assert missing_stack_flag(planted, graph) == ["mlrig frobnicate"]
    assert missing_stack_flag(app, graph) == []  # the real app is unaffected

    # and from source: a command module and a core module with a lazy import
    root = tmp_path / "cli"
    (root / "mlrig" / "core" / "stack").mkdir(parents=True)
    (root / "mlrig" / "core" / "stack" / "stacks.py").write_text(
        "def resolve_name(flag=None):\n    return flag\n"
    )
    (root / "mlrig" / "core" / "feat.py").write_text(
        "def work():\n    from mlrig.core.stack import stacks as s\n    return s.resolve_name()\n"
    )
    (root / "mlrig" / "cmd.py").write_text(
        "from mlrig.core import feat\n\ndef run():\n    feat.work()\n"
    )
    built = call_graph.__wrapped__(root)
    assert reaches("mlrig.cmd.run", RESOLVE, built)
    assert not reaches("mlrig.core.feat.work", "mlrig.cmd.run", built)


def test_retrain_uses_the_stack_named_by_the_flag(
    mlrig_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig import contract
    from tests.helpers import git_as_tester, sample

    monkeypatch.delenv("MLRIG_STACK", raising=False)
    contract.save(sample("dev"))
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    (repo / ".copier-answers.yml").write_text("project_name: churn\nstack: dev\n")
    git_as_tester(repo, "init", "-q", "-b", "main")
    git_as_tester(repo, "add", "--all")
    git_as_tester(repo, "commit", "-qm", "a repository on stack dev")
    result = runner.invoke(app, ["retrain", "--repo", str(repo), "--stack", "elsewhere"])
    assert result.exit_code == 3, result.output
    assert "no stack named 'elsewhere' (known stacks: dev)" in result.output
    assert git_as_tester(repo, "status", "--porcelain") == ""  # nothing started
