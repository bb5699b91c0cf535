"""What `mlrig monitor` answers, as `--json` prints it: `run_monitor` (in `monitor`) builds
it, `_labels` adds the live performance and `_report` renders it, so neither of those two
imports `monitor` back. `monitor` re-exports `MonitorResult` and `Column` for callers."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

EXIT_DRIFT = 10
EXIT_NOT_ENOUGH = 11


class Column(BaseModel):
    """One column's verdict, as `--json` prints it."""

    column: str
    kind: str
    n_reference: int
    n_live: int
    drifted: bool | None
    psi: float | None = None
    ks: float | None = None
    ks_p: float | None = None
    wasserstein: float | None = None
    chi2_p: float | None = None
    jensen_shannon: float | None = None
    mean_shift: float | None = None
    note: str | None = None


class Performance(BaseModel):
    metric: str
    live: float | None
    promoted_on: float | None = Field(description="the version's test_<metric> at the gate")
    labelled_rows: int
    unknown_ids: int


class MonitorResult(BaseModel):
    target: str
    endpoint: str | None
    model: str
    version: str
    run_id: str = Field(description="the MLflow run that trained the version")
    digest: str | None
    since: datetime
    until: datetime
    records: int
    rows: int
    cut_lines: int
    bad_records: int
    bad_reason: str | None = None
    reference_path: str
    reference_md5: str
    reference_rows: int
    thresholds: dict[str, float]
    columns: list[Column]
    prediction: Column | None = None
    not_compared: list[str] = Field(default_factory=list)
    schema_findings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    performance: Performance | None = None
    enough: bool
    drifted: bool
    monitor_run_id: str | None = None

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def exit_code(self) -> int:
        if self.drifted:
            return EXIT_DRIFT
        return 0 if self.enough else EXIT_NOT_ENOUGH
