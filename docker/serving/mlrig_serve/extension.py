"""Capture's writer under Lambda as an internal extension: a thread of the runtime process
registered with Lambda's Extensions API, so the S3 PUT runs after the invocation's answer is
posted and before Lambda freezes the sandbox.

Lambda freezes a sandbox once the runtime and every registered extension have asked for
their next event. An extension registered for INVOKE gets each invocation's event (its
request id, its deadline) at the same time as the runtime; this one waits until the runtime
has posted that invocation's answer (`answered`, called by the runtime client after its
POST), then writes the capture buffer when it is due and only then asks for the next event.
So the answer never waits for S3: the write lengthens the invocation's billed duration, not
its latency, and a record is written in the invocation after it is due, never later.

The protocol (AWS Lambda Extensions API, 2020-01-01): `POST /2020-01-01/extension/register`
with header `Lambda-Extension-Name` and body `{"events": ["INVOKE"]}` answers the
`Lambda-Extension-Identifier`, sent with every `GET /2020-01-01/extension/event/next`, which
blocks until the next event: `{"eventType": "INVOKE", "deadlineMs", "requestId", ...}`.
Registration must happen during the init phase, before the runtime's first next invocation.

What can still be lost: an internal extension gets no SHUTDOWN event (Lambda sends it to
external extensions only), so records still queued, not yet due, when Lambda retires an idle
sandbox are lost; at most the records of MLRIG_CAPTURE_FLUSH_SECONDS before the sandbox's
last invocation, and never more than half the buffer (MLRIG_CAPTURE_QUEUE_RECORDS / 2), since
a half-full buffer is due at once.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

from .capture import Capture

API = "/2020-01-01/extension"
NAME = "mlrig-capture"
MARGIN_S = 1.0  # left before the invocation's deadline: the write stops short of it
REMEMBERED = 64  # answered request ids kept for an INVOKE event that arrives late


class ExtensionError(Exception):
    """The Extensions API refused or was not there."""


def _call(
    address: str, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[dict[str, str], bytes]:
    conn = http.client.HTTPConnection(address, timeout=None)  # event/next blocks: no timeout
    try:
        conn.request(method, API + path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise ExtensionError(f"{method} {API}{path}: HTTP {resp.status} {data[:200]!r}")
        return {k.lower(): v for k, v in resp.getheaders()}, data
    except OSError as exc:
        raise ExtensionError(f"{method} {API}{path}: {exc}") from None
    finally:
        conn.close()


class CaptureExtension:
    """The registered extension: `answered(request_id)` from the runtime's side, `start()`
    runs the event loop on a daemon thread (Lambda ends the process; nothing joins it)."""

    def __init__(self, capture: Capture, address: str) -> None:
        self.capture = capture
        self.address = address
        self.identifier = ""
        self._done: OrderedDict[str, threading.Event] = OrderedDict()
        self._lock = threading.Lock()
        self.invocations = 0

    def register(self) -> CaptureExtension:
        """Register for INVOKE events; ExtensionError when the API refuses."""
        headers, _ = _call(
            self.address,
            "POST",
            "/register",
            {"Lambda-Extension-Name": NAME, "Content-Type": "application/json"},
            json.dumps({"events": ["INVOKE"]}).encode(),
        )
        self.identifier = headers.get("lambda-extension-identifier", "")
        if not self.identifier:
            raise ExtensionError("register answered no Lambda-Extension-Identifier")
        return self

    def _event(self, request_id: str) -> threading.Event:
        with self._lock:
            done = self._done.get(request_id)
            if done is None:
                done = self._done[request_id] = threading.Event()
                while len(self._done) > REMEMBERED:
                    self._done.popitem(last=False)
            return done

    def answered(self, request_id: str | None) -> None:
        """The runtime posted this invocation's answer (or error)."""
        if request_id:
            self._event(request_id).set()

    def start(self) -> CaptureExtension:
        threading.Thread(target=self._run, name="mlrig-capture-extension", daemon=True).start()
        return self

    def _run(self) -> None:
        while True:
            try:
                _, body = _call(
                    self.address,
                    "GET",
                    "/event/next",
                    {"Lambda-Extension-Identifier": self.identifier},
                )
                event = json.loads(body)
            except (ExtensionError, ValueError) as exc:
                # Lambda ends the sandbox when an extension fails; nothing to retry into
                print(f"mlrig-serve: capture extension stopped: {exc}", file=sys.stderr)
                return
            if not isinstance(event, dict) or event.get("eventType") != "INVOKE":
                continue
            self.invocations += 1
            self.after_invocation(event)

    def after_invocation(self, event: dict[str, Any]) -> int:
        """Wait for the runtime's answer to this event, then write what is due, within the
        invocation's deadline; the number of records taken."""
        deadline_ms = event.get("deadlineMs")
        left = (
            deadline_ms / 1000 - time.time() - MARGIN_S
            if isinstance(deadline_ms, (int, float))
            else 10.0
        )
        request_id = event.get("requestId")
        if isinstance(request_id, str):
            done = self._event(request_id)
            if not done.wait(max(left, 0.0)):
                return 0  # no answer yet at the deadline: Lambda times the invocation out
            with self._lock:
                self._done.pop(request_id, None)
        left = (
            deadline_ms / 1000 - time.time() - MARGIN_S
            if isinstance(deadline_ms, (int, float))
            else 10.0
        )
        if left <= 0:
            return 0
        return self.capture.flush_due(timeout=min(left, 10.0))
