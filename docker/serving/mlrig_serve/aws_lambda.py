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
phase): a model that does not load is reported to Lambda as an init error. With capture on,
the capture writer registers there too, as an internal extension (`extension`): `main` runs
awslambdaric's loop with a runtime client that tells the extension when an invocation's
answer is posted, and the extension writes the buffer after it. Should the Extensions API
refuse, the handler writes a due buffer before it returns instead (that answer waits for the
PUT), and the log says so.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from .app import MODEL_DIR, make_app
from .capture import Capture, Settings
from .extension import CaptureExtension, ExtensionError
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


def make_handler(
    model: Model, limits: Limits, capture: Capture | None = None, *, flush: bool = True
) -> Any:
    """A Lambda handler (event, context) -> API Gateway response for the loaded model. With
    capture on and `flush`, the handler writes the buffer (to S3) before it returns when it is
    due: Lambda freezes the process between invocations, so no thread could write it then.
    flush=False when the capture extension writes it after the answer instead."""
    from mangum import Mangum

    asgi = Mangum(strip_endpoint_prefix(make_app(model, limits, capture)), lifespan="off")
    if capture is None or not capture.enabled or not flush:
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
    capture = Capture(Settings.from_env())  # no thread: Lambda freezes the process
    print(f"mlrig-serve: model loaded, serving Lambda events; {limits}", file=sys.stderr)
    extension = None
    if capture.enabled:
        how = "the handler, before its answer"
        api = os.environ.get("AWS_LAMBDA_RUNTIME_API", "")
        if api and _runtime["hooked"]:
            try:
                extension = CaptureExtension(capture, api).register().start()
                how = "the capture extension, after each answer"
            except ExtensionError as exc:
                how += f" (the Extensions API refused: {exc})"
        _runtime["extension"] = extension
        print(
            f"mlrig-serve: capturing {capture.settings.percent:g}% of predictions to "
            f"{capture.settings.directory} (writer {capture.writer_id}), written by {how}",
            file=sys.stderr,
        )
    return make_handler(model, limits, capture, flush=extension is None)


_loaded: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """`handler`, made on first use: awslambdaric's look-up of it loads the model."""
    if name != "handler":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if "handler" not in _loaded:
        _loaded["handler"] = load_handler()
    return _loaded["handler"]


# what main's runtime client tells: whether it reports answers, and to which extension
_runtime: dict[str, Any] = {"hooked": False, "extension": None}


def _answered(request_id: str | None) -> None:
    extension = _runtime["extension"]
    if extension is not None:
        extension.answered(request_id)


def main() -> None:
    """Run awslambdaric's loop (fetch an event, call `handler`, post its answer) until Lambda
    stops the sandbox, with a runtime client that reports each posted answer to the capture
    extension (Lambda's multi-concurrency mode runs awslambdaric's own loop, unhooked)."""
    from awslambdaric import bootstrap
    from awslambdaric.__main__ import main as runtime_interface_client
    from awslambdaric.lambda_config import LambdaConfigProvider
    from awslambdaric.lambda_runtime_client import LambdaRuntimeClient

    args = [sys.argv[0], HANDLER]
    config = LambdaConfigProvider(args)
    if config.is_multi_concurrent:
        runtime_interface_client(args)
        return

    class ReportingClient(LambdaRuntimeClient):
        def post_invocation_result(self, invoke_id: Any, *rest: Any, **kw: Any) -> None:
            try:
                super().post_invocation_result(invoke_id, *rest, **kw)
            finally:
                _answered(invoke_id)

        def post_invocation_error(self, invoke_id: Any, *rest: Any, **kw: Any) -> None:
            try:
                super().post_invocation_error(invoke_id, *rest, **kw)
            finally:
                _answered(invoke_id)

    _runtime["hooked"] = True
    bootstrap.run(HANDLER, ReportingClient(config.api_address, config.use_thread_polling))
