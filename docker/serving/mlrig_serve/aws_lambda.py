"""The image as an AWS Lambda container function: AWS's runtime interface client (awslambdaric)
fetches each event from Lambda's Runtime API and calls `handler`, an ASGI adapter (Mangum)
around the same app the HTTP server runs, so a request is parsed, limited and scored exactly
as over HTTP.

Used only when Lambda starts the image (`serve.py` sees AWS_LAMBDA_RUNTIME_API); otherwise
the image serves HTTP as before. Events are API Gateway HTTP API (payload 2.0) requests routed
as `/endpoints/NAME/{proxy+}`: the `/endpoints/NAME` prefix is stripped, so
`/endpoints/NAME/invocations` is the app's `/invocations` and `/endpoints/NAME/ping` its
`/ping`; any other path gets the app's 404. The body cap, JSON depth and column limits apply
as over HTTP; the cap is fitted to the function's memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE).

The model is loaded when awslambdaric first asks this module for `handler` (Lambda's init
phase): a model that does not load is reported to Lambda as an init error.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from .app import MODEL_DIR, make_app
from .capture import Capture, Settings
from .limits import Limits, memory_limit, resident_bytes
from .scoring import Model

HANDLER = "mlrig_serve.aws_lambda.handler"  # what awslambdaric is told to call
_ROUTE = re.compile(r"/endpoints/[^/]+(/.*)")


def strip_endpoint_prefix(app: Any) -> Any:
    """The app behind API Gateway's `/endpoints/NAME/{proxy+}` route: the prefix is dropped
    from the path; a path without it (a direct invoke) is passed on unchanged."""

    async def stripped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            match = _ROUTE.fullmatch(scope["path"])
            if match:
                path = match.group(1)
                scope = {**scope, "path": path, "raw_path": path.encode()}
        await app(scope, receive, send)

    return stripped


def lambda_memory(env: dict[str, str] | None = None) -> int | None:
    """The function's memory in bytes: the cgroup's limit when there is one, else what Lambda
    says it configured (AWS_LAMBDA_FUNCTION_MEMORY_SIZE, in MB)."""
    limit = memory_limit()
    if limit is not None:
        return limit
    size = (os.environ if env is None else env).get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    return int(size) * 2**20 if size.isdigit() else None


def make_handler(model: Model, limits: Limits, capture: Capture | None = None) -> Any:
    """A Lambda handler (event, context) -> API Gateway response for the loaded model; with
    capture on, the buffer is written (to S3) after an invocation when it is due: Lambda
    freezes the process between invocations, so no thread could write it then."""
    from mangum import Mangum

    asgi = Mangum(strip_endpoint_prefix(make_app(model, limits, capture)), lifespan="off")
    if capture is None or not capture.enabled:
        return asgi

    def handler(event: Any, context: Any) -> Any:
        try:
            return asgi(event, context)
        finally:
            capture.flush_due()

    return handler


def load_handler() -> Any:
    configured = Limits.from_env()
    model = Model(MODEL_DIR, configured.max_columns)
    limits = configured.fit_memory(lambda_memory(), resident_bytes(), model.expansion)
    capture = Capture(Settings.from_env())  # no thread: flushed by the handler (see there)
    print(f"mlrig-serve: model loaded, serving Lambda events; {limits}", file=sys.stderr)
    if capture.enabled:
        print(
            f"mlrig-serve: capturing {capture.settings.percent:g}% of predictions to "
            f"{capture.settings.directory} (writer {capture.writer_id})",
            file=sys.stderr,
        )
    return make_handler(model, limits, capture)


_loaded: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """`handler`, made on first use: awslambdaric's look-up of it loads the model."""
    if name != "handler":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if "handler" not in _loaded:
        _loaded["handler"] = load_handler()
    return _loaded["handler"]


def main() -> None:
    """Run awslambdaric's loop (fetch an event, call `handler`, post its answer) until Lambda
    stops the sandbox."""
    from awslambdaric.__main__ import main as runtime_interface_client

    runtime_interface_client([sys.argv[0], HANDLER])
