"""`mlrig deploy` on the real local stack: real nginx in front of real model containers.

One module-scoped walk: deploy → 401 without a key → 200 with it (the container's own
answer) → a 50% canary where both versions answer → promote → rollback → delete; and the
stack's `down` stops nginx. No timing assertions.
"""

from __future__ import annotations

import base64
import collections
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from mlrig.core.deploy import endpoints
from mlrig.core.deploy.state import Store
from mlrig.core.image import push as serving_push
from mlrig.core.image import run as image_run
from mlrig.core.stack.local.state import Layout
from mlrig.errors import UsageError
from tests.helpers import built_versions, require, wait_for_http

pytestmark = pytest.mark.integration

NAME = "churn"
MODEL = "bc-deploy"  # its own model: the registry keeps bc-direct's tags for test_push_direct


@pytest.fixture(scope="module")
def pushed(image_env: dict) -> Iterator[dict[str, Any]]:
    """Two pushed versions of bc-deploy and the stack's name; the endpoint deleted after."""
    require(os.path.exists("/usr/sbin/nginx"), "Debian's nginx")
    direct_versions = built_versions(MODEL)
    out = image_env["outputs"]
    for v in direct_versions[:2]:
        serving_push.push(v["built"].ref, out)
    yield {
        "stack": out.name,
        "v1": direct_versions[0],
        "v2": direct_versions[1],
        "v3": direct_versions[2],  # built, never pushed
    }
    if Store(Layout(out.name).root).read(NAME) is not None:
        endpoints.delete(NAME, stack=out.name)


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

    # v3 was never pushed: one line pointing at `image push`, nothing started
    with pytest.raises(UsageError, match="image push"):
        endpoints.deploy(ref(v3), endpoint=NAME, stack=stack)
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
    endpoints.deploy(ref(v2), endpoint=NAME, stack=stack, canary=50)
    seen = collections.Counter(
        call(url, example, done.key).headers.get("X-Model-Version") for _ in range(200)
    )
    assert set(seen) == {v1["version"], v2["version"]}, seen
    (row,) = endpoints.status(NAME, stack=stack)
    assert [b["traffic"] for b in row["serving"]] == [50, 50]

    endpoints.promote(NAME, stack=stack)
    got = {call(url, example, done.key).headers["X-Model-Version"] for _ in range(20)}
    assert got == {v2["version"]}
    (row,) = endpoints.status(NAME, stack=stack)
    assert [b["version"] for b in row["serving"]] == [v2["version"]]

    endpoints.rollback(NAME, stack=stack)
    answer = call(url, example, done.key)
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == v1["version"]
    assert answer.json() == direct.json()
    assert json.loads(json.dumps(endpoints.status(stack=stack)))[0]["public"] is False

    endpoints.delete(NAME, stack=stack)
    assert endpoints.status(stack=stack) == []
    assert call(url, example, done.key).status_code == 404


def test_the_stack_stops_nginx_with_it(pushed: dict[str, Any], image_env: dict) -> None:
    from mlrig.adapters import processes

    stack = pushed["stack"]
    layout = Layout(stack)
    endpoints.deploy(ref(pushed["v1"]), endpoint=NAME, stack=stack, public=True)
    assert processes.status(layout.pid_file("nginx"))[0] == processes.Status.RUNNING
    (row,) = endpoints.status(NAME, stack=stack)
    assert row["public"] is True
    image_env["stack"].down()
    try:
        assert processes.status(layout.pid_file("nginx"))[0] != processes.Status.RUNNING
    finally:
        image_env["stack"].up()
    # `up` starts it again on its kept port: the endpoint answers at the same URL
    assert processes.status(layout.pid_file("nginx"))[0] == processes.Status.RUNNING
    url = f"{row['url'].rsplit('/', 1)[0]}/ping"
    wait_for_http(url, timeout=30)
