"""`mlrig stack …`: provision, inspect and tear down a stack (local or AWS)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.ui import console, err_console

if TYPE_CHECKING:
    from mlrig.core.aws_stack import AwsStackRequest

app = typer.Typer(help="Provision, inspect and tear down a stack.", no_args_is_help=True)

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Stack name.")]


def _progress(msg: str) -> None:
    err_console().print(f"[dim]•[/] {msg}")


@app.command()
def up(
    name: NameOpt = "local",
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
    region: Annotated[str | None, typer.Option(help="AWS region (default: AWS_REGION).")] = None,
    profile: Annotated[str, typer.Option(help="AWS size profile: small or production.")] = "small",
    github_repo: Annotated[
        str | None,
        typer.Option(help="owner/repo whose GitHub Actions may push images and data (AWS)."),
    ] = None,
    domain: Annotated[
        str | None,
        typer.Option(
            help="Custom domain for the tracking server (AWS; its Route 53 zone must exist)."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    backend_url: Annotated[
        str | None,
        typer.Option(help="Pulumi backend URL (default: a file backend under mlrig's home)."),
    ] = None,
) -> None:
    """Bring a stack up, or restart its services; a running stack is left as it is."""
    if aws:
        if local:
            from mlrig.errors import UsageError

            raise UsageError("--local and --aws exclude each other", hint="pick one")
        _aws_up(name, region, profile, github_repo, domain, yes, backend_url)
        return
    from mlrig.core.local_stack import LocalStack

    stack = LocalStack(name)
    with err_console().status(f"bringing stack '{name}' up"):
        outputs = stack.up(mlflow_port=mlflow_port, registry_port=registry_port, progress=_progress)
    _render_status(stack)
    console().print(
        f"[green]stack '{outputs.name}' is up[/] — "
        f'`eval "$(mlrig stack env --name {outputs.name})"` configures a shell'
    )


def _aws_request(
    name: str,
    region: str | None,
    profile: str,
    github_repo: str | None,
    domain: str | None,
    backend_url: str | None,
) -> AwsStackRequest:
    from mlrig.core import aws_stack

    return aws_stack.AwsStackRequest(
        name=name,
        region=aws_stack.resolve_region(region),
        profile=profile,
        github_repo=github_repo,
        domain=domain,
        backend_url=backend_url,
    ).validate()


def _aws_up(
    name: str,
    region: str | None,
    profile: str,
    github_repo: str | None,
    domain: str | None,
    yes: bool,
    backend_url: str | None,
) -> None:
    from mlrig.core import aws_stack
    from mlrig.errors import Aborted

    req = _aws_request(name, region, profile, github_repo, domain, backend_url)
    if not yes and not typer.confirm(
        f"Create or update AWS stack '{name}' ({profile}) in {req.region}? It costs money "
        f"while it exists (`mlrig stack plan --profile {profile}` shows how much)"
    ):
        raise Aborted("nothing was changed")
    with err_console().status(f"bringing AWS stack '{name}' up"):
        outputs = aws_stack.up(req, progress=_progress)
    console().print(
        f"[green]AWS stack '{outputs.name}' is up[/] — MLflow at "
        f"{outputs.mlflow_tracking_uri}; `mlrig stack outputs --name {name}`"
    )


def _render_status(stack) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    table = Table(title=f"stack '{stack.name}' (local)")
    for col in ("service", "state", "pid", "address", "log"):
        table.add_column(col)
    for s in stack.status():
        colour = "green" if s.state == "running" else "red"
        table.add_row(s.name, f"[{colour}]{s.state}[/]", str(s.pid or "-"), s.url, str(s.log))
    table.add_row(
        "dvc remote",
        "[green]ready[/]" if stack.dvc_remote_dir.is_dir() else "[red]missing[/]",
        "-",
        str(stack.dvc_remote_dir),
        "-",
    )
    console().print(table)


@app.command()
def status(name: NameOpt = "local") -> None:
    """Show each service of a stack: state, PID, address, log. Exits 1 if any is down."""
    from mlrig import contract
    from mlrig.core.local_stack import LocalStack

    outputs = contract.load(name)
    if outputs.kind != "local":
        console().print(f"stack '{name}' is an AWS stack; see `mlrig stack outputs`")
        return
    stack = LocalStack(name)
    _render_status(stack)
    if any(s.state != "running" for s in stack.status()):
        raise typer.Exit(1)


@app.command()
def outputs(
    name: NameOpt = "local",
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON document.")] = False,
) -> None:
    """Print a stack's outputs (the StackOutputs contract). Contains no secrets."""
    from mlrig import contract

    out = contract.load(name)
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
def env(name: NameOpt = "local") -> None:
    """Print `export` lines (with secrets) for `eval "$(mlrig stack env)"`."""
    from mlrig import contract
    from mlrig.core import stacks

    typer.echo(stacks.export_lines(stacks.client_env(contract.load(name))), nl=False)


@app.command("list")
def list_() -> None:
    """List known stacks."""
    from rich.table import Table

    from mlrig.core import stacks

    table = Table()
    for col in ("name", "kind", "mlflow", "registry", "dvc remote"):
        table.add_column(col)
    for s in stacks.list_stacks():
        table.add_row(s.name, s.kind, s.mlflow, s.registry, s.dvc_remote)
    console().print(table)


@app.command()
def down(
    name: NameOpt = "local",
    purge: Annotated[bool, typer.Option("--purge", help="Also delete all data.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Stop a stack's services. Data is kept unless --purge is given (and confirmed)."""
    from mlrig import contract
    from mlrig.core.local_stack import LocalStack
    from mlrig.errors import Aborted, ServiceError

    if contract.load(name).kind == "aws":  # unknown stack -> clear error
        _aws_down(name, purge, yes)
        return
    stack = LocalStack(name)
    if (
        purge
        and not yes
        and not typer.confirm(
            f"Delete all data of stack '{name}' (runs, images, DVC objects) in {stack.root}?"
        )
    ):
        raise Aborted("nothing was deleted")
    stuck = stack.down(purge=purge)
    if stuck:
        raise ServiceError(
            "some processes would not stop: " + "; ".join(stuck),
            hint="kill them by PID, then run `mlrig stack down` again",
        )
    what = "stopped and deleted" if purge else "stopped (data kept)"
    console().print(f"[green]stack '{name}' {what}[/]")


@app.command()
def plan(
    profile: Annotated[str, typer.Option(help="Size profile: small or production.")] = "small",
    region: Annotated[str, typer.Option(help="AWS region the plan is for.")] = "us-east-1",
    domain: Annotated[
        str | None, typer.Option(help="Custom domain for the tracking server.")
    ] = None,
    github_repo: Annotated[
        str, typer.Option(help="owner/repo the CI role trusts.")
    ] = "example-org/example-model",
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show the AWS stack's resources and monthly cost, offline (no Pulumi CLI, no AWS)."""
    from mlrig.core import costs
    from mlrig.core import plan as plans

    planned = plans.run_program(
        plans.plan_config(profile, region=region, domain=domain, github_repo=github_repo)
    )
    estimate = costs.estimate(planned)
    if as_json:
        typer.echo(plans.render_json(planned, estimate))
        return
    _render_plan(planned, estimate)


def _render_plan(planned, estimate) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    from mlrig.core import plan as plans

    graph = Table(title=f"AWS stack plan — profile {planned.profile}, {planned.region}")
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


def _aws_down(name: str, purge: bool, yes: bool) -> None:
    from mlrig.core import aws_stack
    from mlrig.errors import Aborted

    if (
        purge
        and not yes
        and not typer.confirm(
            f"Destroy AWS stack '{name}' AND delete its data (DVC objects, MLflow artifacts, "
            "images, the database)?"
        )
    ):
        raise Aborted("nothing was destroyed")
    if not purge and not yes and not typer.confirm(f"Destroy AWS stack '{name}'?"):
        raise Aborted("nothing was destroyed")
    with err_console().status(f"destroying AWS stack '{name}'"):
        result = aws_stack.down(name, purge=purge, progress=_progress)
    console().print(f"[green]AWS stack '{name}' destroyed[/]")
    for item in result.remaining:
        console().print(f"remains: {item}")


@app.command()
def preview(
    name: NameOpt = "local",
    region: Annotated[str | None, typer.Option(help="AWS region (default: AWS_REGION).")] = None,
    profile: Annotated[str, typer.Option(help="Size profile: small or production.")] = "small",
    github_repo: Annotated[str | None, typer.Option(help="owner/repo for the CI role.")] = None,
    domain: Annotated[
        str | None, typer.Option(help="Custom domain for the tracking server.")
    ] = None,
    backend_url: Annotated[str | None, typer.Option(help="Pulumi backend URL.")] = None,
) -> None:
    """Show what `stack up --aws` would change (needs the Pulumi CLI and AWS credentials)."""
    from mlrig.core import aws_stack

    req = _aws_request(name, region, profile, github_repo, domain, backend_url)
    with err_console().status(f"previewing AWS stack '{name}'"):
        summary = aws_stack.preview(req)
    changes = ", ".join(f"{op}: {n}" for op, n in sorted(summary.items())) or "no changes"
    console().print(f"AWS stack '{name}': {changes}")
