"""Tables keep whole addresses and paths when stdout is not a terminal (a pipe, a file, CI):
rich alone would cut them to 80 columns there. Run as a user pipes mlrig, in a fresh process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlrig import contract
from mlrig.contract import Mlflow
from mlrig.ui import UNLIMITED, width_for
from tests.helpers import sample

LONG_URI = "http://127.0.0.1:5000/" + "a-tracking-server-behind-a-long-path/" * 3
LONG_REMOTE = "/srv/" + "a-dvc-remote-folder-with-a-long-name/" * 3 + "remote"


def _piped(home: Path, *args: str, columns: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "MLRIG_STACK")}
    env["MLRIG_HOME"] = str(home)
    if columns is not None:
        env["COLUMNS"] = columns
    proc = subprocess.run(
        [sys.executable, "-m", "mlrig", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def long_stack(mlrig_home: Path) -> Path:
    out = sample("dev").model_copy(update={"mlflow": Mlflow(tracking_uri=LONG_URI)})
    out.dvc_remote.url = LONG_REMOTE
    contract.save(out)
    assert len(LONG_URI) > 80 and len(LONG_REMOTE) > 80
    return mlrig_home


def test_piped_tables_keep_long_addresses_whole(long_stack: Path) -> None:
    listed = _piped(long_stack, "stack", "list")
    shown = _piped(long_stack, "stack", "outputs", "--stack", "dev")
    for text in (listed, shown):
        lines = text.splitlines()
        assert any(LONG_URI in line for line in lines), text
        assert any(LONG_REMOTE in line for line in lines), text


def test_columns_set_by_the_user_still_sizes_a_pipe(long_stack: Path) -> None:
    narrow = _piped(long_stack, "stack", "list", columns="80")
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert LONG_URI not in narrow  # what every pipe got before


def test_a_terminal_is_left_to_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "120")
    assert width_for(Tty()) is None  # rich measures the terminal (and reads COLUMNS itself)
    assert width_for(io.StringIO()) == 120
    for unset in ("", "0", "wide"):
        monkeypatch.setenv("COLUMNS", unset)
        assert width_for(io.StringIO()) == UNLIMITED
    monkeypatch.delenv("COLUMNS")
    assert width_for(io.StringIO()) == width_for(None) == UNLIMITED
