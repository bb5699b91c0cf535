"""`mlrig checkout REF`: the workspace that produced an image, model version or run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from mlrig.commands.options import StackOpt
from mlrig.ui import console, err_console


@contextmanager
def _working(what: str) -> Iterator[Callable[[str], None]]:
    """A transient status line that each progress message replaces: on success the result
    stays on screen, on failure only the one error line."""
    from rich.markup import escape

    with err_console().status(escape(what)) as status:
        yield lambda message: status.update(escape(message))


def _say(text: str) -> None:
    console().print(text, highlight=False, soft_wrap=True)


def checkout(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="REF",
            help="An image (name:tag, host/repo@sha256:…, sha256:…), models:/NAME/VERSION, "
            "models:/NAME@ALIAS, @ALIAS, models:/m-ID (an MLflow 3 logged model), runs:/ID or a "
            "run ID.",
        ),
    ],
    into: Annotated[
        Path | None,
        typer.Option(
            "--into",
            help="New or empty folder for the workspace (default: ./<model>-v<version>, "
            "next to the repository when run inside one).",
        ),
    ] = None,
    repo: Annotated[
        Path | None,
        typer.Option(
            help="Repository to make a git worktree of (default: the current one, when it "
            "holds the commit; else the run's git remote is cloned)."
        ),
    ] = None,
    repro: Annotated[
        bool,
        typer.Option(
            "--repro",
            help="Then re-run the pipeline there (`dvc repro --force`, no model version is "
            "registered) and compare its metrics and model with the recorded ones.",
        ),
    ] = False,
    stack: StackOpt = None,
) -> None:
    """Restore the commit or experiment and the data that produced REF, and verify them.

    Every recorded hash is checked. Your own checkout is never touched."""
    from rich.markup import escape

    from mlrig.core.provenance import checkout_repro
    from mlrig.core.provenance.checkout import checkout as make

    with _working(f"checking out {ref}") as progress:
        result = make(ref, into=into, repo=repo, stack=stack, progress=progress, repro=repro)
    ws, target = result.workspace, result.target
    if result.warning:
        _say(f"[yellow]warning:[/] {escape(result.warning)}")
    how = f"worktree of {ws.source}" if ws.source else f"clone of {ws.remote}"
    exp = f", experiment {target.exp_ref}" if target.exp_ref else ""
    _say(
        f"[green]checked out[/] {escape(ref)} in {escape(str(ws.root))} "
        f"({result.seconds:.1f} s)\n  commit {ws.sha[:12]}{escape(exp)} — {escape(how)}; "
        f"{ws.pulled} files pulled from the DVC remote"
    )
    if result.differences:
        for line in result.differences:
            _say(f"[red]differs[/] {escape(line)}")
        raise typer.Exit(1)
    if target.unverified:  # a run without mlrig's tags: what was verified, and what not
        data = f"; {len(target.files)} files as its dvc.lock records them" if target.files else ""
        _say(f"[green]verified[/]: commit {ws.sha[:12]}{data}")
        for line in (*ws.lacking, *target.unverified):
            _say(f"[yellow]not verified[/] {escape(line)}")
        if repro:
            _say("[yellow]--repro skipped[/]: nothing recorded to compare a re-run with")
        return
    _say(
        f"[green]identical[/]: {len(target.files)} files, params and `dvc status` match "
        f"run {target.run_id}"
    )
    for folder, count in sorted(result.directories.items()):
        _say(f"  {escape(folder)}: {count} files, each md5 as the run's DVC manifest lists it")
    if not repro:
        return
    with _working("dvc repro --force") as progress:
        again = checkout_repro.reproduce(result, progress=progress)
    for c in again.comparisons:
        mark = "[green]equal[/]" if c.equal else "[red]differs[/]"
        _say(f"  {c.name}: recorded {c.recorded}, re-run {c.now} {mark}")
    if again.registered:
        _say(f"[red]differs[/] the re-run registered model version {again.registered}")
    if not again.equal:
        _say(f"[red]not reproduced[/] (re-run {again.run_id})")
        raise typer.Exit(1)
    _say(f"[green]reproduced[/]: re-run {again.run_id} equals run {target.run_id}")
