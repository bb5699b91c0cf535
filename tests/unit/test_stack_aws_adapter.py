"""The Pulumi adapter's error translation: one line in mlrig's tree, never a raw exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from pulumi import automation as auto
from pulumi.automation._cmd import CommandResult

from mlrig.adapters import pulumi as pulumi_adapter
from mlrig.errors import Conflict, CredentialsError, DependencyMissing, RemoteError


def _cmd_error(stderr: str, cls=auto.CommandError):  # type: ignore[no-untyped-def]
    return cls(CommandResult(stdout="Updating (dev)\n", stderr=stderr, code=255))


def test_missing_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DependencyMissing) as info:
        pulumi_adapter.cli_path()
    assert "get.pulumi.com" in info.value.one_line()


def test_select_stack_checks_the_cli_before_the_sdk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DependencyMissing):
        pulumi_adapter.select_stack(
            "s", lambda: None, backend_url=f"file://{tmp_path}", passphrase="x"
        )


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (FileNotFoundError(2, "No such file", "pulumi"), DependencyMissing, "not installed"),
        (
            _cmd_error("error: no valid credential sources for AWS Provider found"),
            CredentialsError,
            "AWS rejected or found no credentials",
        ),
        (
            _cmd_error("error: could not load plugin for aws provider: plugin not found"),
            DependencyMissing,
            "AWS provider plugin",
        ),
        (_cmd_error("", auto.ConcurrentUpdateError), Conflict, "another update"),
        (
            _cmd_error("warning: x\nerror: creating RDS DB Instance: InvalidParameterCombination"),
            RemoteError,
            "InvalidParameterCombination",
        ),
    ],
)
def test_translate(exc: BaseException, kind: type, text: str) -> None:
    err = pulumi_adapter.translate(exc, "pulumi up")
    assert type(err) is kind
    assert text in err.one_line() and "\n" not in err.one_line()
