"""A blob in one monolithic upload: POST opens it, PUT <Location> with the digest added to
whatever query the registry put there (relative or absolute Location alike)."""

from __future__ import annotations

from typing import Any

import pytest

from mlrig.adapters.registry_client import RegistryClient
from mlrig.errors import RemoteError


class Answer:
    def __init__(self, status: int, location: str | None = None) -> None:
        self.status_code, self.text = status, "body"
        self.headers = {"Location": location} if location else {}


def calls(monkeypatch: pytest.MonkeyPatch, *answers: Answer) -> list[tuple[str, str, Any]]:
    seen: list[tuple[str, str, Any]] = []
    queue = list(answers)

    def fake(
        self: RegistryClient,
        path: str,
        headers: Any = None,
        method: str = "GET",
        data: bytes | None = None,
        timeout: float | None = None,
    ) -> Answer:
        seen.append((method, path, data))
        return queue.pop(0)

    monkeypatch.setattr(RegistryClient, "_get", fake)
    return seen


@pytest.mark.parametrize(
    ("location", "put_url"),
    [
        (
            "/v2/m/blobs/uploads/u1?_state=s",
            "http://h:5/v2/m/blobs/uploads/u1?_state=s&digest=sha256:d",
        ),
        ("http://h:5/v2/m/blobs/uploads/u2", "http://h:5/v2/m/blobs/uploads/u2?digest=sha256:d"),
        ("u3", "http://h:5/v2/m/blobs/uploads/u3?digest=sha256:d"),
    ],
)
def test_the_upload_puts_the_body_at_the_location_with_the_digest(
    monkeypatch: pytest.MonkeyPatch, location: str, put_url: str
) -> None:
    seen = calls(monkeypatch, Answer(202, location), Answer(201))
    RegistryClient("http://h:5", "u", "p").upload_blob("m", "sha256:d", b"data")
    assert seen == [("POST", "/v2/m/blobs/uploads/", b""), ("PUT", put_url, b"data")]


def test_a_refused_upload_names_the_status(monkeypatch: pytest.MonkeyPatch) -> None:
    calls(monkeypatch, Answer(202, "/v2/m/blobs/uploads/u"), Answer(503))
    with pytest.raises(RemoteError, match="503"):
        RegistryClient("http://h:5").upload_blob("m", "sha256:d", b"x")
    calls(monkeypatch, Answer(404))
    with pytest.raises(RemoteError, match="404"):
        RegistryClient("http://h:5").upload_blob("m", "sha256:d", b"x")
