"""Capture on the CLI side: --capture is a share or one line, the record identity read back
from MLflow or image labels is validated before it becomes a container's environment, the
capture folder is made writable by the container's user, the setting is kept in the
endpoint's state, and status shows each container's counters."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlrig.core.deploy.state import Backend, Endpoint
from mlrig.core.shared import capture
from mlrig.errors import UsageError
from mlrig.main import app

runner = CliRunner()
GOOD = {
    "endpoint": "churn",
    "model": "churn-model",
    "version": "3",
    "digest": "sha256:" + "ab" * 32,
    "run_id": "0123456789abcdef0123456789abcdef",
}


@pytest.mark.parametrize(
    "argv", [["deploy", "--capture", "101"], ["image", "run", "--capture", "-1"]]
)
def test_a_capture_share_outside_0_100_is_one_line(argv: list[str]) -> None:
    result = runner.invoke(app, argv)
    assert result.exit_code != 0
    assert "is not a share" in result.output and "0-100" in result.output
    assert "Traceback" not in result.output


def test_the_identity_becomes_the_containers_environment() -> None:
    env = capture.container_env(10, capture.identity(**GOOD))
    assert env == {
        "MLRIG_CAPTURE_PERCENT": "10",
        "MLRIG_CAPTURE_DIR": capture.MOUNT_POINT,
        "MLRIG_ENDPOINT": "churn",
        "MLRIG_MODEL_NAME": "churn-model",
        "MLRIG_MODEL_VERSION": "3",
        "MLRIG_IMAGE_DIGEST": GOOD["digest"],
        "MLRIG_RUN_ID": GOOD["run_id"],
    }
    no_endpoint = capture.container_env(5, capture.identity(**(GOOD | {"endpoint": None})))
    assert "MLRIG_ENDPOINT" not in no_endpoint  # `image run`: the record says null


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("run_id", None),  # an image built without a run label
        ("run_id", "../../etc"),
        ("version", "3; rm -rf /"),
        ("digest", "sha256:short"),
        ("model", "a\nb"),
        ("endpoint", "Bad Name"),
    ],
)
def test_an_identity_that_is_not_valid_is_refused_with_one_line(field: str, value: Any) -> None:
    with pytest.raises(UsageError, match=f"the version's {field} is missing or not valid"):
        capture.identity(**(GOOD | {field: value}))


def test_as_root_the_folder_is_given_to_the_images_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a folder away")
    folder = tmp_path / "captures" / "churn"
    assert capture.writable_folder(folder, "1000:1000") is None  # the image's own user
    st = folder.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1000, 0o700)
    for refused in ("", "0", "0:0", "mlrig"):
        with pytest.raises(UsageError, match="not a numeric non-root user"):
            capture.writable_folder(folder, refused)


def test_anyone_else_runs_the_container_as_themselves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture.os, "geteuid", lambda: 1234)
    monkeypatch.setattr(capture.os, "getuid", lambda: 1234)
    monkeypatch.setattr(capture.os, "getgid", lambda: 999)
    folder = tmp_path / "c"
    assert capture.writable_folder(folder, "1000:1000") == "1234:999"
    assert folder.stat().st_mode & 0o777 == 0o700


def test_counters_that_are_not_counters_are_ignored() -> None:
    assert capture.parse_stats("not json") is None
    assert capture.parse_stats('{"percent": 500, "writer": "ab"}') is None
    stats = capture.parse_stats(
        '{"percent": 10, "writer": "ab12", "sampled": 5, "written": 3, "dropped": 1, '
        '"errors": 1, "queued": 0, "files": 1, "last_error": "OSError: No space left"}'
    )
    assert stats is not None and (stats.written, stats.dropped, stats.errors) == (3, 1, 1)


def test_state_written_before_capture_existed_reads_as_off() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    old = (
        '{"name": "churn", "backends": [{"model": "m", "version": "1", "digest": "sha256:x", '
        '"image": "r@sha256:x", "container": "c", "port": 9001, "weight": 100, '
        f'"since": "{now}"}}], "created_at": "{now}"}}'
    )
    ep = Endpoint.model_validate_json(old)
    assert ep.capture == 0 and ep.backends[0].capture == 0 and ep.backends[0].run_id is None
    with pytest.raises(ValueError, match="less than or equal to 100"):
        Endpoint.model_validate_json(old.replace('"name"', '"capture": 150, "name"'))


def test_deploy_passes_the_share_and_status_shows_the_counters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlrig.core.deploy import backend, endpoints

    monkeypatch.setattr(backend, "for_stack", lambda _stack: endpoints)
    calls: list[dict[str, Any]] = []
    b = Backend(
        model="m", version="2", digest="sha256:" + "a" * 64, image="r@sha256:" + "a" * 64,
        container="c", port=9001, weight=100, since=datetime(2026, 1, 1, tzinfo=UTC), capture=10,
    )  # fmt: skip
    ep = Endpoint(name="churn", backends=[b], created_at=b.since, capture=10)
    row = {
        "endpoint": "churn",
        "url": "http://127.0.0.1:1/endpoints/churn/invocations",
        "public": False,
        "proxy": "running",
        "keys": [],
        "key_count": 0,
        "serving": [
            {
                "model": "m",
                "version": "2",
                "digest": b.digest,
                "since": "2026-01-01T00:00:00+00:00",
                "traffic": 100,
                "container": "c",
                "capture": 10,
                "captured": {
                    "percent": 10.0,
                    "writer": "ab",
                    "sampled": 7,
                    "written": 3,
                    "dropped": 1,
                    "errors": 2,
                    "queued": 1,
                    "files": 1,
                    "last_error": "OSError: No space left",
                },  # fmt: skip
            }
        ],
        "previous": None,
        "capture": 10,
        "captures": "/stack/captures/churn",
    }

    def deploy(ref: str | None, **kwargs: Any) -> endpoints.Deployed:
        calls.append({"ref": ref, **kwargs})
        return endpoints.Deployed(ep, "http://127.0.0.1:1/endpoints/churn", None)

    monkeypatch.setattr(endpoints, "deploy", deploy)
    monkeypatch.setattr(endpoints, "status", lambda name=None, stack=None: [row])
    result = runner.invoke(app, ["deploy", "models:/m/2", "--capture", "10"])
    assert result.exit_code == 0, result.output
    assert calls[0]["capture"] == 10 and calls[0]["ref"] == "models:/m/2"
    runner.invoke(app, ["deploy", "models:/m/2"])
    assert calls[1]["capture"] is None  # keeps the endpoint's setting
    shown = runner.invoke(app, ["deploy", "status", "churn"]).output
    assert "capture 10%: 3 written, 1 dropped, 2 write errors, 1 queued" in shown
    assert "last error: OSError: No space left" in shown
    assert "capture 10% into /stack/captures/churn" in shown
    row["serving"][0]["captured"] = None  # type: ignore[index]
    shown = runner.invoke(app, ["deploy", "status", "churn"]).output
    assert "counters unavailable" in shown
