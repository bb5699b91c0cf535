"""Request capture on the real local stack: `deploy --capture 100` behind nginx, N keyed
requests, and the endpoint's captures folder holds exactly N records (the agreed format)
whose inference ids are the ones the client got; then a capture path that fails every write
while predictions keep answering and the error counter rises. No timing assertions.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from mlrig.core.deploy import endpoints
from mlrig.core.deploy.state import Store
from mlrig.core.image import build as image
from mlrig.core.image import push as serving_push
from mlrig.core.image import run as image_run
from mlrig.core.shared.capture import CaptureRecord
from mlrig.core.stack.local.state import Layout
from mlrig.wait import wait_until
from tests.helpers import register_model, require

pytestmark = pytest.mark.integration

NAME = "cap"
MODEL = "bc-capture"  # its own model: the registry keeps every tag another module pushed
N = 40


@pytest.fixture(scope="module")
def deployed(image_env: dict) -> Iterator[dict[str, Any]]:
    """One pushed version of bc-capture deployed to endpoint `cap` capturing 100 %."""
    require(os.path.exists("/usr/sbin/nginx"), "Debian's nginx")
    out = image_env["outputs"]
    version, _ = register_model(MODEL, 1.0)
    built = image.build(f"models:/{MODEL}/{version}")
    serving_push.push(built.ref, out)
    done = endpoints.deploy(
        f"models:/{MODEL}/{version}", endpoint=NAME, stack=out.name, capture=100
    )
    try:
        yield {"stack": out.name, "done": done, "built": built, "version": version}
    finally:
        if Store(Layout(out.name).root).read(NAME) is not None:
            endpoints.delete(NAME, stack=out.name)
        shutil.rmtree(Layout(out.name).root / "captures" / NAME, ignore_errors=True)


def keyed(url: str, body: bytes, key: str) -> requests.Response:
    auth = "Basic " + base64.b64encode(key.encode()).decode()
    return requests.post(
        url,
        data=body,
        headers={"Content-Type": "application/json", "Authorization": auth},
        timeout=30,
    )


def counters(stack: str) -> dict[str, Any]:
    (row,) = endpoints.status(NAME, stack=stack)
    (backend,) = row["serving"]
    assert backend["capture"] == 100 and row["capture"] == 100
    return backend["captured"] or {}


def bodies(example: bytes) -> list[bytes]:
    """N distinct requests: the example with its first value keyed by the request's index."""
    doc = json.loads(example)
    out = []
    for i in range(N):
        d = json.loads(json.dumps(doc))
        split = d["dataframe_split"]
        split["data"] = [[float(i), *row[1:]] for row in split["data"]]
        out.append(json.dumps(d).encode())
    return out


def test_n_requests_are_n_records_with_the_clients_inference_ids(
    deployed: dict[str, Any],
) -> None:
    stack, done, built = deployed["stack"], deployed["done"], deployed["built"]
    url = f"{done.url}/invocations"
    backend = done.endpoint.backends[0]
    sent = bodies(image_run._example(backend.container))
    ids = {}
    for body in sent:
        resp = keyed(url, body, done.key)
        assert resp.status_code == 200
        ids[resp.headers["X-Inference-Id"]] = (body, resp.content)
    assert len(ids) == N  # one id per answer, through nginx
    wait_until(lambda: counters(stack).get("written") == N, timeout=30, what="records written")
    stats = counters(stack)
    assert (stats["dropped"], stats["errors"], stats["queued"]) == (0, 0, 0)

    folder = Layout(stack).root / "captures" / NAME
    records = []
    for path in sorted(folder.rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            r = CaptureRecord.model_validate_json(line)
            t = r.eventMetadata.inferenceTime  # its file is under the record's UTC hour
            assert t.utcoffset() == timedelta(0)
            assert path.parent.relative_to(folder).as_posix() == f"{t:%Y/%m/%d/%H}"
            records.append(r)
    assert len(records) == N
    assert {r.eventMetadata.inferenceId for r in records} == set(ids)
    for r in records:
        body, answer = ids[r.eventMetadata.inferenceId]
        assert r.captureData.endpointInput.data.encode() == body  # exactly as sent
        assert json.loads(r.captureData.endpointOutput.data) == json.loads(answer)
        assert r.mlrig.model == MODEL and r.mlrig.version == deployed["version"]
        assert r.mlrig.digest == backend.digest and r.mlrig.endpoint == NAME
        assert r.mlrig.run_id == built.provenance.run_id


def test_a_capture_path_that_fails_never_fails_a_prediction(deployed: dict[str, Any]) -> None:
    stack, done = deployed["stack"], deployed["done"]
    folder = Layout(stack).root / "captures" / NAME
    for year in {time.strftime("%Y", time.gmtime(time.time() + d)) for d in (0, 3600)}:
        shutil.rmtree(folder / year, ignore_errors=True)
        (folder / year).write_text("")  # yyyy/ can never be made: every write fails
    # a new container (the same version again), so its writer must open a new file
    endpoints.deploy(f"models:/{MODEL}/{deployed['version']}", endpoint=NAME, stack=stack)
    (row,) = endpoints.status(NAME, stack=stack)
    assert row["capture"] == 100  # the endpoint's setting, kept without --capture
    example = image_run._example(row["serving"][0]["container"])
    answers = [keyed(f"{done.url}/invocations", example, done.key) for _ in range(10)]
    assert [a.status_code for a in answers] == [200] * 10
    wait_until(lambda: counters(stack).get("errors") == 10, timeout=30, what="errors counted")
    stats = counters(stack)
    assert stats["written"] == 0 and stats["last_error"].startswith("NotADirectoryError")
    assert not list(Path(folder).rglob("*.jsonl"))
