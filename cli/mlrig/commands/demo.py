"""`mlrig demo`: the golden path on the local stack, with progress and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlrig.commands.options import StackOpt
from mlrig.ui import console, err_console


def demo(
    stack: StackOpt = None,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Where to create the demo repository (default: under the mlrig home)."),
    ] = None,
) -> None:
    """Run the whole flow on a local stack ('local' unless one is named) and show the result."""
    from rich.table import Table

    from mlrig import contract, paths
    from mlrig.core.demo import demo as core
    from mlrig.core.stack import stacks

    stack = contract.validate_stack_name(stacks.resolve_name(stack, default="local"))
    ctx = core.DemoContext(
        stack=stack,
        workdir=(workdir or paths.home() / "demo").resolve(),
        log_file=core.default_log_file(),
    )
    status = err_console().status("starting")

    def on_start(name: str) -> None:
        status.update(f"[bold]{name}[/] …")

    def on_done(result: core.StepResult) -> None:
        err_console().print(
            f"[green]✓[/] {result.name} [dim]({result.seconds:.1f}s)[/] {result.detail}"
        )

    with status:
        results = core.run(ctx, on_start=on_start, on_done=on_done)
    table = Table(title="mlrig demo: done", show_header=True)
    table.add_column("step")
    table.add_column("time", justify="right")
    table.add_column("result", overflow="fold")
    for r in results:
        table.add_row(r.name, f"{r.seconds:.1f}s", r.detail)
    console().print(table)
    where = Table(title="where to look", show_header=False)
    for key, value in ctx.facts.items():
        where.add_row(key, value)
    where.add_row("log", str(ctx.log_file))
    console().print(where)
    nxt = Table(title="try next", show_header=False)
    repo = ctx.facts.get("repository", "REPO")
    for cmd in (
        f'eval "$(mlrig stack env --stack {stack})"   # configure this shell',
        f"cd {repo} && dvc exp show",
        f"cd {repo} && dvc exp run -S train.C=0.5 && dvc metrics diff",
        f"mlrig image run {ctx.facts.get('image', 'IMAGE')} --smoke",
        f"mlrig trace {ctx.facts.get('pushed', 'IMAGE')}   # image → model → run → commit → data",
        f"{ctx.facts.get('restore', 'mlrig checkout REF')} --repro   # restore and re-run",
        f"mlrig retrain --repo {repo}   # new rows in the source: a new version, or nothing",
        f"mlrig deploy keys create demo-model --stack {stack}   # a key to call the endpoint",
        f"mlrig deploy status demo-model --stack {stack}",
        f"mlrig trace endpoint:demo-model --stack {stack}   # endpoint → image → … → data",
        f"mlrig monitor models:/demo_model/{ctx.facts.get('captured version', 'N')} "
        f"--stack {stack} --report drift.html   # the drift check again",
        f"mlrig deploy promote demo-model --stack {stack}   # or abort: the loop's canary",
        f"mlrig doctor --stack {stack}",
    ):
        nxt.add_row(cmd)
    console().print(nxt)
