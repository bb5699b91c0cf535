"""The house rules hold and their checks can fail: import path = file path, mypy sees mlrig's
own types, the layer contracts catch a broken layer, and the wheel installs one namespace.

The checks are run the way the test command runs them (the project's own configuration in
pyproject.toml), on a scratch copy of the tree with one planted defect each.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PORTIONS = (REPO / "cli", REPO / "infra")


def _modules() -> list[tuple[str, Path]]:
    found = []
    for base in PORTIONS:
        for path in sorted((base / "mlrig").rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append((".".join(parts), path))
    return found


def test_every_module_is_imported_from_the_path_that_spells_its_name() -> None:
    modules = _modules()
    assert len(modules) > 50, "the scan found mlrig's modules"
    for name, path in modules:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        assert Path(spec.origin).resolve() == path.resolve(), (name, spec.origin)


def test_no_module_outside_the_mlrig_namespace_is_installable() -> None:
    # cli/ and infra/ hold only the `mlrig` portions (and Pulumi's entry script), so no
    # generic top-level `cli` or `infra` module can land in site-packages.
    assert sorted(p.name for p in (REPO / "cli").iterdir() if p.name != "__pycache__") == ["mlrig"]
    assert not (REPO / "cli" / "mlrig" / "__init__.py").exists()  # a PEP 420 namespace
    assert not (REPO / "infra" / "mlrig" / "__init__.py").exists()


def _scratch_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("cli", "infra"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def _plant(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text + "\n")


def test_mypy_fails_on_a_type_error_in_a_core_module(tmp_path: Path) -> None:
    root = _scratch_tree(tmp_path)
    victim = root / "cli/mlrig/core/shared/secrets.py"
    # contract.load takes a stack name (str): with first-party imports resolved this is an
    # error; were `mlrig` typed as Any, as it once was, it would pass silently
    _plant(victim, "from mlrig import contract as _c\n_planted = _c.load(123)")
    # the project's configuration, on the planted module and everything it imports
    result = subprocess.run(
        [str(BIN / "mypy"), "--cache-dir", str(tmp_path / "cache"), str(victim.relative_to(root))],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout
    assert errors[0].startswith("cli/mlrig/core/shared/secrets.py:")
    assert 'Argument 1 to "load" has incompatible type "int"; expected "str"' in errors[0]


# lint-imports over the scratch copy alone: the editable install's path hook would add the
# real checkout as a third portion of the `mlrig` namespace, so it is taken off sys.path
_LINT_SCRATCH = (
    "import sys; sys.path[:] = [p for p in sys.path if '__editable__' not in p]; "
    "from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
)


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{root / 'cli'}:{root / 'infra'}"}
    return subprocess.run(
        [sys.executable, "-c", _LINT_SCRATCH, "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_layer_contracts_fail_when_a_layer_is_broken(tmp_path: Path) -> None:
    root = _scratch_tree(tmp_path)
    _plant(
        root / "cli/mlrig/core/shared/secrets.py",
        "import docker  # noqa\nimport subprocess  # noqa",
    )
    _plant(root / "cli/mlrig/adapters/git.py", "from mlrig.commands import stack  # noqa")
    _plant(root / "infra/mlrig/infra/config.py", "from mlrig.core.shared import secrets  # noqa")
    _plant(root / "cli/mlrig/contract.py", "from mlrig.adapters import git as _g  # noqa")
    result = _lint_imports(root)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "mlrig.core.shared.secrets -> docker" in out
    assert "mlrig.core.shared.secrets -> subprocess" in out
    assert "mlrig.adapters.git -> mlrig.commands.stack" in out
    assert "mlrig.infra.config -> mlrig.core.shared.secrets" in out
    assert "mlrig.contract -> mlrig.adapters.git" in out
    for name in (
        "commands -> core -> adapters, never upward",
        "core reaches outside systems only through an adapter",
        "infra shares only neutral contract modules with the CLI",
        "neutral modules (contract, errors, paths, wait, ...) import no layer",
    ):
        assert f"{name} BROKEN" in out
    # the planted chain contract -> adapters -> commands also crosses the feature layers
    # and joins two command modules; only the _private, tracking and bootstrap rules hold
    assert "Contracts: 4 kept, 6 broken." in out


@pytest.mark.timeout(600)
def test_the_wheel_holds_one_namespace_with_its_data(tmp_path: Path) -> None:
    from tests.helpers import in_place_build

    out = tmp_path / "dist"
    with in_place_build():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                str(out),
                str(REPO),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
    (wheel,) = out.glob("mlrig-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"mlrig", wheel.name.split("-py3")[0] + ".dist-info"}
    for expected in (
        "mlrig/core/image/build.py",
        "mlrig/infra/program.py",
        "mlrig/infra/components/registry.py",
        "mlrig/_pipeline/copier.yml",
        "mlrig/_pipeline/template/dvc.yaml.jinja",
        "mlrig/_pipeline/template/.gitignore",
        "mlrig/_docker/serving/Dockerfile.tmpl",
        "mlrig/_docker/mlflow-server/Dockerfile",
    ):
        assert expected in names, expected
    # every module of the checkout ships: a package left out of pyproject's list is missing
    for name, path in _modules():
        if path.name != "__main__.py" or "infra" not in name:
            shipped = name.replace(".", "/") + (
                "/__init__.py" if path.stem == "__init__" else ".py"
            )
            assert shipped in names, f"{shipped} is not in the wheel (pyproject packages)"
    assert not any(n.endswith("__main__.py") and n.startswith("mlrig/infra") for n in names)
    # installed from the wheel alone, the data is found next to the package
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); from mlrig import assets; "
            "print(assets.pipeline_template()); print(assets.docker_dir())",
            str(target),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert probe.stdout.split() == [str(target / "mlrig/_pipeline"), str(target / "mlrig/_docker")]


def test_python_dash_m_mlrig_and_the_pulumi_entry_resolve() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "mlrig", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("mlrig ")
    assert "main: infra/" in (REPO / "Pulumi.yaml").read_text()
    entry = (REPO / "infra" / "__main__.py").read_text()
    assert "from mlrig.infra import program" in entry
    assert importlib.util.find_spec("mlrig.infra.program") is not None


def test_feature_contracts_fail_when_a_feature_rule_is_broken(tmp_path: Path) -> None:
    # house step 2: features layered (shared at the bottom, siblings independent, every
    # package placed), _private modules kept inside their package, commands apart
    root = _scratch_tree(tmp_path)
    core = root / "cli/mlrig/core"
    _plant(core / "shared/progress.py", "from mlrig.core.stack import stacks  # noqa")
    _plant(core / "trainer/serve.py", "from mlrig.core.demo import demo  # noqa")
    (core / "unplaced").mkdir()
    (core / "unplaced/__init__.py").write_text("")
    _plant(core / "image/build.py", "from mlrig.core.trainer import _store  # noqa")
    _plant(root / "cli/mlrig/commands/image.py", "from mlrig.commands import stack  # noqa")
    # init imports _update: adopt importing init would close a circle inside bootstrap
    _plant(core / "bootstrap/adopt.py", "from mlrig.core.bootstrap import init  # noqa")
    # the server image copies mlrig.tracking alone: an import of the CLI would fail there
    _plant(root / "cli/mlrig/tracking/oidc.py", "from mlrig import contract  # noqa")
    result = _lint_imports(root)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "mlrig.core.shared.progress -> mlrig.core.stack.stacks" in out
    assert "mlrig.core.trainer.serve -> mlrig.core.demo.demo" in out
    assert "mlrig.core.unplaced" in out
    assert "mlrig.core.image.build -> mlrig.core.trainer._store" in out
    assert "mlrig.commands.image -> mlrig.commands.stack" in out
    assert "mlrig.core.bootstrap.adopt -> mlrig.core.bootstrap.init" in out
    assert "mlrig.tracking.oidc -> mlrig.contract" in out
    assert "the tracking-server plugin imports only itself BROKEN" in out
    assert "core's feature packages are acyclic and layered, shared at the bottom BROKEN" in out
    assert "a _private module is imported only inside its own package BROKEN" in out
    assert "command modules do not import each other (only the shared options) BROKEN" in out
    # trainer -> demo -> trainer is also a cycle between mlrig.core's children
    assert "no import cycle inside a core package BROKEN" in out
    assert "bootstrap: init over update and adopt, their shared pieces below BROKEN" in out
    assert "Contracts: 4 kept, 6 broken." in out


def test_the_acyclic_contract_fails_on_a_cycle_inside_a_feature_package(tmp_path: Path) -> None:
    # a module importing one that imports it back, at run time or for the type checker only
    # (the knots deploy, monitor and provenance once had): each package is named
    root = _scratch_tree(tmp_path)
    core = root / "cli/mlrig/core"
    _plant(core / "monitor/_captures.py", "from mlrig.core.monitor import monitor  # noqa")
    _plant(
        core / "deploy/_aws_logs.py",
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mlrig.core.deploy import logs  # noqa",
    )
    # a sub-package counts as one module: stack.aws -> stack.facade -> stack.aws closes one
    _plant(core / "stack/facade.py", "from mlrig.core.stack.aws import stack as _aws  # noqa")
    _plant(core / "stack/aws/stack.py", "from mlrig.core.stack import facade as _f  # noqa")
    result = _lint_imports(root)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "no import cycle inside a core package BROKEN" in out
    for package in ("mlrig.core.monitor", "mlrig.core.deploy", "mlrig.core.stack"):
        assert f"No cycles are allowed in {package}." in out
    assert "Contracts: 9 kept, 1 broken." in out
