"""The serving image under a stand-in for AWS Lambda's Runtime API.

A small loopback HTTP server here implements the Runtime API's endpoints the runtime interface
client calls (`GET /2018-06-01/runtime/invocation/next`, `POST .../invocation/ID/response`,
`.../invocation/ID/error`, `/2018-06-01/runtime/init/error`); the real built image is started
with AWS_LAMBDA_RUNTIME_API pointing at it (host networking), handed API Gateway HTTP API
(payload 2.0) events for `/endpoints/NAME/...`, and what it posts back is compared with what
the same image answers over HTTP for the same request.

What this proves: the image's entry point picks Lambda mode when Lambda's variable is set;
AWS's runtime interface client (its compiled part included) runs in the lean image, fetches
events and posts answers in the Runtime API's wire format; the ASGI adapter maps the real
event shape (prefix, base64 bodies, headers) onto the app; the app's answers and limits (the
body cap, malformed input) are the ones HTTP clients get; a model that fails to load is
reported as an init error.

What it does not prove: anything about Lambda's sandbox itself (its read-only file system
beyond /tmp, the user it runs as, its network), IAM and the API Gateway authorizer, the
memory and timeout limits Lambda enforces, the 6 MB payload limit of API Gateway and Lambda,
cold-start time on AWS, image size limits or how Lambda pulls the image from ECR.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from mlrig.adapters import docker as docker_adapter
from mlrig.core.image import build as image
from mlrig.core.stack.local.stack import free_port
from tests.helpers import http_api_event, register_model, wait_for_http

pytestmark = pytest.mark.integration
MODEL = "bc-lambda"
PREFIX = "/2018-06-01/runtime"
BODY_CAP = 64 * 1024  # MLRIG_MAX_BODY_BYTES for both modes, so the cap is reachable


class RuntimeApi:
    """Lambda's Runtime API, as far as the runtime interface client uses it: events are
    queued by the test; answers, errors and init errors are recorded by request ID."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.answers: dict[str, queue.Queue[tuple[str, dict[str, str], bytes]]] = {}
        self.init_errors: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the container was removed while it waited for an event

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    return self._reply(404)
                while True:  # long poll, as Lambda's: the client waits for the next event
                    try:
                        request_id, event = api.events.get(timeout=0.5)
                        break
                    except queue.Empty:
                        if api.closing.is_set():
                            return self._reply(500)
                body = json.dumps(event).encode()
                self._reply(
                    200,
                    body,
                    {
                        "Content-Type": "application/json",
                        "Lambda-Runtime-Aws-Request-Id": request_id,
                        "Lambda-Runtime-Deadline-Ms": "9999999999999",
                        "Lambda-Runtime-Invoked-Function-Arn": (
                            "arn:aws:lambda:us-east-1:123456789012:function:mlrig-bc"
                        ),
                        "Lambda-Runtime-Trace-Id": (
                            "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Sampled=1"
                        ),
                    },
                )

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                parts = self.path.removeprefix(PREFIX).strip("/").split("/")
                if parts == ["init", "error"]:
                    api.init_errors.put((headers, body))
                elif (
                    len(parts) == 3
                    and parts[0] == "invocation"
                    and parts[2]
                    in (
                        "response",
                        "error",
                    )
                ):
                    api.answers.setdefault(parts[1], queue.Queue()).put((parts[2], headers, body))
                else:
                    return self._reply(404)
                self._reply(202, b'{"status":"OK"}', {"Content-Type": "application/json"})

        self.closing = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, event: dict[str, Any], timeout: float = 60) -> tuple[str, dict, bytes]:
        request_id = str(uuid.uuid4())
        self.answers[request_id] = queue.Queue()
        self.events.put((request_id, event))
        return self.answers[request_id].get(timeout=timeout)

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def built(image_env: dict) -> dict[str, Any]:
    version, expected = register_model(MODEL, 1.0)
    return {"ref": image.build(f"models:/{MODEL}/{version}").ref, "expected": expected}


@pytest.fixture(scope="module")
def runtime_api() -> Iterator[RuntimeApi]:
    api = RuntimeApi()
    yield api
    api.close()


def start(ref: str, env: dict[str, str]) -> Any:
    """The image started as Lambda would start it (its own entry point, no command), on
    host networking, never restarted."""
    return docker_adapter.client().containers.run(
        ref, detach=True, network_mode="host", environment=env, mem_limit="1g"
    )


@pytest.fixture(scope="module")
def lambda_mode(built: dict, runtime_api: RuntimeApi) -> Iterator[Any]:
    container = start(
        built["ref"],
        {
            "AWS_LAMBDA_RUNTIME_API": runtime_api.address,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "MLRIG_MAX_BODY_BYTES": str(BODY_CAP),
        },
    )
    yield container
    container.remove(force=True)


@pytest.fixture(scope="module")
def http_mode(built: dict) -> Iterator[str]:
    port = free_port()
    container = start(
        built["ref"],
        {"PORT": str(port), "HOST": "127.0.0.1", "MLRIG_MAX_BODY_BYTES": str(BODY_CAP)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", timeout=120)
        yield url
    finally:
        container.remove(force=True)


def example(rows: int = 3) -> bytes:
    from sklearn.datasets import load_breast_cancer

    x, _ = load_breast_cancer(return_X_y=True, as_frame=True)
    return json.dumps({"dataframe_split": x.head(rows).to_dict(orient="split")}).encode()


def lambda_answer(api: RuntimeApi, event: dict[str, Any]) -> tuple[int, str, bytes]:
    kind, _headers, posted = api.invoke(event)
    assert kind == "response", f"the function posted an error: {posted[:300]!r}"
    answer = json.loads(posted)
    body = answer.get("body") or ""
    raw = base64.b64decode(body) if answer.get("isBase64Encoded") else body.encode()
    return answer["statusCode"], answer["headers"].get("content-type", ""), raw


def http_answer(
    url: str, method: str, path: str, body: bytes, ctype: str
) -> tuple[int, str, bytes]:
    r = requests.request(method, url + path, data=body, headers={"Content-Type": ctype}, timeout=30)
    return r.status_code, r.headers.get("content-type", ""), r.content


# case: (method, path after /endpoints/NAME/, body or that many example rows, content type,
# whether API Gateway base64-encodes the body)
CASES: dict[str, tuple[str, str, bytes | int, str, bool]] = {
    "prediction": ("POST", "invocations", 3, "application/json", False),
    "prediction, base64 body": ("POST", "invocations", 3, "application/json", True),
    "csv without the model's columns": ("POST", "invocations", b"a,b\n1,2\n", "text/csv", False),
    "malformed json": ("POST", "invocations", b"{not json", "application/json", False),
    "over the body cap": ("POST", "invocations", 400, "application/json", False),
    "ping": ("GET", "ping", b"", "application/json", False),
    "wrong method": ("GET", "invocations", b"", "application/json", False),
    "unknown path": ("GET", "metrics", b"", "application/json", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lambda_answers_as_http_does(
    case: str, built: dict, runtime_api: RuntimeApi, lambda_mode: Any, http_mode: str
) -> None:
    method, proxy, spec, ctype, b64 = CASES[case]
    body = example(spec) if isinstance(spec, int) else spec
    event = http_api_event(method, f"/endpoints/bc/{proxy}", body, b64=b64, content_type=ctype)
    got = lambda_answer(runtime_api, event)
    want = http_answer(http_mode, method, f"/{proxy}", body, ctype)
    assert got == want
    if case.startswith("prediction"):
        assert json.loads(got[2]) == {"predictions": built["expected"]}
    if case == "over the body cap":
        assert len(body) > BODY_CAP and got[0] == 413


def test_a_model_that_does_not_load_is_an_init_error(built: dict) -> None:
    api = RuntimeApi()
    container = start(
        built["ref"],
        {"AWS_LAMBDA_RUNTIME_API": api.address, "MLRIG_MODEL_DIR": "/opt/no-model-here"},
    )
    try:
        headers, body = api.init_errors.get(timeout=60)
        error = json.loads(body)
        assert headers.get("lambda-runtime-function-error-type") == "FileNotFoundError"
        assert error["errorType"] == "FileNotFoundError"
        assert "/opt/no-model-here" in error["errorMessage"]
        assert container.wait(timeout=60)["StatusCode"] != 0
    finally:
        container.remove(force=True)
        api.close()
