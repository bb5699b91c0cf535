"""`mlrig deploy` on the real local stack: real nginx in front of real model containers.

One module-scoped walk: deploy → 401 without a key → 200 with it (the container's own
answer) → a 50% canary where both versions answer → promote → rollback → delete; and the
stack's `down` stops nginx and the keeper of its request logs. No timing assertions.
"""

from __future__ import annotations

import base64
import collections
import json
from typing import Any

import pytest
import requests

from mlrig.core.deploy import endpoints
from mlrig.core.deploy.state import Store
from mlrig.core.image import run as image_run
from mlrig.core.stack.local.state import Layout
from mlrig.errors import UsageError
from tests.helpers import wait_for_http

pytestmark = pytest.mark.integration

NAME = "churn"
MODEL = "bc-deploy"  # deploy_versions' model


@pytest.fixture(scope="module")
def pushed(deploy_versions: dict[str, Any]) -> dict[str, Any]:
    return deploy_versions


def ref(version: dict[str, Any]) -> str:
    return f"models:/{MODEL}/{version['version']}"


def call(url: str, body: bytes, key: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Basic " + base64.b64encode(key.encode()).decode()
    return requests.post(url, data=body, headers=headers, timeout=30)


def test_deploy_keys_canary_promote_rollback_delete(
    pushed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, v1, v2, v3 = pushed["stack"], pushed["v1"], pushed["v2"], pushed["v3"]
    root = Layout(stack).root

    with pytest.raises(UsageError, match="does not exist"):
        endpoints.deploy(f"models:/{MODEL}/999999", endpoint=NAME, stack=stack)
    assert Store(root).read(NAME) is None

    done = endpoints.deploy(ref(v1), endpoint=NAME, stack=stack)
    assert done.key and done.url.startswith("http://127.0.0.1:")
    url = f"{done.url}/invocations"
    first = done.endpoint.backends[0]
    example = image_run._example(first.container)
    direct = requests.post(
        f"http://127.0.0.1:{first.port}/invocations",
        data=example,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert direct.status_code == 200

    # the key is checked by nginx; only its hash is on disk
    assert call(url, example, None).status_code == 401
    key_id, secret = done.key.split(":", 1)
    assert call(url, example, f"{key_id}:wrong").status_code == 401
    ok = call(url, example, done.key)
    assert ok.status_code == 200 and ok.json() == direct.json()
    assert ok.headers["X-Model-Version"] == v1["version"]
    assert requests.get(f"{done.url}/ping", timeout=5).status_code == 200
    for path in root.rglob("*"):
        if path.is_file() and path.suffix != ".log":
            assert secret.encode() not in path.read_bytes(), path

    # keys: a second one works, a revoked one is refused from the next request
    extra = endpoints.create_key(NAME, stack=stack)
    assert call(url, example, extra).status_code == 200
    endpoints.revoke_key(NAME, extra.split(":", 1)[0], stack=stack)
    assert call(url, example, extra).status_code == 401
    assert [k["id"] for k in endpoints.list_keys(NAME, stack=stack)] == [key_id]

    # a new version that never gets healthy: removed, v1 serves on, the state is unchanged
    from mlrig.adapters import docker as docker_adapter
    from mlrig.errors import ServiceError

    def never(container: str, port: int) -> None:
        raise ServiceError("the new model container never answered /ping")

    before = Store(root).read(NAME)
    monkeypatch.setattr(endpoints, "_wait_healthy", never)
    with pytest.raises(ServiceError, match="never answered"):
        endpoints.deploy(ref(v2), endpoint=NAME, stack=stack)
    monkeypatch.undo()
    assert Store(root).read(NAME) == before
    ours = f"mlrig-ep-{stack}-{NAME}-"  # the engine is shared: other stacks' endpoints run too
    assert not [n for n in docker_adapter.container_states(ours) if f"-v{v2['version']}-" in n]
    assert call(url, example, done.key).headers["X-Model-Version"] == v1["version"]

    # a 50% canary: both versions answer, through the same URL and key
    endpoints.deploy(ref(v2), endpoint=NAME, stack=stack, canary=50, bake=0)
    seen = collections.Counter(
        call(url, example, done.key).headers.get("X-Model-Version") for _ in range(200)
    )
    assert set(seen) == {v1["version"], v2["version"]}, seen
    (row,) = endpoints.status(NAME, stack=stack)
    assert [b["traffic"] for b in row["serving"]] == [50, 50]

    v1_container = row["serving"][0]["container"]
    endpoints.promote(NAME, stack=stack)
    # v1 drained, and stays up unrouted as the warm previous version a rollback re-points to
    assert docker_adapter.container_status(v1_container) == "running"
    got = {call(url, example, done.key).headers["X-Model-Version"] for _ in range(20)}
    assert got == {v2["version"]}
    (row,) = endpoints.status(NAME, stack=stack)
    assert [b["version"] for b in row["serving"]] == [v2["version"]]

    v2_container = row["serving"][0]["container"]
    back = endpoints.rollback(NAME, stack=stack)
    assert back.backends[0].container == v1_container  # re-pointed, not started again
    assert back.previous is not None and back.previous.container == v2_container
    answer = call(url, example, done.key)
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == v1["version"]
    assert answer.json() == direct.json()
    assert json.loads(json.dumps(endpoints.status(stack=stack)))[0]["public"] is False

    # v3 was built, never pushed: deploy pushes it first and serves it by the digest it
    # reads back, which the version's tags now name
    done3 = endpoints.deploy(ref(v3), endpoint=NAME, stack=stack)
    served = done3.endpoint.backends[0]
    assert served.version == v3["version"]
    # v1 is the warm previous now; v2, the one kept before it, was stopped and removed
    assert done3.endpoint.previous is not None
    assert done3.endpoint.previous.container == v1_container
    assert not [n for n in docker_adapter.container_states(ours) if f"-v{v2['version']}-" in n]
    tags = endpoints.Site.open(stack).rest().model_version(MODEL, v3["version"]).tags
    assert tags["mlrig.image.digest"] == served.digest
    answer = call(url, example, done.key)
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == v3["version"]
    assert answer.json() == {"predictions": v3["expected"]}

    endpoints.delete(NAME, stack=stack)
    assert endpoints.status(stack=stack) == []
    assert not docker_adapter.container_states(ours)  # the warm previous went too
    assert call(url, example, done.key).status_code == 404


def test_public_is_flagged_until_a_first_key_and_each_change_is_audited(
    pushed: dict[str, Any],
) -> None:
    """--public answers without a key and doctor warns; its first key ends it (401 without,
    200 with); deploy, key create and delete are lines of the stack's audit trail."""
    from mlrig import contract
    from mlrig.core.access import view as access_view
    from mlrig.core.doctor import doctor

    stack, v1, name = pushed["stack"], pushed["v1"], "open-one"
    done = endpoints.deploy(ref(v1), endpoint=name, stack=stack, public=True)
    assert done.key is None
    url = f"{done.url}/invocations"
    example = image_run._example(done.endpoint.backends[0].container)
    try:
        assert call(url, example, None).status_code == 200
        check = doctor._endpoints(contract.load(stack))
        assert check.status == doctor.WARN and name in check.detail
        assert f"mlrig deploy keys create {name}" in check.fix

        key = endpoints.create_key(name, stack=stack)
        assert call(url, example, None).status_code == 401
        assert call(url, example, key).status_code == 200
        (row,) = endpoints.status(name, stack=stack)
        assert row["public"] is False and row["key_count"] == 1
        after = doctor._endpoints(contract.load(stack))  # another module's public one may stay
        assert after.status == doctor.OK or name not in after.detail.split(": ", 1)[1]
    finally:
        endpoints.delete(name, stack=stack)
    mine = [e for e in access_view.log(contract.load(stack)) if e.object.get("endpoint") == name]
    assert [e.method for e in mine] == ["DEPLOY", "KEY-CREATE", "DELETE"]
    assert mine[0].object["digest"] == done.endpoint.backends[0].digest
    assert mine[1].object["key_id"] == key.split(":", 1)[0]
    assert all(e.auth == "local" and e.path == f"/endpoints/{name}" for e in mine)
    from mlrig.core.access import audit

    assert key.split(":", 1)[1] not in audit.path(stack).read_text()  # IDs only, never a key
    # nginx made its logs under deploy's umask: `doctor`'s file-modes check stays clean
    for log in ("nginx", "nginx-error", "audit"):
        assert Layout(stack).log_file(log).stat().st_mode & 0o077 == 0, log


def test_the_stack_stops_nginx_with_it(pushed: dict[str, Any], image_env: dict) -> None:
    from mlrig.adapters import processes
    from mlrig.core.stack.local import access_logs

    stack = pushed["stack"]
    layout = Layout(stack)
    endpoints.deploy(ref(pushed["v1"]), endpoint=NAME, stack=stack, public=True)
    # nginx, and beside it the keeper that rotates its request logs
    services = ("nginx", access_logs.SERVICE)
    for service in services:
        assert processes.status(layout.pid_file(service))[0] == processes.Status.RUNNING
    (row,) = endpoints.status(NAME, stack=stack)
    assert row["public"] is True
    image_env["stack"].down()
    try:
        for service in services:
            assert processes.status(layout.pid_file(service))[0] != processes.Status.RUNNING
    finally:
        image_env["stack"].up()
    # `up` starts them again, nginx on its kept port: the endpoint answers at the same URL
    for service in services:
        assert processes.status(layout.pid_file(service))[0] == processes.Status.RUNNING
    url = f"{row['url'].rsplit('/', 1)[0]}/ping"
    wait_for_http(url, timeout=30)
