"""The trainer's container image (docker/trainer), built from mlrig's wheel on the offline base
image and run as documented: host networking, the repo and mlrig's home mounted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import requests

from mlrig.core.stack.local.stack import free_port
from mlrig.wait import wait_until
from tests.helpers import VENV_BIN, repo_env, sh, wait_for_http

pytestmark = pytest.mark.integration


@pytest.mark.timeout(1800)
def test_the_image_serves_health_and_refuses_a_bad_token(
    docker_engine: Any, base_image: str, local_stack: dict, tmp_path: Path
) -> None:
    from mlrig.core.trainer import _image as trainer_image

    home = local_stack["home"]
    env = repo_env(home)
    mlrig = str(VENV_BIN / "mlrig")
    sh(tmp_path, mlrig, "init", "imgrig", "--stack", "local", "--no-input", env=env)
    repo = tmp_path / "imgrig"
    token = sh(repo, mlrig, "trainer", "token", env=env).strip()

    tag = trainer_image.build(base_image=base_image)
    port = free_port()
    container = docker_engine.containers.run(
        tag,
        command=["--repo", str(repo), "--port", str(port)],
        detach=True,
        init=True,  # reaps what a killed job's stages leave behind
        network_mode="host",
        user=f"{os.getuid()}:{os.getgid()}",
        environment={"MLRIG_HOME": str(home)},
        volumes={str(repo): {"bind": str(repo)}, str(home): {"bind": str(home)}},
    )
    try:

        def gone() -> str | None:
            container.reload()
            if container.status == "exited":
                return f"the container exited: {container.logs(tail=20).decode()}"
            return None

        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=120, give_up=gone)
        url = f"http://127.0.0.1:{port}/train"
        assert (
            requests.get(url, timeout=5, headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )
        assert requests.get(url, timeout=5).status_code == 401
        good = requests.get(url, timeout=5, headers={"Authorization": f"Bearer {token}"})
        assert good.status_code == 200 and good.json() == {"jobs": []}
        assert token not in container.logs().decode()
        container.stop(timeout=30)  # SIGTERM: a clean exit
        wait_until(lambda: gone() is not None, timeout=60, what="the container stopped")
        assert container.attrs["State"]["ExitCode"] in (0, 128 + 15)  # SIGTERM, handled
        assert "Application shutdown complete." in container.logs().decode()
    finally:
        container.remove(force=True)
