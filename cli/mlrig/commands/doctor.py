"""`mlrig doctor`: a table of every link of the chain, with the fix for each broken one."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mlrig.ui import console


def doctor(
    stack: Annotated[
        str | None,
        typer.Option("--stack", "-s", help="Stack to check (default: 'local' if it exists)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check Python, packages, engine, base image, registry, Pulumi and the stack's services."""
    from mlrig import contract
    from mlrig.core import doctor as core

    if stack is None:
        names = contract.list_names()
        stack = "local" if "local" in names else (names[0] if len(names) == 1 else None)
    checks = core.run(stack)
    bad = core.failed(checks)
    if as_json:
        typer.echo(
            json.dumps(
                {"stack": stack, "ok": not bad, "checks": [c.as_dict() for c in checks]}, indent=2
            )
        )
    else:
        from rich.table import Table

        colours = {"ok": "green", "fail": "red", "warn": "yellow", "skip": "dim"}
        table = Table(title=f"mlrig doctor{f' (stack {stack!r})' if stack else ''}")
        for col in ("check", "status", "detail", "fix"):
            table.add_column(col, overflow="fold")
        for c in checks:
            table.add_row(c.name, f"[{colours[c.status]}]{c.status}[/]", c.detail, c.fix)
        console().print(table)
    if bad:
        raise typer.Exit(1)
