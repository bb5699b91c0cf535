"""`mlrig retrain`: the pipeline on the source's current data; publish only what is new."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlrig.commands.options import JsonOpt, StackOpt
from mlrig.ui import console, err_console


def retrain(
    repo: Annotated[
        Path,
        typer.Option(
            help="The repository `mlrig init` made or adopted (default: the current directory)."
        ),
    ] = Path("."),
    push_image: Annotated[
        bool,
        typer.Option(
            "--push-image/--no-push-image",
            help="When the champion moves, build its serving image and push it to the stack.",
        ),
    ] = True,
    stack: StackOpt = None,
    json_out: JsonOpt = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Submit nothing: print the remote task's size and what an hour of it costs "
            "on demand and on Fargate Spot.",
        ),
    ] = False,
    recover: Annotated[
        bool,
        typer.Option(
            "--recover",
            help="Only undo what an interrupted retrain left behind (commit, files, alias).",
        ),
    ] = False,
) -> None:
    """Retrain on the source's current data: ingest → validate → … → champion gate.

    An adopted repository runs its own stages and the gate its answers file declares
    (`mlrig init --adopt --retrain-stage …`). Commits and pushes only when the data changed;
    builds and pushes the image when the champion moved. A failure changes nothing."""
    from mlrig.core.retrain import retrain as core

    def log(message: str) -> None:
        err_console().print(f"[dim]•[/] {message}", markup=True, highlight=False)

    if dry_run:
        from mlrig.core.compute import price

        quote, line = price.dry_run(repo, stack)
        console().print(line, markup=False, highlight=False, soft_wrap=True)
        if json_out:
            typer.echo(json.dumps(quote.as_json()))
        return

    if recover:
        undone = core.recover(repo, log, stack=stack)
        console().print(
            "undone: the repository and the alias are as before the interrupted run"
            if undone
            else "nothing to recover"
        )
        return

    result = core.retrain(repo, push_image=push_image, log=log, stack=stack)
    console().print(result.message, markup=False, highlight=False, soft_wrap=True)
    if result.commit:
        console().print(f"commit {result.commit[:12]}", highlight=False)
    if result.image:
        console().print(f"image {result.image}", markup=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(result.as_json()))
