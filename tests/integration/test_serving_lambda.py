"""The serving image under a stand-in for AWS Lambda's Runtime API.

A small loopback HTTP server here implements the Runtime API's endpoints the runtime interface
client calls (`GET /2018-06-01/runtime/invocation/next`, `POST .../invocation/ID/response`,
`.../invocation/ID/error`, `/2018-06-01/runtime/init/error`) and the Extensions API's an
internal extension calls (`POST /2020-01-01/extension/register`, `GET .../event/next`): as
Lambda does, it hands an invocation to the runtime and to every registered extension, and
the next invocation only once each extension has asked for its next event (Lambda freezes
the sandbox then). The real built image is started
with AWS_LAMBDA_RUNTIME_API pointing at it (host networking), handed API Gateway HTTP API
(payload 2.0) events for `/endpoints/NAME/...`, and what it posts back is compared with what
the same image answers over HTTP for the same request.

What this proves: the image's entry point picks Lambda mode when Lambda's variable is set;
AWS's runtime interface client (its compiled part included) runs in the lean image, fetches
events and posts answers in the Runtime API's wire format; the ASGI adapter maps the real
event shape (prefix, base64 bodies, headers) onto the app; the app's answers and limits (the
body cap, malformed input) are the ones HTTP clients get; a model that fails to load is
reported as an init error; with capture on, the capture writer registers as an extension and
its S3 PUT (moto's server) comes after the invocation's answer reached the Runtime API and
before the extension let the sandbox freeze.

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
import time
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
EXTENSIONS = "/2020-01-01/extension"
BODY_CAP = 64 * 1024  # MLRIG_MAX_BODY_BYTES for both modes, so the cap is reachable


class RuntimeApi:
    """Lambda's Runtime and Extensions APIs, as far as the runtime interface client and an
    internal extension use them: events are queued by the test; answers, errors and init
    errors are recorded by request ID. `probe`, when set, is called as an answer arrives and
    as an extension asks for its next event; `seen` records (what, request id, its result)."""

    def __init__(self, probe: Any = None) -> None:
        self.probe = probe
        self.seen: list[tuple[str, str, Any]] = []
        self.extensions: dict[str, queue.Queue[dict[str, Any]]] = {}  # id -> its events
        self.idle: dict[str, threading.Event] = {}  # id -> waiting in event/next
        self.registered: list[tuple[str, dict[str, Any]]] = []
        self.last_request = ""
        self.initialized = threading.Event()  # the runtime asked for its first event
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
                if self.path == f"{EXTENSIONS}/event/next":
                    return self._extension_next()
                if self.path != f"{PREFIX}/invocation/next":
                    return self._reply(404)
                api.initialized.set()  # init is over: extensions register before this
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

            def _extension_next(self) -> None:
                ident = self.headers.get("Lambda-Extension-Identifier", "")
                if ident not in api.extensions:
                    return self._reply(403, b'{"errorType":"Extension.ForbiddenExtensionID"}')
                if api.last_request and api.probe is not None:  # the sandbox may freeze now
                    api.seen.append(("frozen", api.last_request, api.probe()))
                api.idle[ident].set()
                while True:
                    try:
                        event = api.extensions[ident].get(timeout=0.5)
                        break
                    except queue.Empty:
                        if api.closing.is_set():
                            return self._reply(500)
                self._reply(
                    200,
                    json.dumps(event).encode(),
                    {
                        "Content-Type": "application/json",
                        "Lambda-Extension-Event-Identifier": str(uuid.uuid4()),
                    },
                )

            def _register(self, body: bytes) -> None:
                name = self.headers.get("Lambda-Extension-Name", "")
                request = json.loads(body or b"{}")
                if not name or request.get("events") != ["INVOKE"]:
                    # internal extensions may not register for SHUTDOWN
                    return self._reply(400, b'{"errorType":"InvalidRequest"}')
                ident = str(uuid.uuid4())
                api.registered.append((name, request))
                api.extensions[ident] = queue.Queue()
                api.idle[ident] = threading.Event()
                info = {
                    "functionName": "mlrig-bc",
                    "functionVersion": "$LATEST",
                    "handler": "mlrig_serve.aws_lambda.handler",
                }
                self._reply(
                    200,
                    json.dumps(info).encode(),
                    {"Content-Type": "application/json", "Lambda-Extension-Identifier": ident},
                )

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if self.path == f"{EXTENSIONS}/register":
                    return self._register(body)
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
                    if api.probe is not None:
                        api.seen.append((parts[2], parts[1], api.probe()))
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
        """Hand the event to the runtime and each extension (once all of them are idle: the
        sandbox is frozen between invocations) and wait for the runtime's answer."""
        assert self.initialized.wait(timeout), "the runtime did not ask for an event"
        for ident, idle in self.idle.items():
            assert idle.wait(timeout), f"extension {ident} did not ask for its next event"
            idle.clear()
        request_id = str(uuid.uuid4())
        self.last_request = request_id
        self.answers[request_id] = queue.Queue()
        deadline = int((time.time() + 30) * 1000)
        for events in self.extensions.values():
            events.put(
                {
                    "eventType": "INVOKE",
                    "deadlineMs": deadline,
                    "requestId": request_id,
                    "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:mlrig-bc",
                    "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-5f35ae12-0c0fec14"},
                }
            )
        self.events.put((request_id, event))
        return self.answers[request_id].get(timeout=timeout)

    def settled(self, timeout: float = 60) -> None:
        """Wait until every extension asked for its next event (the sandbox may freeze)."""
        for ident, idle in self.idle.items():
            assert idle.wait(timeout), f"extension {ident} did not ask for its next event"

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


def test_capture_is_put_after_the_answer_and_before_the_sandbox_may_freeze(
    built: dict, moto_server: str
) -> None:
    """The capture writer as an internal extension: every record due at once (flush after
    1 ms), so each invocation's record is PUT in that invocation; the stand-in counts the
    bucket's objects as the answer arrives (the PUT has not happened) and as the extension
    asks for its next event (it has)."""
    import boto3

    from mlrig.core.shared.capture import CaptureRecord

    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", **keys)
    bucket = f"captures-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)

    def objects() -> list[str]:
        listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(o["Key"] for o in listed)

    api = RuntimeApi(probe=lambda: len(objects()))
    container = start(
        built["ref"],
        {
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_ACCESS_KEY_ID": keys["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": keys["aws_secret_access_key"],
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": moto_server,
            "MLRIG_CAPTURE_PERCENT": "100",
            "MLRIG_CAPTURE_DIR": f"s3://{bucket}/captures/bc",
            "MLRIG_CAPTURE_FLUSH_SECONDS": "0.001",
            "MLRIG_ENDPOINT": "bc",
            "MLRIG_MODEL_NAME": MODEL,
            "MLRIG_MODEL_VERSION": "1",
            "MLRIG_IMAGE_DIGEST": "sha256:" + "7" * 64,
            "MLRIG_RUN_ID": "0123456789abcdef0123456789abcdef",
        },
    )
    try:
        ids = []
        for _ in range(3):
            event = http_api_event(
                "POST", "/endpoints/bc/invocations", example(2), content_type="application/json"
            )
            kind, _headers, posted = api.invoke(event)
            assert kind == "response", posted[:300]
            answer = json.loads(posted)
            assert answer["statusCode"] == 200
            ids.append(answer["headers"]["x-inference-id"])
        api.settled()
        assert api.registered == [("mlrig-capture", {"events": ["INVOKE"]})]
        assert [(what, count) for what, _request, count in api.seen] == [
            ("response", 0),
            ("frozen", 1),
            ("response", 1),
            ("frozen", 2),
            ("response", 2),
            ("frozen", 3),
        ]
        lines = [
            line
            for key in objects()
            for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
        ]
        records = [CaptureRecord.model_validate_json(line) for line in lines]
        assert sorted(r.eventMetadata.inferenceId for r in records) == sorted(ids)
        assert {(r.mlrig.endpoint, r.mlrig.model) for r in records} == {("bc", MODEL)}
    finally:
        container.remove(force=True)
        api.close()
