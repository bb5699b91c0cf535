"""The docker adapter's one door for a container run as a task runs: what the local compute
backend and the rehearsal each ask docker-py for, and how the engine's refusals come back.
docker-py's client is replaced by a recorder; the engine itself is the integration tests'."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mlrig.adapters import docker as docker_adapter
from mlrig.errors import Conflict, ServiceError, UsageError


class _Containers:
    def __init__(self, refuse: Exception | None = None) -> None:
        self.runs: list[dict[str, Any]] = []
        self.lists: list[dict[str, Any]] = []
        self.refuse = refuse

    def run(self, image: str, **kwargs: Any) -> Any:
        self.runs.append({"image": image, **kwargs})
        if self.refuse:
            raise self.refuse

        class _Started:
            id = "c0ffee"

        return _Started()

    def list(self, **kwargs: Any) -> list[Any]:
        self.lists.append(kwargs)
        return []


@pytest.fixture
def containers(monkeypatch: pytest.MonkeyPatch) -> _Containers:
    found = _Containers()

    class _Client:
        containers = found

    monkeypatch.setattr(docker_adapter, "client", lambda: _Client())
    return found


SIZE = {"memory_mib": 2048, "cpu_units": 512}
COMMON = {"command": ["python", "-m", "x"], "user": "1000:1000", "environment": {"A": "1"}}


def test_the_rehearsals_container_gets_limits_and_cpu_weight_and_nothing_else(
    containers: _Containers,
) -> None:
    started = docker_adapter.run_task(
        "img", **COMMON, **SIZE, labels={"l": "v"}, network_mode="bridge", cpu_weight=True
    )
    assert started == "c0ffee"
    assert containers.runs == [
        {
            "image": "img",
            **COMMON,
            "network_mode": "bridge",
            "detach": True,
            "mem_limit": "2048m",
            "memswap_limit": "2048m",
            "nano_cpus": 500_000_000,
            "cpu_shares": 512,
            "labels": {"l": "v"},
        }
    ]


def test_a_retrain_task_is_named_has_init_and_mounts_and_no_cpu_weight(
    containers: _Containers,
) -> None:
    from docker.types import Mount

    docker_adapter.run_task(
        "img",
        **COMMON,
        **SIZE,
        labels={},
        name="mlrig-task-x",
        init=True,
        mounts=[("/host/in", "/in", True), ("/host/out", "/out", False)],
    )
    (run,) = containers.runs
    assert run["name"] == "mlrig-task-x" and run["init"] is True
    assert run["network_mode"] == "host" and "cpu_shares" not in run
    assert run["mounts"] == [
        Mount(target="/in", source="/host/in", type="bind", read_only=True),
        Mount(target="/out", source="/host/out", type="bind", read_only=False),
    ]


def _api_error(status: int) -> Callable[[], Exception]:
    def make() -> Exception:
        import docker.errors

        response = type("R", (), {"status_code": status, "reason": "x"})()
        return docker.errors.APIError("refused", response=response, explanation="refused")

    return make


def _no_image() -> Exception:
    import docker.errors

    return docker.errors.ImageNotFound("no such image")


@pytest.mark.parametrize(
    ("name", "refusal", "raised", "said"),
    [
        ("mlrig-task-x", _api_error(409), Conflict, "a container named mlrig-task-x exists"),
        (None, _api_error(409), ServiceError, "starting img failed: refused"),
        (None, _api_error(500), ServiceError, "starting img failed: refused"),
        ("mlrig-task-x", _no_image, UsageError, "the image img is not on the engine"),
    ],
)
def test_the_engines_refusal_is_one_error_line(
    containers: _Containers,
    name: str | None,
    refusal: Callable[[], Exception],
    raised: type[Exception],
    said: str,
) -> None:
    containers.refuse = refusal()
    with pytest.raises(raised) as caught:
        docker_adapter.run_task("img", **COMMON, **SIZE, labels={}, name=name)
    assert str(caught.value) == said


def test_containers_are_listed_by_every_label_all_or_running_only(
    containers: _Containers,
) -> None:
    docker_adapter.containers_labelled({"a": "1", "b": "2"})
    docker_adapter.containers_labelled({"a": "1"}, running=True)
    assert containers.lists == [
        {"all": True, "filters": {"label": ["a=1", "b=2"]}},
        {"all": False, "filters": {"label": ["a=1"]}},
    ]
