"""`mlrig monitor ENDPOINT|REF`: captured traffic against the served version's training
snapshot; exit 10 on drift, 11 when the window is too small to judge."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.commands.options import JsonOpt, StackOpt
from mlrig.ui import console

if TYPE_CHECKING:
    from mlrig.core.monitor.monitor import MonitorResult


def monitor(
    target: Annotated[
        str,
        typer.Argument(
            metavar="ENDPOINT|REF",
            help="An endpoint of the stack, or models:/NAME/VERSION or models:/NAME@ALIAS "
            "(its captures on every endpoint).",
        ),
    ],
    since: Annotated[
        str,
        typer.Option(
            help="Start of the window: a duration back from now (30m, 24h, 7d, 2w) "
            "or an ISO 8601 time."
        ),
    ] = "24h",
    json_out: JsonOpt = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="FILE.html",
            help="Also write a self-contained HTML report (histograms, drift table, schema).",
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            metavar="FILE|URL",
            envvar="MLRIG_LABELS",
            show_envvar=True,
            help="Ground truth (CSV or Parquet with inference_id, label[, row]): live "
            "performance with the gate's metric. With --labels-query: a SQLAlchemy URL "
            "(from the environment when it carries a password; never printed).",
        ),
    ] = None,
    labels_query: Annotated[
        str | None,
        typer.Option(
            metavar="SQL",
            help="Read the labels as this query's result on the --labels database, as the "
            "ingest stage reads ingest.query (run in a transaction that is rolled back).",
        ),
    ] = None,
    no_log: Annotated[
        bool, typer.Option("--no-log", help="Do not record the result as an MLflow run.")
    ] = False,
    stack: StackOpt = None,
    repo: Annotated[
        Path | None,
        typer.Option(
            help="The project's git repository (default: the one holding the "
            "current directory): data/schema.yaml and the restore point."
        ),
    ] = None,
) -> None:
    """Compare an endpoint's captured inputs and predictions with the exact DVC snapshot its
    model version was trained on. Exit 0: no drift; 10: drift; 11: too few rows to judge."""
    from datetime import UTC, datetime

    from mlrig.core.monitor import monitor as core

    start = core.parse_since(since, datetime.now(UTC))
    result = core.run_monitor(
        target,
        start,
        stack,
        repo=repo,
        labels=labels,
        labels_query=labels_query,
        log_run=not no_log,
        report=report,
    )
    if json_out:
        typer.echo(result.model_dump_json(indent=2))
    else:
        render(result, report)
    raise typer.Exit(result.exit_code())


def render(result: MonitorResult, report: Path | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    who = f"{result.endpoint or result.target}: {result.model} v{result.version}"
    out.print(
        f"{escape(who)} — {result.records} record(s), {result.rows} row(s) since "
        f"{result.since:%Y-%m-%d %H:%M} UTC vs {escape(result.reference_path)} "
        f"({result.reference_rows} rows, md5 {result.reference_md5[:12]})",
        highlight=False,
    )
    table = Table("column", "W (σ)", "KS p", "PSI", "JS", "verdict", box=None)
    for c in [*result.columns, *([result.prediction] if result.prediction else [])]:
        verdict = "[red]drift[/]" if c.drifted else ("not judged" if c.drifted is None else "ok")
        table.add_row(
            escape(c.column),
            *(
                f"{v:.3g}" if v is not None else ""
                for v in (c.wasserstein, c.ks_p, c.psi, c.jensen_shannon)
            ),
            verdict,
        )
    out.print(table)
    for line in [*result.schema_findings]:
        out.print(f"schema: {escape(line)}", highlight=False)
    for line in [*result.notes, *result.not_compared]:
        out.print(f"note: {escape(line)}", highlight=False)
    if result.performance:
        p = result.performance
        live = "n/a" if p.live is None else f"{p.live:.4g}"
        promoted = "n/a" if p.promoted_on is None else f"{p.promoted_on:.4g}"
        out.print(
            f"live {p.metric}: {live} on {p.labelled_rows} labelled row(s) (promoted on "
            f"{promoted}); {p.unknown_ids} label(s) with an unknown inference id",
            highlight=False,
        )
    if not result.enough:
        verdict = f"not enough rows to judge ({result.rows} < {result.thresholds['min_samples']:g})"
    elif result.drifted:
        verdict = f"DRIFT in {', '.join(result.drifted_columns) or 'prediction'}"
    else:
        verdict = "no drift"
    out.print(verdict, highlight=False)
    if result.monitor_run_id:
        out.print(f"MLflow run {result.monitor_run_id}", highlight=False)
    if report is not None:
        out.print(f"report {report}", highlight=False)
