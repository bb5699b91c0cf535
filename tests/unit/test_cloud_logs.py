"""The boundary every CloudWatch event passes (cleaned, credentials redacted, malformed ones
dropped) and the newest-first window search that bounds `deploy logs --tail` on AWS."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlrig.core.deploy import _aws_logs
from mlrig.core.shared import cloud_logs

KEY = "k0123abcd:" + "S3cr3t_" * 6
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("got headers {'authorization': 'Basic QWxhZGRpbjpvcGVu', 'host': 'x'}", "QWxhZG"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", "eyJhbGci"),
        (f"curl -u '{KEY}' https://api/endpoints/churn", "S3cr3t_"),
        (f"bad key {KEY}", "S3cr3t_"),
        ('{"password": "hunter2hunter2", "user": "ann"}', "hunter2"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "wJalrX"),
        ("using AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("x-api-key: 0123456789abcdef", "0123456789abcdef"),
        ("url?token=abcdef123456&x=1", "abcdef123456"),
    ],
)
def test_credentials_never_survive_cleaning(line: str, secret: str) -> None:
    cleaned = cloud_logs.clean(line)
    assert secret not in cleaned and "[redacted]" in cleaned


def test_the_key_id_and_ordinary_lines_are_kept() -> None:
    assert cloud_logs.clean(f"revoked {KEY}") == "revoked k0123abcd:[redacted]"
    report = "REPORT RequestId: 6f1e Duration: 12.31 ms\tBilled Duration: 13 ms"
    assert cloud_logs.clean(report) == report
    audit = (
        '{"event": "mlrig.audit", "auth": "basic", "path": "/api/2.0/mlflow/users/update-password"}'
    )
    assert cloud_logs.clean(audit) == audit


def test_terminal_escapes_and_control_characters_are_removed() -> None:
    assert cloud_logs.clean("\x1b[2J\x1b]0;pwned\x07ok\x00 done\x1b[31m!") == "0;pwnedok done!"
    assert len(cloud_logs.clean("x" * 20_000)) == cloud_logs.MAX_LINE + len(" [cut]")


@pytest.mark.parametrize(
    "raw",
    [
        {"timestamp": -1, "message": "x"},
        {"timestamp": 10**16, "message": "x"},
        {"timestamp": "soon", "message": "x"},
        {"timestamp": 1, "message": {"not": "text"}},
        {"message": "no time"},
        "not an event",
    ],
)
def test_malformed_events_are_dropped(raw: Any) -> None:
    assert cloud_logs.parse(raw) is None


def test_a_multi_line_message_is_cleaned_line_by_line() -> None:
    event = cloud_logs.parse(
        {"timestamp": 1_700_000_000_000, "message": f"Traceback:\n  key={KEY}\n\n  boom\n"}
    )
    assert event is not None
    assert event.lines() == ["Traceback:", "  key=k0123abcd:[redacted]", "  boom"]
    assert event.at == datetime.fromtimestamp(1_700_000_000, UTC)


class FakeGroup:
    """Events one per `step` seconds back from NOW; records each window asked for."""

    def __init__(self, count: int, step: float) -> None:
        self.events = [
            {
                "timestamp": int((NOW - timedelta(seconds=i * step)).timestamp() * 1000),
                "message": f"line {i}",
                "eventId": f"{i:06d}",
            }
            for i in range(count)
        ]
        self.windows: list[tuple[int, int]] = []

    def fetch(self, start: int, end: int) -> Iterator[dict[str, Any]]:
        self.windows.append((start, end))
        return (e for e in self.events if start <= e["timestamp"] <= end)


def test_the_newest_tail_is_found_without_reading_the_whole_window() -> None:
    group = FakeGroup(count=1000, step=10)  # 1000 lines over the last ~2.8 hours
    found = cloud_logs.last_events(group.fetch, NOW - timedelta(days=1), NOW, tail=20)
    assert [e.message for e in found] == [f"line {i}" for i in range(19, -1, -1)]
    # 20 lines at 10 s each need 200 s: the 1-min window, then the 4-min one, and no more
    assert len(group.windows) == 2
    starts = [w[0] for w in group.windows]
    assert starts[1] < starts[0] and group.windows[1][1] == starts[0] - 1  # no overlap


def test_a_window_shorter_than_the_search_stops_at_since() -> None:
    group = FakeGroup(count=1000, step=10)
    since = NOW - timedelta(seconds=95)
    found = cloud_logs.last_events(group.fetch, since, NOW, tail=100)
    assert [e.message for e in found] == [f"line {i}" for i in range(9, -1, -1)]
    assert group.windows[-1][0] == int(since.timestamp() * 1000)


def test_events_out_of_order_and_invalid_ones_still_give_the_newest() -> None:
    group = FakeGroup(count=50, step=1)
    shuffled = [*group.events[1::2], {"timestamp": "bad"}, *group.events[0::2]]

    def fetch(start: int, end: int) -> list[Any]:
        return [
            e for e in shuffled if isinstance(e["timestamp"], str) or start <= e["timestamp"] <= end
        ]

    found = cloud_logs.last_events(fetch, NOW - timedelta(hours=1), NOW, tail=5)
    assert [e.message for e in found] == ["line 4", "line 3", "line 2", "line 1", "line 0"]


@pytest.mark.parametrize(
    ("kind", "stream", "source"),
    [
        ("lambda", "2026/12/07/[3]0f1e2d3c4b5a69788796a5b4c3d2e1f0", "lambda:3"),
        ("lambda", "2026/12/07/[$LATEST]0f1e2d3c4b5a69788796a5b4c3d2e1f0", "lambda"),
        ("warm", "churn/model/0123456789abcdef0123456789abcdef", "warm:01234567"),
        ("lambda", "something else", "lambda"),
        ("warm", "", "warm"),
    ],
)
def test_the_source_says_which_version_or_task_wrote_a_line(
    kind: str, stream: str, source: str
) -> None:
    assert _aws_logs.source(kind, stream) == source
