"""The HTML report is one self-contained file: nothing fetched, no script, every value from
the captures escaped, a chart per compared column (Chromium paints it in the integration test)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mlrig.core.monitor import _report
from mlrig.core.monitor import stats as drift_stats
from mlrig.core.monitor.monitor import Column, MonitorResult


def _result(columns: list[Column]) -> MonitorResult:
    return MonitorResult(
        target="ep",
        endpoint="ep",
        model="m",
        version="1",
        run_id="0" * 32,
        digest=None,
        since=datetime(2026, 12, 7, tzinfo=UTC),
        until=datetime(2026, 12, 7, 1, tzinfo=UTC),
        records=5,
        rows=500,
        cut_lines=0,
        bad_records=0,
        reference_path="data/processed/train.csv",
        reference_md5="f" * 32,
        reference_rows=2000,
        thresholds={"min_samples": 200.0},
        columns=columns,
        schema_findings=["column '<script>alert(1)</script>' is not in data/schema.yaml"],
        enough=True,
        drifted=True,
    )


def test_the_report_is_self_contained_and_escapes_what_it_shows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    reference = {"a": rng.normal(size=2000), "k<b>": rng.choice(["x", "y"], size=2000)}
    live = {"a": rng.normal(size=500) + 1, "k<b>": rng.choice(["x", "y"], size=500)}
    columns = [Column(**c.as_dict()) for c in drift_stats.compare(reference, live)]
    path = tmp_path / "report.html"
    _report.write(path, _result(columns), reference, live, None)
    text = path.read_text(encoding="ascii")  # non-ASCII as character references
    assert "<script" not in text and "src=" not in text and "<link" not in text
    assert "https://" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert "&lt;script&gt;" in text and "k&lt;b&gt;" in text
    assert text.count('class="chart"') == 2 and text.count("<svg") == 2
    assert 'class="bar live"' in text and 'class="bar reference"' in text
    assert "DRIFT" in text
