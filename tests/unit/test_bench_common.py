"""The benchmarks' shared set-up (bench/common.py): the client environment read from
`mlrig stack env` and the teardown of a throw-away home. mlrig's commands are replaced by a
recorder; the benchmarks themselves run against a real stack."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import REPO_ROOT


def load_common() -> ModuleType:
    path = REPO_ROOT / "bench" / "common.py"
    spec = importlib.util.spec_from_file_location("bench_common", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


common = load_common()


def test_the_stack_env_is_what_a_shell_gets_from_its_export_lines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {"MLRIG_REGISTRY_URL": "127.0.0.1:5001/models", "PW": "it's a = b", "EMPTY": ""}
    printed = "# a comment\n" + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())
    calls: list[tuple[Any, ...]] = []

    def sh(cwd: Path, *args: str, env: dict[str, str]) -> str:
        calls.append((cwd, *args))
        return printed

    monkeypatch.setattr(common, "sh", sh)
    assert common.stack_env(tmp_path, {}) == values
    assert calls == [(tmp_path, common.MLRIG, "stack", "env", "--stack", "local")]


@pytest.mark.parametrize("keep", [False, True])
def test_teardown_stops_the_stack_and_deletes_the_home_unless_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keep: bool
) -> None:
    home = tmp_path / "home"
    (home / "stacks").mkdir(parents=True)
    ran: list[list[str]] = []
    monkeypatch.setattr(common.subprocess, "run", lambda argv, **_kw: ran.append(argv))
    common.tear_down(home, {"MLRIG_HOME": str(home)}, keep=keep)
    assert ran == [[common.MLRIG, "stack", "down", "--stack", "local"]]
    assert home.exists() is keep
