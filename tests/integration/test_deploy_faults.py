"""`mlrig deploy` under bad input and faults, on the real stack, nginx and engine.

Each case checks the same three things: one clear line that says the way out (the real
CLI where the line is the point), the previous version still serving through the
endpoint's URL with its state unchanged, and nothing half-made left behind (no model
container the endpoint's state does not name). One endpoint, deployed once for the module;
set-up (bc-deploy's pushed versions) shared with test_deploy.py through `deploy_versions`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters import nginx, processes
from mlrig.core.deploy import endpoints, traffic
from mlrig.core.deploy import logs as deploy_logs
from mlrig.core.deploy.state import Store
from mlrig.core.image import build as image
from mlrig.core.image import push as serving_push
from mlrig.core.image import run as image_run
from mlrig.core.image import smoke
from mlrig.core.stack import stacks
from mlrig.core.stack.local.state import Layout
from mlrig.errors import DependencyMissing, PortInUse, ServiceError
from mlrig.wait import wait_until
from tests.helpers import register_misbehaving_model, wait_for_http

pytestmark = pytest.mark.integration

EP = "faulty"
USAGE, SERVICE, BUSY, SIGTERM_EXIT = 2, 5, 7, 143


@dataclass
class Result:
    code: int
    out: str
    err: str

    def one_clear_line(self, code: int, pattern: str) -> str:
        """Exactly one `error:` line matching pattern, no traceback, the documented code."""
        lines = [ln for ln in self.err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err and "internal error" not in self.err, self.err
        assert re.search(pattern, lines[0]), lines[0]
        assert self.code == code, (self.code, self.err)
        return lines[0]


def mlrig(*args: str, timeout: float = 300) -> Result:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "mlrig", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def call(url: str, body: bytes, key: str) -> requests.Response:
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(key.encode()).decode(),
    }
    return requests.post(url, data=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def serving(deploy_versions: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """EP serving v1 of bc-deploy behind a key: its URL, key and the model's example."""
    stack, v1 = deploy_versions["stack"], deploy_versions["v1"]
    done = endpoints.deploy(
        f"models:/{deploy_versions['model']}/{v1['version']}", endpoint=EP, stack=stack
    )
    assert done.key is not None
    yield {
        **deploy_versions,
        "url": f"{done.url}/invocations",
        "key": done.key,
        "example": image_run._example(done.endpoint.backends[0].container),
        "root": Layout(stack).root,
    }


def ref(s: dict[str, Any], which: str) -> str:
    return f"models:/{s['model']}/{s[which]['version']}"


def ours(s: dict[str, Any]) -> set[str]:
    """Every model container of EP on the engine, running or not."""
    return set(docker_adapter.container_states(f"mlrig-ep-{s['stack']}-{EP}-"))


def assert_untouched(s: dict[str, Any], before: Any) -> None:
    """The state is as it was, no container it does not name, and v1 answers."""
    assert Store(s["root"]).read(EP) == before
    assert ours(s) == {b.container for b in before.backends}
    answer = call(s["url"], s["example"], s["key"])
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == s["v1"]["version"]


def test_unknown_endpoint_or_ref_is_one_line(serving: dict[str, Any]) -> None:
    before, stack = Store(serving["root"]).read(EP), serving["stack"]
    mlrig("deploy", "status", "nope", "--stack", stack).one_clear_line(
        USAGE, r"no endpoint 'nope'.*endpoints: faulty.*mlrig deploy list"
    )
    mlrig("deploy", "rollback", "nope", "--stack", stack).one_clear_line(USAGE, "no endpoint")
    mlrig("deploy", "logs", "nope", "--stack", stack).one_clear_line(USAGE, "no endpoint")
    missing = f"models:/{serving['model']}/999999"
    mlrig("deploy", missing, "--endpoint", EP, "--stack", stack).one_clear_line(
        USAGE, "does not exist"
    )
    mlrig("deploy", "models:/../x", "--endpoint", EP, "--stack", stack).one_clear_line(
        USAGE, "is not models:/NAME/VERSION"
    )
    mlrig("deploy", "logs", EP, "--since", "soon", "--stack", stack).one_clear_line(
        USAGE, "--since 'soon'"
    )
    assert_untouched(serving, before)


def test_an_image_not_in_the_registry_or_tags_that_do_not_verify(
    serving: dict[str, Any],
) -> None:
    before, stack, v2 = Store(serving["root"]).read(EP), serving["stack"], serving["v2"]
    rest = endpoints.Site.open(stack).rest()
    tags = rest.model_version(serving["model"], v2["version"]).tags
    key = "mlrig.image.digest"
    try:
        absent = "sha256:" + hashlib.sha256(b"never pushed").hexdigest()
        rest.set_model_version_tag(serving["model"], v2["version"], key, absent)
        mlrig("deploy", ref(serving, "v2"), "--endpoint", EP, "--stack", stack).one_clear_line(
            USAGE, "is not in stack .*registry — push it again with `mlrig image push`"
        )
        rest.set_model_version_tag(serving["model"], v2["version"], key, "sha256:nothex")
        mlrig("deploy", ref(serving, "v2"), "--endpoint", EP, "--stack", stack).one_clear_line(
            USAGE, "do not name a digest in stack"
        )
        rest.set_model_version_tag(
            serving["model"], v2["version"], "mlrig.image.repository", "elsewhere.example/m"
        )
        mlrig("deploy", ref(serving, "v2"), "--endpoint", EP, "--stack", stack).one_clear_line(
            USAGE, "do not name a digest in stack"
        )
    finally:
        for k in (key, "mlrig.image.repository"):
            rest.set_model_version_tag(serving["model"], v2["version"], k, tags[k])
    assert_untouched(serving, before)


def test_nginx_missing_starts_nothing(
    serving: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = Store(serving["root"]).read(EP)
    monkeypatch.setattr(nginx, "BINARY", str(tmp_path / "no-nginx"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DependencyMissing, match="nginx is not installed") as caught:
        endpoints.deploy(ref(serving, "v2"), endpoint=EP, stack=serving["stack"])
    assert "apt-get install nginx" in str(caught.value.hint)
    monkeypatch.undo()
    assert_untouched(serving, before)


def test_a_container_that_crashes_on_start_is_removed(
    serving: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = Store(serving["root"]).read(EP)
    real = docker_adapter.run_container

    def crashing(image: str, **kw: Any) -> str:  # the server exits: PORT is not a number
        return real(image, **{**kw, "environment": {**kw["environment"], "PORT": "not-a-port"}})

    monkeypatch.setattr(docker_adapter, "run_container", crashing)
    with pytest.raises(ServiceError, match="exited.*the previous version keeps serving"):
        endpoints.deploy(ref(serving, "v2"), endpoint=EP, stack=serving["stack"])
    monkeypatch.undo()
    assert_untouched(serving, before)


def test_a_taken_proxy_port_is_one_line_and_up_brings_the_endpoint_back(
    serving: dict[str, Any], image_env: dict
) -> None:
    before, stack = Store(serving["root"]).read(EP), serving["stack"]
    layout, proxy = Layout(stack), Store(serving["root"]).proxy()
    assert proxy is not None
    processes.stop(layout.pid_file("nginx"))
    holder = socket.socket()
    # as nginx and mlrig's own port check do: connections the stopped nginx closed linger
    # in TIME_WAIT on this port (after test_deploy.py's traffic), which a plain bind refuses
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", proxy.port))
        holder.listen()
        with pytest.raises(PortInUse, match=f"port {proxy.port} .* is taken"):
            endpoints.deploy(ref(serving, "v2"), endpoint=EP, stack=stack)
        assert Store(serving["root"]).read(EP) == before
        assert ours(serving) == {b.container for b in before.backends}
    finally:
        holder.close()
        image_env["stack"].up()  # starts the endpoints' nginx again, on the kept port
    wait_for_http(serving["url"].replace("/invocations", "/ping"), timeout=30)
    assert_untouched(serving, before)


class Traffic(threading.Thread):
    """Steady keyed requests to the endpoint until stopped; the statuses seen."""

    def __init__(self, s: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.s, self.stop = s, threading.Event()
        self.codes: list[int] = []

    def run(self) -> None:
        while not self.stop.is_set():
            self.codes.append(call(self.s["url"], self.s["example"], self.s["key"]).status_code)
            self.stop.wait(0.05)

    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(timeout=30)


def test_a_canary_that_answers_500_is_refused_promotion_and_aborted_by_its_bake(
    serving: dict[str, Any],
) -> None:
    """The failing model has no pushed image: the first deploy builds and pushes it too."""
    before, stack = Store(serving["root"]).read(EP), serving["stack"]
    failing = register_misbehaving_model("bc-deploy-fails", "fails")
    bad = f"models:/bc-deploy-fails/{failing}"
    limits = traffic.CanaryLimits(min_requests=10)

    # no bake: the canary serves; promote judges what it answered and refuses
    done = endpoints.deploy(bad, endpoint=EP, stack=stack, canary=50, bake=0, limits=limits)
    assert done.endpoint.canary is not None and done.endpoint.canary.version == failing
    with Traffic(serving) as t:
        wait_until(lambda: len(t.codes) >= 40, timeout=120, what="40 requests")
    assert 500 in t.codes and 200 in t.codes
    mlrig("deploy", "promote", EP, "--stack", stack).one_clear_line(
        USAGE, r"over its limits: \d+ of its \d+ requests failed.*--force"
    )
    # `deploy logs` shows the canary's failures beside the stable's answers, by time
    lines = deploy_logs.read(EP, stack=stack, since="10m", tail=500)
    assert any(e.source == "nginx" and f"v{failing} 500" in e.text for e in lines)
    assert any(e.source == "nginx" and f"v{serving['v1']['version']} 200" in e.text for e in lines)
    assert any(e.source == f"v{failing}" for e in lines)  # its container's own output
    endpoints.abort(EP, stack=stack)

    # with a bake: aborted by itself while traffic flows, the record not moved
    with Traffic(serving), pytest.raises(ServiceError, match="was aborted: .* requests failed"):
        endpoints.deploy(bad, endpoint=EP, stack=stack, canary=50, bake=120, limits=limits)
    tags = endpoints.Site.open(stack).rest().model_version("bc-deploy-fails", failing).tags
    assert f"mlrig.endpoint.{EP}" not in tags
    assert tags["mlrig.image.digest"].startswith("sha256:")  # built and pushed by deploy
    assert_untouched(serving, before)


def test_sigterm_while_waiting_for_health_and_a_second_deploy_at_once(
    serving: dict[str, Any],
) -> None:
    """A model that takes minutes to load keeps `mlrig deploy` waiting for its health: a
    second deploy of the endpoint meanwhile is refused, and SIGTERM removes the half-started
    container and leaves v1 serving."""
    before, stack = Store(serving["root"]).read(EP), serving["stack"]
    slow = register_misbehaving_model("bc-deploy-slow", "slow")
    # `image build` would wait for its model and refuse it: built here without that start
    # check (as an older mlrig or another tool would have) and pushed, so deploy starts it
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(smoke, "check", lambda *_a, **_k: None)
        built = image.build(f"models:/bc-deploy-slow/{slow}", stack=stack)
    serving_push.push(built.ref, stacks.outputs(stack))
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlrig", "deploy", f"models:/bc-deploy-slow/{slow}"]
        + ["--endpoint", EP, "--stack", stack],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        serving_now = {b.container for b in before.backends}
        wait_until(
            lambda: bool(ours(serving) - serving_now),
            timeout=600,
            what="the slow version's container",
            give_up=lambda: "exited" if proc.poll() is not None else None,
        )
        mlrig("deploy", ref(serving, "v2"), "--endpoint", EP, "--stack", stack).one_clear_line(
            BUSY, "being changed by another mlrig command"
        )
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    Result(proc.returncode, out, err).one_clear_line(
        SIGTERM_EXIT, f"`mlrig deploy` of endpoint '{EP}' was stopped by SIGTERM"
    )
    assert_untouched(serving, before)


def test_stack_down_purge_removes_its_endpoint_containers_only(
    base_image: str, mlrig_home: Path
) -> None:
    """`stack down --purge` removes the model containers labelled with its stack's folder
    (another home's stack of the same name keeps its own) before it deletes the folder."""
    from mlrig.core.stack.local.stack import ENDPOINT_LABEL, LocalStack

    stack = LocalStack("purged")
    (stack.root / "endpoints").mkdir(parents=True)
    made = {
        root: docker_adapter.run_container(
            base_image,
            name=f"mlrig-ep-purged-{which}-{os.getpid()}",
            environment={},
            labels={ENDPOINT_LABEL: root},
        )
        for which, root in (("mine", str(stack.root)), ("other", "/elsewhere/stacks/purged"))
    }
    try:
        assert stack.down(purge=True) == []
        left = set(docker_adapter.containers_labelled({ENDPOINT_LABEL: str(stack.root)}))
        assert left == set() and not stack.root.exists()
        others = docker_adapter.containers_labelled({ENDPOINT_LABEL: "/elsewhere/stacks/purged"})
        assert others == [made["/elsewhere/stacks/purged"]]
    finally:
        for container in made.values():
            with contextlib.suppress(Exception):
                docker_adapter.remove_container(container)
