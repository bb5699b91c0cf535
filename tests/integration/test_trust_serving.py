"""The serving container survives its own limits (issue 27, items 7 and 14), for real: a
model image built from the local stack's MLflow, run with a small memory limit."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from mlrig.core.image import build as image
from mlrig.core.image import run as image_run
from mlrig.core.stack.local.stack import free_port
from mlrig.errors import ServiceError
from mlrig.main import app
from tests.helpers import register_model

pytestmark = pytest.mark.integration
runner = CliRunner()
MODEL = "bc-trust-serving"
MEMORY = "512m"  # small, so the body that used to kill it is cheap to send


@pytest.fixture(scope="module")
def built(image_env: dict) -> Any:
    version, _ = register_model(MODEL, 1.0)
    return image.build(f"models:/{MODEL}/{version}")


def _inputs_rows(size: int) -> bytes:
    """The costliest shape measured (~31x its size once parsed): rows of one small int."""
    head, tail = b'{"inputs": [', b"]}"
    rows = (size - len(head) - len(tail) + 1) // 4
    return head + b",".join([b"[0]"] * rows) + tail


def _state(container: str) -> dict[str, Any]:
    from mlrig.adapters import docker as docker_adapter

    return dict(docker_adapter.client().api.inspect_container(container))


def test_a_body_under_the_old_cap_that_killed_the_server_is_refused_and_it_stays_up(
    built: Any,
) -> None:
    from mlrig.adapters import docker as docker_adapter

    running = image_run.run(built.ref, port=free_port(), memory=MEMORY)
    try:
        info = _state(running.container)
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        url = f"{running.url}/invocations"
        json_ct = {"Content-Type": "application/json"}

        # 100,000-deep JSON: a 400, not a 500
        deep = b"[" * 100_000 + b"]" * 100_000
        resp = requests.post(url, data=deep, headers=json_ct, timeout=60)
        assert resp.status_code == 400, resp.text
        assert "nested deeper than" in resp.json()["message"]

        # 10^6 columns: a 400 that names the width, answered (no timing asserted)
        wide = json.dumps({"dataframe_split": {"data": [[0] * 10**6]}}).encode()
        resp = requests.post(url, data=wide, headers=json_ct, timeout=300)
        assert resp.status_code == 400, resp.text
        assert "The input has 1000000 columns" in resp.json()["message"]

        # 24 MiB: under the 64 MiB the server used to accept, ~750 MiB once parsed
        big = _inputs_rows(24 << 20)
        assert len(big) < 64 << 20
        resp = requests.post(url, data=big, headers=json_ct, timeout=300)
        assert resp.status_code == 413, resp.text
        message = resp.json()["message"]
        assert "--memory" in message
        cap = int(re.search(r"\((\d+) bytes\)", message)[1])  # type: ignore[index]
        logs = docker_adapter.container_logs(running.container, tail=50)
        assert f"body cap {cap} bytes" in logs, logs

        # the worst shape just under the fitted cap is scored (or refused) and the server lives
        resp = requests.post(url, data=_inputs_rows(cap - 16), headers=json_ct, timeout=300)
        assert resp.status_code == 400, resp.text  # one column of 30: not the model's input
        assert requests.get(f"{running.url}/ping", timeout=10).status_code == 200
        after = _state(running.container)
        assert after["State"]["Status"] == "running" and not after["State"]["OOMKilled"]
        assert after["RestartCount"] == 0
    finally:
        docker_adapter.remove_container(running.container)


def test_a_server_killed_for_memory_is_one_line_in_image_status_and_doctor(built: Any) -> None:
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.doctor import doctor

    port = free_port()
    name = f"mlrig-serve-{port}"
    try:
        with pytest.raises(ServiceError) as caught:  # the model does not fit in 40 MiB
            image_run.run(built.ref, port=port, memory="40m", keep=True)
        assert "killed for using more than its --memory limit" in caught.value.message
        assert _state(name)["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"

        result = runner.invoke(app, ["image", "status"])
        assert result.exit_code == 1, result.output
        lines = [ln for ln in result.output.splitlines() if ln.startswith(f"{name} ")]
        assert len(lines) == 1, result.output
        assert "killed for using more than its 40 MiB memory limit (exit 137)" in lines[0]

        check = doctor._serving_containers()
        assert check.status == doctor.WARN and "--memory" in check.fix
        assert lines[0].split(";")[1] in check.detail  # the same line

        result = runner.invoke(app, ["image", "run", built.ref, "--port", str(port)])
        assert result.exit_code != 0
        assert "killed for using more than its 40 MiB memory limit" in result.output
        assert f"docker rm -f {name}" in result.output
    finally:
        for c in docker_adapter.client().containers.list(all=True, filters={"name": f"^/{name}$"}):
            c.remove(force=True)
