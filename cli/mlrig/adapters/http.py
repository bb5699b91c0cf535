"""HTTP behind one door (requests): health probes and small JSON calls to services mlrig runs.

Core code never imports `requests`; connection errors are OSError subclasses, so
`mlrig.wait.wait_until` retries them as "not up yet".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlrig.errors import ServiceError


@dataclass(frozen=True)
class Response:
    status: int
    text: str
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.text)


def status(url: str, *, timeout: float = 1.0) -> int:
    """GET url and return the status code; a server that does not answer raises OSError."""
    import requests

    return int(requests.get(url, timeout=timeout).status_code)


def post(
    url: str,
    body: bytes,
    *,
    content_type: str,
    timeout: float = 30.0,
    auth: tuple[str, str] | None = None,
) -> Response:
    """POST body to url (with Basic auth when given); a server that does not answer is a
    ServiceError."""
    import requests

    try:
        resp = requests.post(
            url, data=body, headers={"Content-Type": content_type}, timeout=timeout, auth=auth
        )
    except requests.RequestException as exc:
        raise ServiceError(f"{url} did not answer ({type(exc).__name__})") from exc
    return Response(resp.status_code, resp.text, {k.lower(): v for k, v in resp.headers.items()})


def send_json(
    method: str,
    url: str,
    *,
    body: Any = None,
    auth: tuple[str, str] | None = None,
    params: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Response:
    """One call with a JSON body (when given); a server that does not answer raises OSError."""
    import requests

    resp = requests.request(method, url, json=body, auth=auth, params=params, timeout=timeout)
    return Response(resp.status_code, resp.text)


def post_webhook(url: str, body: Any, *, timeout: float = 5.0) -> int:
    """POST body as JSON to a webhook and return the status. The URL often carries the
    hook's token, so no message names it: a failure is a ServiceError naming only its kind."""
    import requests

    try:
        resp = requests.post(url, json=body, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise ServiceError(f"the webhook did not answer ({type(exc).__name__})") from None
    resp.close()
    return int(resp.status_code)
