"""`mlrig setup …`: make this machine ready (Docker engine, base image)."""

from __future__ import annotations

import typer

from mlrig.ui import console, err_console

app = typer.Typer(help="Prepare this machine: Docker engine and base image.", no_args_is_help=True)


@app.command()
def engine() -> None:
    """Ensure a Docker engine answers (starting dockerd if needed) and a base image exists."""
    from mlrig.core.setup import engine as core

    def progress(msg: str) -> None:
        err_console().print(f"[dim]•[/] {msg}")

    version = core.ensure_engine(progress)
    base = core.ensure_base_image(progress)
    console().print(f"[green]engine {version} ready[/]; base image: {base}")
