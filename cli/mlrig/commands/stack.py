"""`mlrig stack …`: provision, inspect and tear down a stack (local or AWS)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlrig.commands.options import (
    BackendUrlOpt,
    DomainOpt,
    GithubRepoOpt,
    JsonOpt,
    ProfileOpt,
    RegionOpt,
    ServerSizeOpt,
    StackNameAliasOpt,
    StackOpt,
    YesOpt,
    stack_flag,
)
from mlrig.ui import console, err_console

if TYPE_CHECKING:
    from mlrig.core.stack.costs import CostEstimate
    from mlrig.core.stack.facade import Confirmation, ServiceRow, Stack
    from mlrig.core.stack.plan import Plan

app = typer.Typer(help="Provision, inspect and tear down a stack.", no_args_is_help=True)


def _progress(msg: str) -> None:
    err_console().print(f"[dim]•[/] {msg}")


def _open(stack: str | None, name: str | None) -> Stack:
    from mlrig.core.stack import stacks

    return stacks.open(stacks.resolve_name(stack_flag(stack, name)))


def _confirm(ask: Confirmation | None, yes: bool) -> None:
    from mlrig.errors import Aborted

    if ask and not yes and not typer.confirm(ask.question):
        raise Aborted(ask.refused)


@app.command()
def up(
    stack: StackOpt = None,
    name: StackNameAliasOpt = None,
    local: Annotated[
        bool, typer.Option("--local", help="Run the stack on this machine (the default).")
    ] = False,
    mlflow_port: Annotated[int | None, typer.Option(help="MLflow port (first up only).")] = None,
    registry_port: Annotated[
        int | None, typer.Option(help="Registry port (first up only).")
    ] = None,
    aws: Annotated[
        bool, typer.Option("--aws", help="Provision the stack on AWS (Pulumi).")
    ] = False,
    region: RegionOpt = None,
    profile: ProfileOpt = "small",
    github_repo: GithubRepoOpt = None,
    domain: DomainOpt = None,
    server_size: ServerSizeOpt = None,
    yes: YesOpt = False,
    backend_url: BackendUrlOpt = None,
) -> None:
    """Bring a stack up, or restart its services; a running stack is left as it is.

    With no stack named and none yet, it creates the local stack 'local'.
    """
    from mlrig.core.stack import lock as stack_lock
    from mlrig.core.stack import stacks
    from mlrig.core.stack.facade import UpOptions
    from mlrig.errors import UsageError

    if aws and local:
        raise UsageError("--local and --aws exclude each other", hint="pick one")
    target = stacks.create(
        stacks.resolve_name(stack_flag(stack, name), default="local"), "aws" if aws else "local"
    )
    options = UpOptions(
        mlflow_port=mlflow_port,
        registry_port=registry_port,
        region=region,
        profile=profile,
        github_repo=github_repo,
        domain=domain,
        server_size=server_size,
        backend_url=backend_url,
    )
    _confirm(target.confirm_up(options), yes)
    with (
        stack_lock.hold(target.name, what="up"),  # either kind: one writer per stack
        err_console().status(f"bringing {target.kind} stack '{target.name}' up"),
    ):
        report = target.up(options, progress=_progress)
    if report.services:
        _render_status(target, report.services)
    console().print(f"[green]{report.headline}[/] — {report.next_step}")


def _render_status(target: Stack, rows: list[ServiceRow]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"stack '{target.name}' ({target.kind})")
    for col in ("service", "state", "pid", "address", "log"):
        table.add_column(col)
    for row in rows:
        colour = "green" if row.ok else "red"
        state = f"{row.state}: {row.detail}" if row.detail and not row.ok else row.state
        table.add_row(
            row.name,
            f"[{colour}]{escape(state)}[/]",
            str(row.pid or "-"),
            row.address,
            str(row.log) if row.log else "-",
        )
    console().print(table)


@app.command()
def status(stack: StackOpt = None, name: StackNameAliasOpt = None) -> None:
    """Show each part of a stack: state, PID, address, log. Exits 1 if any is down."""
    target = _open(stack, name)
    rows = target.status()
    _render_status(target, rows)
    if not all(row.ok for row in rows):
        raise typer.Exit(1)


@app.command()
def outputs(
    stack: StackOpt = None, name: StackNameAliasOpt = None, as_json: JsonOpt = False
) -> None:
    """Print a stack's outputs (the StackOutputs contract). Contains no secrets."""
    from mlrig.core.stack import stacks

    out = stacks.outputs(stacks.resolve_name(stack_flag(stack, name)))
    if as_json:
        typer.echo(out.model_dump_json(indent=2))
        return
    from rich.table import Table

    table = Table(title=f"stack '{out.name}' ({out.kind})", show_header=False)
    rows = [
        ("schema version", str(out.schema_version)),
        ("created", out.created_at.isoformat()),
        ("region", out.region or "-"),
        ("dvc remote", out.dvc_remote_url),
        ("mlflow", out.mlflow_tracking_uri),
        ("mlflow user", out.mlflow.auth.username if out.mlflow.auth else "-"),
        ("registry", out.registry_url),
        ("ci role", out.ci_role_arn or "-"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console().print(table)


@app.command()
def env(
    stack: StackOpt = None,
    name: StackNameAliasOpt = None,
    as_user: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="Log in as this identity instead of the admin: a repository's machine "
            "identity (repo-PROJECT, its password from the stack) or a person (asks for "
            "their password). Checked with the tracking server first.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="sh: `export` lines for eval; dotenv: KEY=value lines for an env file; json.",
        ),
    ] = "sh",
    as_json: JsonOpt = False,
) -> None:
    """Print a stack's client environment, with secrets: MLflow's address and login, the
    DVC remote, the AWS region. Without --as it is the admin's (said on stderr).

    eval "$(mlrig stack env --as repo-PROJECT)" trains as the repository's machine identity."""
    from mlrig.core.stack import env as stack_env
    from mlrig.errors import UsageError

    if as_json and fmt not in ("sh", "json"):
        raise UsageError(f"--json and --format {fmt} exclude each other", hint="pick one")
    fmt = stack_env.check_format("json" if as_json else fmt)  # before anything is read
    target = _open(stack, name)
    outputs = target.outputs()
    if as_user is None:
        values = target.env()
        if outputs.mlflow.auth:
            err_console().print(
                f"mlrig: this is the admin's environment ({outputs.mlflow.auth.username}); "
                "train as a repository's identity with --as repo-PROJECT",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    else:
        from mlrig.core.access import identity_env

        def ask(user: str) -> str:
            return str(typer.prompt(f"MLflow password of {user}", hide_input=True, err=True))

        values = identity_env.env_as(outputs, as_user, ask)
    typer.echo(stack_env.render(values, fmt), nl=False)


@app.command("list")
def list_() -> None:
    """List known stacks."""
    from rich.markup import escape
    from rich.table import Table

    from mlrig.core.stack import stacks

    table = Table()
    for col in ("name", "kind", "mlflow", "registry", "dvc remote"):
        table.add_column(col)
    broken = []
    for s in stacks.list_stacks():
        if s.problem:
            broken.append(s)
            table.add_row(s.name, "[red]broken[/]", "-", "-", "-")
        else:
            table.add_row(s.name, s.kind, s.mlflow, s.registry, s.dvc_remote)
    console().print(table)
    for s in broken:
        console().print(f"[red]{s.name}:[/] {escape(s.problem)}", highlight=False)


@app.command()
def down(
    stack: StackOpt = None,
    name: StackNameAliasOpt = None,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete all data.")] = False,
    yes: YesOpt = False,
) -> None:
    """Stop a stack's services. Data is kept unless --purge is given (and confirmed)."""
    target = _open(stack, name)
    _confirm(target.confirm_down(purge), yes)
    from mlrig.core.stack import lock as stack_lock

    with (
        stack_lock.hold(target.name, what="down"),
        err_console().status(f"taking stack '{target.name}' down"),
    ):
        report = target.down(purge=purge, progress=_progress)
    console().print(f"[green]{report.summary}[/]")
    for item in report.remaining:
        console().print(f"remains: {item}")


@app.command()
def plan(
    profile: ProfileOpt = "small",
    # an offline plan needs no credentials, so region and repo get examples as defaults
    region: Annotated[str, typer.Option(help="AWS region the plan is for.")] = "us-east-1",
    domain: DomainOpt = None,
    github_repo: Annotated[
        str, typer.Option(help="owner/repo the CI role trusts.")
    ] = "example-org/example-model",
    server_size: ServerSizeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the AWS stack's resources and monthly cost, offline (no Pulumi CLI, no AWS)."""
    from mlrig.core.stack import costs, endpoint_costs
    from mlrig.core.stack import plan as plans

    config = plans.plan_config(
        profile, region=region, domain=domain, github_repo=github_repo, server_size=server_size
    )
    planned = plans.run_program(config)
    estimate = costs.estimate(planned)
    per_endpoint = endpoint_costs.per_endpoint(planned, config.stack)
    training = costs.remote_training(planned)
    if as_json:
        doc = json.loads(plans.render_json(planned, estimate))
        extra = {"endpoint_cost_usd": per_endpoint, "remote_training_usd": training}
        typer.echo(json.dumps({**doc, **extra}, indent=2))
        return
    _render_plan(planned, estimate)
    _render_endpoint_costs(per_endpoint)
    _render_training_costs(training)


def _render_training_costs(training: dict[str, Any] | None) -> None:
    if training is None:
        console().print("remote training (`retrain --remote`): none before the tracking server")
        return
    hours = "; ".join(
        f"{h['cpu_units'] / 1024:g} vCPU / {h['memory_mib'] / 1024:g} GiB "
        f"${h['on_demand']:.4f} on demand, ${h['spot']:.4f} on Spot"
        for h in training["per_hour"]
    )
    console().print(
        f"remote training (`retrain --remote`): {', '.join(training['resources'])}: "
        f"${training['idle_month']:.2f}/month idle; an hour of a task: {hours} "
        f"({training['price_region']} prices of {training['price_date']})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _render_endpoint_costs(per_endpoint: dict[str, Any]) -> None:
    if not per_endpoint:
        console().print("endpoints (`mlrig deploy`): none before the tracking server exists")
        return
    for kind, cost in per_endpoint.items():
        what = "Lambda function" if kind == "lambda" else "warm Fargate service (--warm)"
        console().print(
            f"each endpoint, {what}: ${cost['idle_month']:.2f}/month idle + "
            f"${cost['per_million_requests']:.2f} per million requests ({cost['assumption']})",
            markup=False,
            highlight=False,
        )


def _render_plan(planned: Plan, estimate: CostEstimate) -> None:
    from rich.table import Table

    from mlrig.core.stack import plan as plans

    sized = f" (tracking server {planned.server_size})" if planned.server_size else ""
    graph = Table(title=f"AWS stack plan — profile {planned.profile}{sized}, {planned.region}")
    for col in ("type", "name", "security-relevant settings"):
        graph.add_column(col, overflow="fold")
    for res in planned.resources:
        graph.add_row(res.type, res.name, plans.highlights(res))
    console().print(graph)
    money = estimate.as_dict()
    bill = Table(
        title=f"monthly cost (USD, {money['price_region']} prices of {money['price_date']})"
    )
    for col in ("resource", "idle", "usage", "basis"):
        bill.add_column(col, overflow="fold")
    for item in money["items"]:
        bill.add_row(item["name"], f"{item['idle']:.2f}", f"{item['usage']:.2f}", item["basis"])
    bill.add_row(
        "[bold]total[/]",
        f"[bold]{money['idle_total']:.2f}[/]",
        f"{money['usage_total']:.2f}",
        f"[bold]{money['total']:.2f}[/] with usage",
    )
    console().print(bill)
    console().print(f"usage assumption: {money['usage_assumption']}")
    problems = plans.policy_violations(planned)
    if problems:
        console().print("[red]policy violations:[/] " + "; ".join(problems))
    else:
        console().print("[green]policy: every rule passes[/] (infra/mlrig/infra/policy.py)")


@app.command()
def preview(
    stack: StackOpt = None,
    name: StackNameAliasOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = "small",
    github_repo: GithubRepoOpt = None,
    domain: DomainOpt = None,
    server_size: ServerSizeOpt = None,
    backend_url: BackendUrlOpt = None,
) -> None:
    """Show what `stack up --aws` would change (needs the Pulumi CLI and AWS credentials)."""
    from mlrig.core.stack import stacks
    from mlrig.core.stack.aws.facade import AwsFacade
    from mlrig.core.stack.facade import UpOptions

    target = AwsFacade(stacks.resolve_name(stack_flag(stack, name)))
    options = UpOptions(
        region=region,
        profile=profile,
        github_repo=github_repo,
        domain=domain,
        server_size=server_size,
        backend_url=backend_url,
    )
    with err_console().status(f"previewing AWS stack '{target.name}'"):
        summary = target.preview(options)
    changes = ", ".join(f"{op}: {n}" for op, n in sorted(summary.items())) or "no changes"
    console().print(f"AWS stack '{target.name}': {changes}")
