"""`mlrig retrain`: the pipeline on the source's current data; publish only what is new."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

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
    remote: Annotated[
        bool,
        typer.Option(
            "--remote",
            help="Run the pipeline as a one-off task on the stack's compute (a Fargate task "
            "on an AWS stack's cluster, a container on a local stack's engine) in the "
            "repository's own trainer image; the result is applied here.",
        ),
    ] = False,
    cpu: Annotated[
        float | None,
        typer.Option("--cpu", help="vCPU of the task (0.25, 0.5, 1, 2, 4; default 1).", min=0),
    ] = None,
    memory: Annotated[
        int | None,
        typer.Option(
            "--memory", help="Memory of the task in MiB, a size Fargate offers (default 4096)."
        ),
    ] = None,
    spot: Annotated[
        bool,
        typer.Option(
            "--spot", help="Run on Fargate Spot (recorded only: a local engine has no Spot)."
        ),
    ] = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow/--detach",
            help="Stream the task's log and apply its result, or print its id and return.",
        ),
    ] = True,
    attach: Annotated[
        str | None,
        typer.Option(
            "--attach",
            metavar="TASK_ID",
            help="Follow a submitted task (a broken follow, --detach, a caller that died, "
            "a later CI job in a fresh clone) and apply its result: its ID or ARN.",
        ),
    ] = None,
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

    if remote or attach:
        result = _remote(
            repo, push_image, stack, log, cpu, memory, spot, follow, attach, json_out=json_out
        )
        if result is None:
            return
    elif cpu is not None or memory is not None or spot or not follow:
        from mlrig.errors import UsageError

        raise UsageError(
            "--cpu, --memory, --spot and --detach size a remote task", hint="add --remote"
        )
    else:
        result = core.retrain(repo, push_image=push_image, log=log, stack=stack)
    console().print(result.message, markup=False, highlight=False, soft_wrap=True)
    if result.commit:
        console().print(f"commit {result.commit[:12]}", highlight=False)
    if result.image:
        console().print(f"image {result.image}", markup=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(result.as_json()))


def _remote(
    repo: Path,
    push_image: bool,
    stack: str | None,
    log: Callable[[str], None],
    cpu: float | None,
    memory: int | None,
    spot: bool,
    follow: bool,
    attach: str | None,
    *,
    json_out: bool = False,
) -> Any:
    """`--remote`/`--attach`: submit (or find) the task, follow it, apply its result."""
    import sys

    from mlrig.core.compute import remote as core_remote

    if attach:
        sub = core_remote.attach(repo, attach, stack=stack, log=log)
    else:
        sub = core_remote.submit(
            repo,
            cpu=core_remote.cpu_units(cpu) if cpu is not None else core_remote.DEFAULT_CPU,
            memory_mib=memory or core_remote.DEFAULT_MEMORY,
            spot=spot,
            stack=stack,
            log=log,
        )
    if not follow and not attach:
        console().print(f"task {core_remote.short(sub.handle.id)} submitted", highlight=False)
        console().print(f"apply its result: {sub.attach}", markup=False, soft_wrap=True)
        if json_out:  # the last line: what the generated workflow reads (`.task_id`)
            typer.echo(
                json.dumps(
                    {"task_id": sub.handle.id, "backend": sub.handle.backend, "attach": sub.attach}
                )
            )
        return None

    def out(line: str) -> None:
        err_console().print(line, markup=False, highlight=False, soft_wrap=True)

    def ask_stop() -> bool:
        if not sys.stdin.isatty():
            return False
        from rich.prompt import Confirm

        return Confirm.ask(
            f"Stop task {core_remote.short(sub.handle.id)}? (no: it goes on, attach later)",
            console=err_console(),
            default=False,
        )

    status = core_remote.follow(sub, out=out, ask_stop=ask_stop)
    return core_remote.apply(sub, status, push_image=push_image, log=log)
