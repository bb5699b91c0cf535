"""`mlrig init` and `mlrig update`: bootstrap an ML repo wired to a stack, keep it current."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.commands.options import ProjectNameOpt, StackOpt
from mlrig.ui import console, err_console

if TYPE_CHECKING:
    from mlrig.core.bootstrap.init import Pin


def _progress(msg: str) -> None:
    err_console().print(f"[dim]•[/] {msg}")


def _interactive(no_input: bool) -> bool:
    return not no_input and sys.stdin.isatty()


def _stack_or_ask(stack: str | None, no_input: bool) -> str:
    """The resolver's answer; when nothing resolves, a prompt (interactive) or a usage error."""
    from mlrig import contract
    from mlrig.core.stack import stacks
    from mlrig.errors import UsageError

    try:
        return stacks.resolve_name(stack)
    except UsageError:
        known = contract.list_names()
        if _interactive(no_input) and known:
            return str(typer.prompt(f"Stack ({', '.join(known)})", default=known[0]))
        raise UsageError(
            "--stack is required",
            hint=f"known stacks: {', '.join(known)}"
            if known
            else "create one with `mlrig stack up --local`",
        ) from None


def init_cmd(
    path: Annotated[
        Path,
        typer.Argument(
            help="Directory to create (new or empty); with --adopt, the root of the existing "
            "repository."
        ),
    ],
    stack: StackOpt = None,
    name: ProjectNameOpt = None,
    no_input: Annotated[
        bool, typer.Option("--no-input", help="Never prompt; fail if a value is missing.")
    ] = False,
    github_repo: Annotated[
        str, typer.Option("--github-repo", help="owner/repo on GitHub, for the CI workflow.")
    ] = "",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Allow a non-empty PATH that is not a "
            "repo yet; no existing file is overwritten (init "
            "fails instead) and existing files stay uncommitted.",
        ),
    ] = False,
    take_over: Annotated[
        bool,
        typer.Option(
            "--take-over",
            help="If someone else manages the stack's experiment or model of the project's "
            "name, revoke their MANAGE and EDIT there (otherwise init is refused).",
        ),
    ] = False,
    temporal: Annotated[
        bool,
        typer.Option(
            "--temporal",
            help="Time-stamped labels and features: preprocess joins them as of each label's "
            "time on the features' availability, splits by time with a gap of at least the "
            "horizon, and fails on a value from the future (params.yaml `temporal:`). The "
            "repo starts from a generated temporal example.",
        ),
    ] = False,
    snapshots: Annotated[
        str | None,
        typer.Option(
            "--snapshots",
            help="How ingest keeps the data: `table` (one CSV snapshot, rewritten when the "
            "source changes) or `partitioned` (only rows newer than a watermark, appended as "
            "dated parquet files of the DVC directory data/snapshots/). Default: partitioned "
            "with --temporal, else table.",
        ),
    ] = None,
    adopt: Annotated[
        bool,
        typer.Option(
            "--adopt",
            help="Wire the existing git + DVC repository at PATH to the stack instead: DVC "
            "remote, machine identity, answers file; one commit of those files, nothing "
            "else changed.",
        ),
    ] = False,
    dvc_init: Annotated[
        bool,
        typer.Option("--dvc", help="With --adopt: run `dvc init` first if PATH has no DVC."),
    ] = False,
    retrain_stage: Annotated[
        list[str] | None,
        typer.Option(
            "--retrain-stage",
            metavar="STAGE",
            help="With --adopt: a dvc.yaml stage that brings in new data (repeatable); with "
            "--gate-metric and --gate-direction, declares how `mlrig retrain` runs the repo.",
        ),
    ] = None,
    gate_metric: Annotated[
        str | None,
        typer.Option(
            "--gate-metric",
            metavar="FILE:KEY",
            help="With --retrain-stage: the score that decides promotion, a key of a metrics "
            "file a stage writes (e.g. eval/metrics.json:avg_prec.test).",
        ),
    ] = None,
    gate_direction: Annotated[
        str | None,
        typer.Option("--gate-direction", metavar="max|min", help="Which way the score is better."),
    ] = None,
    min_improvement: Annotated[
        float | None,
        typer.Option(
            "--min-improvement", help="What the candidate must win by (default 0: any gain)."
        ),
    ] = None,
) -> None:
    """Create a git + DVC ML repository wired to a stack's DVC remote and MLflow.

    It has an ingest → validate → preprocess → train → evaluate pipeline with a champion
    gate, data/feature/smoke tests and a CI workflow; `mlrig update` brings in later
    template versions. With --adopt, an existing repository is wired to the stack instead
    and its training script records provenance with `mlrig.api.log_provenance()`.
    """
    from mlrig.core.bootstrap import init as bootstrap
    from mlrig.errors import UsageError

    if adopt and force:
        raise UsageError("--force and --adopt exclude each other", hint="--adopt changes no file")
    if adopt and temporal:
        raise UsageError(
            "--temporal and --adopt exclude each other",
            hint="--adopt renders no template: it leaves the repository's stages as they are",
        )
    if snapshots is not None and snapshots not in ("table", "partitioned"):
        raise UsageError(
            f"--snapshots {snapshots!r} is not table or partitioned",
            hint="table keeps one snapshot, partitioned appends dated partitions",
        )
    if adopt and snapshots is not None:
        raise UsageError(
            "--snapshots and --adopt exclude each other",
            hint="--adopt renders no template: it leaves the repository's stages as they are",
        )
    if dvc_init and not adopt:
        raise UsageError("--dvc goes with --adopt", hint="`mlrig init` always runs `dvc init`")
    retrain = _declaration(retrain_stage, gate_metric, gate_direction, min_improvement)
    if retrain is not None and not adopt:
        raise UsageError(
            "--retrain-stage and --gate-* go with --adopt",
            hint="a generated repository's retrain is its template's ingest stage and gate",
        )
    stack_name = _stack_or_ask(stack, no_input)
    if adopt:
        _adopt(path, stack_name, name, github_repo, dvc_init, take_over, retrain)
        return
    if name is None and _interactive(no_input):
        try:
            default: str | None = bootstrap.derive_project_name(path.absolute().name)
        except UsageError:
            default = None
        name = str(typer.prompt("Project name", default=default))
    with err_console().status(f"creating {path}"):
        result = bootstrap.init(
            path,
            stack_name,
            name=name,
            github_repo=github_repo,
            force=force,
            progress=_progress,
            take_over=take_over,
            temporal=temporal,
            snapshots=snapshots,
        )
    console().print(
        f"[green]created {result.path}[/] — project [bold]{result.project_name}[/], stack "
        f"'{result.stack}', template {result.template_version}, commit {result.commit[:10]}\n"
        f"next: `cd {path} && dvc repro`"
    )
    _say_pin(result.pin)
    for grant in result.taken_over:
        console().print(f"- revoked {grant} (taken over)", soft_wrap=True, markup=False)
    if result.identity:
        console().print(
            f"training logs in as the repository's machine identity {result.identity} "
            "(EDIT on its own experiment and model only)"
        )
    if result.identity_problem:
        err_console().print(f"[yellow]warning:[/] {result.identity_problem}", soft_wrap=True)


def _declaration(
    stages: list[str] | None, metric: str | None, direction: str | None, margin: float | None
) -> dict[str, object] | None:
    """The `retrain` block the options spell (checked by the core), or None without them."""
    from mlrig.errors import UsageError

    if not stages and metric is None and direction is None and margin is None:
        return None
    if not stages or metric is None or direction is None:
        raise UsageError(
            "declaring retrain takes --retrain-stage, --gate-metric and --gate-direction",
            hint="e.g. --retrain-stage fetch --gate-metric eval/metrics.json:auc "
            "--gate-direction max",
        )
    gate: dict[str, object] = {"metric": metric, "direction": direction}
    if margin is not None:
        gate["min_improvement"] = margin
    return {"data_stages": list(stages), "gate": gate}


def _say_pin(pin: Pin | None) -> None:
    """How the repository's CI installs the pinned mlrig (a development version says nothing
    here: no index has it, and the workflow asks for MLRIG_PIP_SPEC)."""
    from mlrig.version import is_release

    if pin is None or not is_release(pin.version):
        return
    if pin.sha256:
        console().print(
            f"CI installs mlrig=={pin.version} with --require-hashes (the sha256 of its "
            f"{len(pin.sha256)} file(s) on the package index, in .copier-answers.yml)",
            markup=False,
            soft_wrap=True,
        )
    else:
        err_console().print(
            f"warning: CI installs mlrig=={pin.version} without a hash check: {pin.why_none}",
            markup=False,
            soft_wrap=True,
        )


def _adopt(
    path: Path,
    stack: str,
    name: str | None,
    github_repo: str,
    dvc_init: bool,
    take_over: bool,
    retrain: dict[str, object] | None,
) -> None:
    from mlrig.core.bootstrap import adopt

    with err_console().status(f"adopting {path}"):
        result = adopt.adopt(
            path,
            stack,
            name=name,
            github_repo=github_repo,
            dvc_init=dvc_init,
            take_over=take_over,
            progress=_progress,
            retrain=retrain,
        )
    console().print(
        f"[green]adopted {result.path}[/] — project [bold]{result.project_name}[/], stack "
        f"'{result.stack}', DVC remote {result.remote}, commit {result.commit[:10]} "
        f"({', '.join(result.files)})",
        soft_wrap=True,
    )
    for grant in result.taken_over:
        console().print(f"- revoked {grant} (taken over)", soft_wrap=True, markup=False)
    if result.identity:
        console().print(
            f"training logs in as {result.identity} (EDIT on experiment and model "
            f"{result.project_name} only): log runs to experiment {result.project_name}, "
            f"register model {result.project_name}, and call mlrig.api.log_provenance() "
            "in the training script's run",
            soft_wrap=True,
        )
    if result.retrain_declared:
        console().print("`mlrig retrain` runs it: its retrain is declared in the answers file")
    if result.identity_problem:
        err_console().print(f"[yellow]warning:[/] {result.identity_problem}", soft_wrap=True)


def update_cmd(
    path: Annotated[Path, typer.Argument(help="Root of a repo made by `mlrig init`.")] = Path("."),
    stack: Annotated[
        str | None,
        typer.Option(
            "--stack",
            "-s",
            help="Re-wire to this stack's current outputs (default: keep the repo's wiring).",
        ),
    ] = None,
    snapshots: Annotated[
        str | None,
        typer.Option(
            "--snapshots",
            help="`partitioned`: migrate a single-table repository to dated incremental "
            "snapshots; its data/snapshot/data.csv becomes the first partition, and the "
            "update is one commit.",
        ),
    ] = None,
) -> None:
    """Re-apply the newest template to a repo made by `mlrig init` (three-way merge).

    The repo's own answers in .copier-answers.yml are kept (an unchanged template changes
    nothing). Changes are left uncommitted for review; on conflicts it exits non-zero
    listing them. With --snapshots partitioned it migrates the repository and commits.
    """
    from mlrig.core.bootstrap import init as bootstrap

    with err_console().status(f"updating {path}"):
        result = bootstrap.update(path, stack=stack, progress=_progress, snapshots=snapshots)
    if result.commit:
        console().print(
            f"[green]migrated {result.path}[/] to partitioned snapshots (template "
            f"{result.old_version} -> {result.new_version}): {result.first_partition}; "
            f"commit {result.commit[:10]}",
            soft_wrap=True,
        )
        return
    if not result.changed:
        console().print(f"{result.path} is up to date with template {result.new_version}")
        return
    console().print(
        f"[green]updated {result.path}[/] from template {result.old_version} to "
        f"{result.new_version}; review and commit:"
    )
    for file in result.changed:
        console().print(f"  {file}", markup=False)
    if result.old_mlrig != result.new_mlrig:
        from mlrig.version import is_release

        dev = "" if is_release(result.new_mlrig) else " (a development version: set MLRIG_PIP_SPEC)"
        console().print(
            f"mlrig_version, the mlrig CI installs: {result.old_mlrig or 'none'} -> "
            f"{result.new_mlrig}{dev}",
            markup=False,
            soft_wrap=True,
        )
    if result.old_mlrig != result.new_mlrig:
        _say_pin(result.pin)
    for version, text in result.notes:
        console().print(
            f"template {version}:\n{text}", markup=False, highlight=False, soft_wrap=True
        )
