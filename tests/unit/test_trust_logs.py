"""The pipeline's log under .dvc/tmp/ is a path an earlier process (or anyone with the
repository) may have left a symlink at: the stages' output is never written through one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlrig.adapters import dvc
from mlrig.errors import ConfigError


def test_the_pipeline_log_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("kept\n")
    log = tmp_path / "mlrig-retrain.log"
    log.symlink_to(victim)
    stdout = os.dup(1)
    try:
        with (
            pytest.raises(ConfigError, match="cannot write the pipeline's log"),
            dvc._fds_to(log),
        ):
            os.write(1, b"a stage's output\n")
        assert os.fstat(1).st_ino == os.fstat(stdout).st_ino  # fd 1 is where it was
    finally:
        os.close(stdout)
    assert victim.read_text() == "kept\n"


def test_a_plain_log_file_gets_the_stages_output(tmp_path: Path) -> None:
    log = tmp_path / "mlrig-retrain.log"
    with dvc._fds_to(log):
        os.write(1, b"one\n")
        os.write(2, b"two\n")
    assert log.read_bytes() == b"one\ntwo\n"
