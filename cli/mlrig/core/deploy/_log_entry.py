"""One line of `mlrig deploy logs`, whichever stack wrote it: the local reader (`logs`) and
the CloudWatch one (`_aws_logs`, which `logs` calls on AWS) both return it, so the
CloudWatch reader needs nothing back from `logs`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Entry:
    at: datetime
    source: str  # "nginx" or "vN" (the model container of version N)
    text: str
    request: dict[str, object] | None = None  # nginx's record, for --json
    stream: str | None = None  # the CloudWatch log stream (AWS), for --json

    def as_json(self) -> dict[str, object]:
        row: dict[str, object] = {
            "time": self.at.isoformat(timespec="milliseconds"),
            "source": self.source,
            "line": self.text,
        }
        if self.request is not None:
            row["request"] = self.request
        if self.stream is not None:
            row["stream"] = self.stream
        return row
