"""An AWS stack's captures, read from its bucket: the objects under
`captures/ENDPOINT/yyyy/mm/dd/hh/<writer>-<seq>.jsonl` whose hour overlaps the window are
copied into a local folder of the same layout, which `_captures.read` then reads as it reads
the local stack's. Every key is input: only keys whose every part is what the writer makes
(an endpoint name, the four hour parts, a capture file name) become paths; others are
counted and skipped."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlrig.adapters import aws
from mlrig.core.deploy.state import NAME_PATTERN
from mlrig.core.monitor import _captures

PREFIX = "captures/"
_KEY = re.compile(
    r"captures/(?P<endpoint>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/"
    r"(?P<file>[^/]+)"
)


@dataclass
class Mirrored:
    objects: int = 0
    skipped_keys: int = 0


def mirror(bucket: str, region: str, since: datetime, until: datetime, dest: Path) -> Mirrored:
    """Copy the window's capture objects of every endpoint into dest/ENDPOINT/yyyy/mm/dd/hh."""
    start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    done = Mirrored()
    for key in aws.s3_keys(bucket, PREFIX, region=region):
        m = _KEY.fullmatch(key)
        if (
            m is None
            or not re.fullmatch(NAME_PATTERN, m["endpoint"])
            or not _captures._FILE.fullmatch(m["file"])
        ):
            done.skipped_keys += 1
            continue
        try:
            hour = datetime(int(m["y"]), int(m["m"]), int(m["d"]), int(m["h"]), tzinfo=UTC)
        except ValueError:
            done.skipped_keys += 1
            continue
        if not start <= hour <= until:
            continue
        folder = dest / m["endpoint"] / m["y"] / m["m"] / m["d"] / m["h"]
        folder.mkdir(parents=True, exist_ok=True)
        aws.s3_download(bucket, key, str(folder / m["file"]), region=region)
        done.objects += 1
    return done
