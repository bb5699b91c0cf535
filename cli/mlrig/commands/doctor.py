"""`mlrig doctor`: a table of every link of the chain, with the fix for each broken one."""

from __future__ import annotations

import json

import typer

from mlrig.commands.options import JsonOpt, StackOpt
from mlrig.ui import console


def doctor(stack: StackOpt = None, as_json: JsonOpt = False) -> None:
    """Check Python, packages, engine, base image, registry, Pulumi and the stack's services."""
    from mlrig.core.doctor import doctor as core

    report = core.run(stack)
    bad = core.failed(report.checks)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "stack": report.stack,
                    "ok": not bad,
                    "checks": [c.as_dict() for c in report.checks],
                },
                indent=2,
            )
        )
    else:
        from rich.table import Table

        colours = {"ok": "green", "fail": "red", "warn": "yellow", "skip": "dim"}
        title = f"mlrig doctor{f' (stack {report.stack!r})' if report.stack else ''}"
        table = Table(title=title)
        for col in ("check", "status", "detail", "fix"):
            table.add_column(col, overflow="fold")
        for c in report.checks:
            table.add_row(c.name, f"[{colours[c.status]}]{c.status}[/]", c.detail, c.fix)
        console().print(table)
    if bad:
        raise typer.Exit(1)
