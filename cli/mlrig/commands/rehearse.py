"""`mlrig stack rehearse`: run the AWS tracking server here, as its task runs, and check it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlrig.commands.options import ServerSizeOpt
from mlrig.ui import console


def rehearse(
    profile: Annotated[
        str, typer.Option("--profile", help="Size profile: small|production.")
    ] = "small",
    server_size: ServerSizeOpt = None,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(
            "--s3-endpoint",
            help="An S3-compatible endpoint (default: start moto's server); "
            "credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.",
        ),
    ] = None,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Leave the container, PostgreSQL and the S3 API running afterwards."
        ),
    ] = False,
    runs: Annotated[
        int, typer.Option("--runs", min=1, help="Runs logged before peak memory is read.")
    ] = 200,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="Loopback port for the server (default: the contract's container port).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    stop: Annotated[
        Path | None,
        typer.Option("--stop", help="Stop what a --keep rehearsal left running (its directory)."),
    ] = None,
) -> None:
    """Run the AWS tracking-server container here, against PostgreSQL and an S3 API.

    Builds the image, runs it with its task definition, prints the checks and exits non-zero
    naming any that failed."""
    from mlrig.core.stack import rehearse as core
    from mlrig.errors import ServiceError
    from mlrig.ui import err_console

    if stop is not None:
        stopped = core.stop_kept(stop)
        console().print(f"stopped {', '.join(stopped) or 'nothing (already gone)'}; removed {stop}")
        return
    req = core.Request(
        profile=profile,
        server_size=server_size,
        s3_endpoint=s3_endpoint,
        keep=keep,
        runs=runs,
        port=port,
    )
    progress = (
        (lambda _m: None)
        if as_json
        else (lambda m: err_console().print(f"[dim]{m}[/]", highlight=False, markup=True))
    )
    report = core.rehearse(req, progress)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _render(report)
    if report.failed:
        first = report.failed[0]
        names = ", ".join(c.name for c in report.failed)
        raise ServiceError(f"rehearsal failed ({names}): {first.name}: {first.detail}")


def _render(report: object) -> None:
    from rich.markup import escape
    from rich.table import Table

    from mlrig.core.stack.rehearse import Report

    assert isinstance(report, Report)
    table = Table(
        title=f"mlrig stack rehearse (profile {report.profile}, image "
        f"{report.image}, {report.image_size_mb:.0f} MB)"
    )
    for col in ("check", "status", "detail"):
        table.add_column(col, overflow="fold")
    for c in report.checks:
        status = "[green]ok[/]" if c.ok else "[red]fail[/]"
        table.add_row(c.name, status, escape(c.detail))
    console().print(table)
    if report.kept:
        console().print(
            f"kept running at {report.url} (user admin, password in "
            f"{report.directory}/admin-password); stop it with `mlrig stack "
            f"rehearse --stop {report.directory}`"
        )
