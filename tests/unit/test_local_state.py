"""The local stack's state files without services: recovery rules, corrupt files, modes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlrig import contract
from mlrig.core.shared.files import loose_modes, private_dir, storage_error
from mlrig.core.stack import stacks
from mlrig.core.stack.local.state import (
    Layout,
    LocalState,
    recover_state,
    restore_secrets,
    write_state,
)
from mlrig.errors import ConfigError, Conflict, CredentialsError
from tests.helpers import sample


def local_stack_on_disk(name: str = "dev") -> tuple[Layout, LocalState]:
    """What a finished `up` leaves: local.json, outputs.json and some stored data."""
    layout = Layout(name)
    state = LocalState.model_validate(
        {
            "name": name,
            "mlflow_port": 5100,
            "registry_port": 5101,
            "created_at": "2026-01-01T00:00:00Z",
        }
    )
    write_state(layout, state)
    contract.atomic_write(layout.outputs_file, layout.outputs(state).model_dump_json(), mode=0o600)
    (layout.mlflow_dir).mkdir()
    (layout.mlflow_dir / "mlflow.db").write_bytes(b"runs")
    return layout, state


def test_local_json_is_the_source_and_outputs_json_its_backup(mlrig_home: Path) -> None:
    layout, state = local_stack_on_disk()
    assert recover_state(layout) == (state, "")
    for damage in (b"", b'{"name": "dev", "mlflow', os.urandom(32)):
        layout.state_file.write_bytes(damage)
        recovered, note = recover_state(layout)
        assert recovered == state and "corrupt: rebuilt from outputs.json" in note
    layout.state_file.unlink()
    assert recover_state(layout) == (state, "local.json was missing: rebuilt from outputs.json")


def test_both_lost_names_the_ports_to_restore_and_never_purge(mlrig_home: Path) -> None:
    layout, _ = local_stack_on_disk()
    (layout.registry_dir).mkdir()
    (layout.registry_dir / "config.yml").write_text("http:\n  addr: 127.0.0.1:5101\n")
    layout.state_file.unlink()
    layout.outputs_file.write_text("{")
    with pytest.raises(ConfigError, match="ports are lost") as info:
        recover_state(layout)
    assert "--registry-port 5101" in info.value.one_line()
    assert "purge" not in info.value.one_line()


def test_a_folder_without_data_or_state_is_a_new_stack(mlrig_home: Path) -> None:
    layout = Layout("new")
    private_dir(layout.secrets_dir)
    assert recover_state(layout) == (None, "")


def test_state_in_a_directory_is_refused_not_deleted(mlrig_home: Path) -> None:
    layout, _ = local_stack_on_disk()
    layout.state_file.unlink()
    layout.state_file.mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        recover_state(layout)
    assert layout.state_file.is_dir()


def test_lost_or_empty_secrets_are_generated_private(mlrig_home: Path) -> None:
    layout = Layout("dev")
    assert sorted(restore_secrets(layout)) == sorted(
        ["mlflow-admin", "registry", "mlflow-flask", "registry-http"]
    )
    kept = layout.secret_file("registry").read_text()
    layout.secret_file("mlflow-admin").write_text("\n")
    assert restore_secrets(layout) == ["mlflow-admin"]
    assert layout.secret_file("registry").read_text() == kept
    for f in layout.secrets_dir.iterdir():
        assert f.stat().st_mode & 0o777 == 0o600
    layout.secret_file("registry").unlink()
    layout.secret_file("registry").mkdir()
    with pytest.raises(CredentialsError, match="is a directory"):
        restore_secrets(layout)


@pytest.mark.parametrize(
    "write, needle",
    [
        (lambda p: p.write_text(""), "is empty"),
        (lambda p: p.write_text('{"schema_version": 1, "na'), "not valid JSON"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "not text"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_corrupt_outputs_is_one_line_and_list_shows_it_broken(
    mlrig_home: Path, write: object, needle: str
) -> None:
    contract.save(sample("good"))
    path = contract.outputs_path("bad")
    path.parent.mkdir(parents=True)
    assert callable(write)
    write(path)
    with pytest.raises(ConfigError, match=needle) as info:
        contract.load("bad")
    assert str(path) in info.value.one_line() and "stack up --stack bad" in info.value.one_line()
    listed = {s.name: s for s in stacks.list_stacks()}
    assert listed["good"].problem == "" and listed["good"].mlflow == "http://127.0.0.1:5000"
    assert listed["bad"].kind == "broken" and needle in listed["bad"].problem


def test_outputs_naming_another_stack_are_refused(mlrig_home: Path) -> None:
    path = contract.outputs_path("copy")
    path.parent.mkdir(parents=True)
    path.write_text(sample("orig").model_dump_json())
    with pytest.raises(contract.WrongFolder, match="names stack 'orig', not 'copy'"):
        contract.load("copy")
    with pytest.raises(contract.WrongFolder):
        contract.ensure_kind("copy", "local")


def test_a_local_stack_with_broken_outputs_still_opens_as_local(mlrig_home: Path) -> None:
    layout, _ = local_stack_on_disk("dev")
    layout.outputs_file.write_text("{")
    assert stacks.open("dev").kind == "local"
    contract.ensure_kind("dev", "local")  # `up --local` may rewrite it
    with pytest.raises(Conflict, match="is a local stack"):
        contract.ensure_kind("dev", "aws")
    layout.outputs_file.unlink()
    assert "dev" in contract.list_names()
    with pytest.raises(ConfigError, match="first `up` did not finish"):
        contract.load("dev")


def test_loose_modes_and_the_guarded_remote(tmp_path: Path) -> None:
    root = private_dir(tmp_path / "stack")
    private_dir(root / "dvc-remote" / "files")
    (root / "dvc-remote" / "files" / "obj").write_text("x")
    os.chmod(root / "dvc-remote" / "files" / "obj", 0o444)  # what DVC does to its objects
    (root / "outputs.json").write_text("{}")
    os.chmod(root / "outputs.json", 0o600)
    os.chmod(root / "dvc-remote" / "files", 0o755)  # noqa: S103 - the loose mode under test
    assert loose_modes(root, guarded=("dvc-remote",)) == (0, [])
    assert loose_modes(root)[0] == 2
    os.chmod(root / "dvc-remote", 0o755)  # noqa: S103 - an open guard protects nothing
    assert loose_modes(root, guarded=("dvc-remote",))[0] == 3


def test_storage_errors_are_one_line(mlrig_home: Path) -> None:
    import errno

    full = storage_error(OSError(errno.ENOSPC, "No space left on device"), mlrig_home / "x")
    assert full.exit_code == 3 and "no space left" in full.one_line()
    ro = storage_error(OSError(errno.EROFS, "Read-only file system"), mlrig_home / "x")
    assert "Read-only file system" in ro.one_line() and "MLRIG_HOME" in ro.one_line()
    assert json.loads(json.dumps(ro.one_line()))  # plain text, one line
    assert "\n" not in ro.one_line()
