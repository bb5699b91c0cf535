"""The serving image's Lambda handler in-process: API Gateway HTTP API (payload 2.0) events
for `/endpoints/NAME/...` through the ASGI adapter to the app, with the app's limits.
(tests/integration/test_serving_lambda.py runs the built image under a Runtime API stand-in.)"""

from __future__ import annotations

import base64
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import http_api_event, load_serving_module, serving_model_dir

serve = load_serving_module("mlrig_serve_lambda")
_writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in docker/
aws_lambda = importlib.import_module("mlrig_serve_lambda.aws_lambda")
sys.dont_write_bytecode = _writes
COLUMNS = ["a", "b"]
CAP = 1024


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory) -> Any:
    model = serve.Model(str(serving_model_dir(tmp_path_factory.mktemp("model"), COLUMNS)))
    return aws_lambda.make_handler(model, serve.Limits(max_body_bytes=CAP))


def call(handler: Any, event: dict[str, Any]) -> tuple[int, Any]:
    answer = handler(event, None)
    body = answer["body"]
    raw = base64.b64decode(body) if answer["isBase64Encoded"] else body.encode()
    try:
        return answer["statusCode"], json.loads(raw)
    except ValueError:
        return answer["statusCode"], raw


def rows(n: int) -> bytes:
    return json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0]] * n}}).encode()


def test_invocations_under_the_endpoint_prefix(handler: Any) -> None:
    event = http_api_event(
        "POST", "/endpoints/churn/invocations", rows(2), content_type="application/json"
    )
    assert call(handler, event) == (200, {"predictions": [0, 0]})


def test_a_base64_body_is_decoded(handler: Any) -> None:
    event = http_api_event(
        "POST", "/endpoints/churn/invocations", rows(1), b64=True, content_type="application/json"
    )
    assert call(handler, event) == (200, {"predictions": [0]})


def test_ping_and_version(handler: Any) -> None:
    assert call(handler, http_api_event("GET", "/endpoints/churn/ping")) == (200, b"\n")
    assert call(handler, http_api_event("GET", "/endpoints/churn/version")) == (200, b"3.0.0")


@pytest.mark.parametrize(
    "path", ["/endpoints/churn/metrics", "/endpoints/churn", "/endpoints//invocations", "/other"]
)
def test_anything_else_is_the_apps_404(handler: Any, path: str) -> None:
    assert call(handler, http_api_event("POST", path, rows(1), content_type="application/json"))[
        0
    ] == (404)


def test_a_direct_invoke_without_the_prefix_reaches_the_app(handler: Any) -> None:
    event = http_api_event("POST", "/invocations", rows(1), content_type="application/json")
    assert call(handler, event) == (200, {"predictions": [0]})


def test_the_body_cap_holds_with_and_without_a_declared_length(handler: Any) -> None:
    big = rows(100)
    assert len(big) > CAP
    event = http_api_event(
        "POST", "/endpoints/churn/invocations", big, content_type="application/json"
    )
    status, body = call(handler, event)
    assert status == 413 and body["error_code"] == "RESOURCE_LIMIT_EXCEEDED"
    del event["headers"]["content-length"]
    status, body = call(handler, event)
    assert status == 413 and body["error_code"] == "RESOURCE_LIMIT_EXCEEDED"


def test_bad_input_is_a_400_not_a_failed_invocation(handler: Any) -> None:
    event = http_api_event(
        "POST", "/endpoints/churn/invocations", b"[1, 2", content_type="application/json"
    )
    status, body = call(handler, event)
    assert status == 400 and body["error_code"] == "BAD_REQUEST"


def test_memory_comes_from_the_cgroup_else_from_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aws_lambda, "memory_limit", lambda: None)
    assert aws_lambda.lambda_memory({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}) == 512 * 2**20
    assert aws_lambda.lambda_memory({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "lots"}) is None
    assert aws_lambda.lambda_memory({}) is None
    monkeypatch.setattr(aws_lambda, "memory_limit", lambda: 3 * 2**30)
    assert aws_lambda.lambda_memory({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}) == 3 * 2**30


def test_the_handler_loads_the_model_once_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[int] = []
    monkeypatch.setattr(aws_lambda, "load_handler", lambda: loads.append(1) or "handler")
    monkeypatch.setattr(aws_lambda, "_loaded", {})
    assert aws_lambda.handler == "handler" and aws_lambda.handler == "handler"
    assert loads == [1]
    with pytest.raises(AttributeError):
        aws_lambda.nothing  # noqa: B018
