"""`mlrig trainer serve|token`: the `POST /train` retraining service and its token."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.commands.options import StackOpt
from mlrig.ui import console

if TYPE_CHECKING:
    from mlrig.core.trainer.serve import Started

DEFAULT_PORT = 8765

app = typer.Typer(
    help="The retraining service: `POST /train` runs `mlrig retrain` on a repository.",
    no_args_is_help=True,
)

RepoOpt = Annotated[
    Path,
    typer.Option(
        "--repo",
        help="The repository made by `mlrig init` to retrain.",
        file_okay=False,
        show_default=False,
    ),
]


def _ready(started: Started) -> None:
    from rich.markup import escape

    lines = [
        f"[green]trainer[/] serving on {escape(started.url)} (stack '{escape(started.stack)}')",
        f"  token in {escape(str(started.token_file))} (`mlrig trainer token` prints it); "
        "the stack's MLflow admin credentials work over HTTP Basic too",
        f"  jobs and logs in {escape(str(started.state_dir))}",
        f"  monitor schedule: {escape(started.schedule)}",
    ]
    for job_id in started.interrupted:
        lines.append(f"  job {job_id} was interrupted by the last stop: marked failed")
    for job_id in started.resumed:
        lines.append(f"  job {job_id}: its remote task outlived the last stop, attaching to it")
    console().print("\n".join(lines), highlight=False, soft_wrap=True)


@app.command("serve")
def serve(
    repo: RepoOpt = Path("."),
    host: Annotated[
        str, typer.Option(envvar="MLRIG_TRAINER_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(envvar="MLRIG_TRAINER_PORT", help="Port to listen on (0: any free port)."),
    ] = DEFAULT_PORT,
    stack: StackOpt = None,
) -> None:
    """Serve `POST /train`, `GET /train/{id}`, `GET /train` and `GET /health`.

    POST answers 202 and a job id. Jobs run one at a time, oldest first, and survive a
    restart; at most 10 wait (429 beyond). Credentials are checked before a body is read;
    a body is at most 16 KiB (413). One service per repository: a second one is refused.
    SIGTERM interrupts the running job (marked failed, repo recovered) and keeps queued
    ones; a killed service takes its job's whole process tree along."""
    from mlrig.core.trainer import serve as trainer_service

    trainer_service.serve(repo, stack=stack, host=host, port=port, on_ready=_ready)


@app.command("token")
def token(repo: RepoOpt = Path("."), stack: StackOpt = None) -> None:
    """Print the trainer's bearer token for scripts (generated on first use)."""
    from mlrig.core.stack import stacks
    from mlrig.core.trainer import token as trainer_auth

    name = stacks.resolve_name(stack, repo=repo.expanduser().resolve())
    typer.echo(trainer_auth.ensure_token(name))
