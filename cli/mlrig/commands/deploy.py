"""`mlrig deploy …`: a model version behind an authenticated endpoint, on the local stack
(nginx and containers) or an AWS stack (Lambda or Fargate behind its HTTP API)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from mlrig.commands.options import JsonOpt, StackOpt
from mlrig.errors import UsageError
from mlrig.ui import console, err_console


class _DeployGroup(TyperGroup):
    """`mlrig deploy [REF]` deploys; `mlrig deploy VERB …` runs a verb. REF never names a
    verb (it starts with models:/), so a first word that is a verb is the verb."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] in self.commands:
            for param in self.get_params(ctx):
                if param.name and param.expose_value:
                    ctx.params[param.name] = param.get_default(ctx)
            ctx._protected_args, ctx.args = [args[0]], args[1:]
            return ctx.args
        ctx.allow_interspersed_args = True  # `deploy REF --stack S`: options after REF
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DeployGroup,
    invoke_without_command=True,
    help="Deploy a model version to an authenticated endpoint; canary, promote, rollback.",
)
keys_app = typer.Typer(help="An endpoint's keys: create (shown once), list, revoke.")
app.add_typer(keys_app, name="keys")

EndpointArg = Annotated[str, typer.Argument(metavar="NAME", help="The endpoint.")]


def _core(stack: str | None) -> Any:
    """The local stack's endpoints module, or the AWS one (core/deploy/backend.py)."""
    from mlrig.core.deploy import backend

    return backend.for_stack(stack)


def _progress(msg: str) -> None:
    err_console().print(f"[dim]•[/] {msg}", markup=True, highlight=False)


def _show(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        console().print_json(json.dumps(rows))
        return
    if not rows:
        console().print("no endpoint (deploy one with `mlrig deploy`)", markup=False)
    for row in rows:
        count = row["key_count"]
        flag = " [PUBLIC: no key needed]" if row["public"] else f", {count} key{'s' * (count != 1)}"
        front = "API Gateway" if row["proxy"] == "api-gateway" else f"nginx {row['proxy']}"
        console().print(
            f"{row['endpoint']}: {row['url']} ({front}){flag}",
            markup=False,
            highlight=False,
        )
        for b in row["serving"]:
            console().print(
                f"  {b['traffic']:>3}%  {b['model']} v{b['version']}  {b['digest'][:19]}  "
                f"since {b['since']}",
                markup=False,
                highlight=False,
            )
            if b["capture"]:
                console().print(
                    f"        {_captured(b)}", markup=False, highlight=False, soft_wrap=True
                )
        if row["capture"]:
            console().print(
                f"  capture {row['capture']}% into {row['captures']}",
                markup=False,
                highlight=False,
            )


def _captured(b: dict[str, Any]) -> str:
    c = b["captured"]
    if c is None:
        return f"capture {b['capture']}%: counters unavailable (container not answering)"
    line = (
        f"capture {b['capture']}%: {c['written']} written, {c['dropped']} dropped, "
        f"{c['errors']} write errors, {c['queued']} queued"
    )
    return line + (f" (last error: {c['last_error']})" if c["last_error"] else "")


@app.callback()
def deploy(
    ctx: typer.Context,
    ref: Annotated[
        str | None,
        typer.Argument(
            metavar="[REF]",
            help="models:/NAME/VERSION or models:/NAME@ALIAS (default: the repo's "
            "models:/NAME@champion).",
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", "-e", help="Endpoint name (default: the model's, _ as -)."),
    ] = None,
    stack: StackOpt = None,
    canary: Annotated[
        int | None,
        typer.Option(
            help="Send this share (1-99 %) of traffic to the new version; promote later. "
            "Not with --warm: ECS rolls out the new version only once it answers /ping."
        ),
    ] = None,
    public: Annotated[
        bool,
        typer.Option(
            "--public",
            help="No key needed (flagged in `status` and `doctor`; `keys create` ends it).",
        ),
    ] = False,
    warm: Annotated[
        bool,
        typer.Option(
            "--warm", help="AWS: an always-on Fargate service instead of a Lambda function."
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="AWS: show the endpoint's resources and price; change nothing."
        ),
    ] = False,
    bake: Annotated[
        str,
        typer.Option(
            help="Watch a canary this long (60s, 5m; 0: not at all) and abort it when it "
            "fails its health check or the limits below (AWS: its alarms, errors and p99)."
        ),
    ] = "60s",
    max_error_rate: Annotated[
        float,
        typer.Option(min=0, max=100, help="Abort a canary with more than this % of 5xx answers."),
    ] = 5.0,
    min_requests: Annotated[
        int, typer.Option(min=1, help="Judge a canary's numbers once it answered this many.")
    ] = 20,
    max_p99_factor: Annotated[
        float,
        typer.Option(
            min=0.01, help="Abort a canary whose p99 is over N× the stable's (and --p99-floor)."
        ),
    ] = 3.0,
    p99_floor: Annotated[
        float,
        typer.Option(min=0, help="A canary's p99 up to this many ms is never over its limit."),
    ] = 500.0,
    capture: Annotated[
        int | None,
        typer.Option(
            metavar="PCT",
            help="Record this share (0-100 %) of predictions for `mlrig monitor`; kept as the "
            "endpoint's setting (default: the endpoint's, off for a new one).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy a model version (by digest) to an endpoint: the local stack's nginx, or on an
    AWS stack a Lambda function (or, --warm, Fargate) behind its HTTP API.

    On the local stack, a version with no pushed image is built and pushed first; an AWS
    stack serves only what `mlrig image push` put in its ECR. A canary is watched for
    --bake and aborted when it stops answering /ping or breaks the limits (the local
    stack), or when its alarms fire (AWS). Every change of an endpoint is a line of
    `mlrig access log`; `mlrig trace endpoint:NAME` follows what it serves back to its run,
    commit and data; `mlrig doctor` flags --public.
    """
    if ctx.invoked_subcommand is not None:
        return
    from mlrig.core.deploy import aws, traffic
    from mlrig.core.deploy import canary as canary_watch
    from mlrig.core.shared import capture as capture_contract

    capture_contract.check_percent(capture)  # bad input before the stack is looked up
    bake_s = canary_watch.parse_duration(bake)
    endpoints = _core(stack)
    if endpoints is aws:
        _refuse_local_limits(ctx)
        if dry_run:
            plan = aws.preview_deploy(
                ref, endpoint=endpoint, stack=stack, canary=canary, public=public, warm=warm
            )
            _show_dry_run(plan, as_json)
            return
        done: Any = aws.deploy(
            ref,
            endpoint=endpoint,
            stack=stack,
            canary=canary,
            public=public,
            warm=warm,
            capture=capture,
            bake_minutes=bake_s / 60,
            progress=_progress,
        )
    else:
        if warm or dry_run:
            raise UsageError(
                "--warm and --dry-run are for AWS stacks",
                hint="pass --stack with an AWS stack, or leave them out",
            )
        limits = traffic.CanaryLimits(
            max_error_rate=max_error_rate / 100,
            min_requests=min_requests,
            p99_factor=max_p99_factor,
            p99_floor_ms=p99_floor,
        )
        done = endpoints.deploy(
            ref,
            endpoint=endpoint,
            stack=stack,
            canary=canary,
            public=public,
            capture=capture,
            bake=bake_s,
            limits=limits,
            progress=_progress,
        )
    ep = done.endpoint
    if as_json:
        out = {**endpoints.status(ep.name, stack=stack)[0], "key": done.key}
        console().print_json(json.dumps(out))
        return
    new = ep.backends[-1]
    console().print(
        f"[green]deployed[/] {new.model} v{new.version} ({new.digest[:19]}) to {ep.name}"
        + (f" as a {new.weight}% canary" if ep.canary else "")
        + f": {done.url}/invocations",
        highlight=False,
    )
    if done.key:
        console().print(
            f"key (shown once): {done.key}\n"
            f"curl -u '{done.key}' {done.url}/invocations -H 'Content-Type: application/json' "
            "-d '{\"dataframe_split\": …}'",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


_LOCAL_LIMITS = ("max_error_rate", "min_requests", "max_p99_factor", "p99_floor")


def _refuse_local_limits(ctx: typer.Context) -> None:
    """The canary limits nginx's log is judged by do not exist on AWS: given there, one line
    instead of a silent no-op."""
    given = [
        "--" + name.replace("_", "-")
        for name in _LOCAL_LIMITS
        if (source := ctx.get_parameter_source(name)) is not None and source.name != "DEFAULT"
    ]
    if given:
        raise UsageError(
            f"{', '.join(given)}: the local stack's canary limits; on AWS the canary's "
            "CloudWatch alarms judge it (errors over 5 a minute, p99 over 2000 ms)",
            hint="leave them out; --bake sets how long the alarms are watched",
        )


def _show_dry_run(plan: Any, as_json: bool) -> None:
    if as_json:
        out = {"endpoint": plan.endpoint, "resources": plan.resources, "cost": plan.cost}
        console().print_json(json.dumps({**out, "reads": plan.reads}))
        return
    for typ, name in plan.resources:
        console().print(f"  + {typ}  {name}", markup=False, highlight=False)
    cost = plan.cost
    console().print(
        f"reads (never changes): {', '.join(plan.reads)}\n"
        f"{plan.endpoint}: ${cost['idle_month']:.2f}/month idle, "
        f"${cost['per_million_requests']:.2f} per million requests "
        f"({cost['price_region']} prices of {cost['price_date']}; {cost['assumption']})",
        markup=False,
        highlight=False,
    )


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(metavar="[NAME]")] = None,
    stack: StackOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What each endpoint serves: version, digest, since, traffic split, URL, public."""
    endpoints = _core(stack)
    _show(endpoints.status(name, stack=stack), as_json)


@app.command("list")
def list_(stack: StackOpt = None, as_json: JsonOpt = False) -> None:
    """Every endpoint of the stack."""
    endpoints = _core(stack)
    _show(endpoints.status(None, stack=stack), as_json)


def _json_state(name: str, stack: str | None) -> None:
    """The endpoint's state after a change, as `deploy status NAME --json` prints it."""
    console().print_json(json.dumps(_core(stack).status(name, stack=stack)[0]))


@app.command()
def promote(
    name: EndpointArg,
    stack: StackOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Promote even when the canary is over its limits (local stack only)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Send all traffic to the canary unless it is over its limits; the old one drains.

    On the local stack, refused (one line) when the canary's requests so far break the
    limits it was deployed with; --force promotes anyway."""
    from mlrig.core.deploy import aws

    endpoints = _core(stack)
    if endpoints is aws:
        if force:
            raise UsageError(
                "--force is for the local stack: on AWS promote judges nothing (the canary's "
                "alarms abort it while `deploy --bake` watches)",
                hint="leave out --force",
            )
        ep = aws.promote(name, stack=stack, progress=_progress)
    else:
        ep = endpoints.promote(name, stack=stack, force=force, progress=_progress)
    if as_json:
        return _json_state(name, stack)
    console().print(f"[green]promoted[/] {name}: v{ep.backends[0].version} takes all traffic")


@app.command()
def abort(name: EndpointArg, stack: StackOpt = None, as_json: JsonOpt = False) -> None:
    """Stop the canary; the stable version takes all traffic again."""
    endpoints = _core(stack)
    ep = endpoints.abort(name, stack=stack, progress=_progress)
    if as_json:
        return _json_state(name, stack)
    console().print(f"[green]aborted[/] the canary of {name}: v{ep.backends[0].version} serves")


@app.command()
def rollback(
    name: EndpointArg,
    to: Annotated[
        str | None, typer.Option("--to", help="REF to go back to (default: the previous one).")
    ] = None,
    stack: StackOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve the previous version again (its pushed image by digest, no rebuild)."""
    endpoints = _core(stack)
    ep = endpoints.rollback(name, to=to, stack=stack, progress=_progress)
    if as_json:
        return _json_state(name, stack)
    console().print(f"[green]rolled back[/] {name}: v{ep.backends[0].version} serves")


@app.command()
def delete(name: EndpointArg, stack: StackOpt = None) -> None:
    """Remove the endpoint: its route, keys and containers (AWS: its endpoint stack is
    destroyed and forgotten, and its keys' parameter deleted; the base stack is untouched)."""
    endpoints = _core(stack)
    endpoints.delete(name, stack=stack, progress=_progress)
    console().print(f"[green]deleted[/] endpoint {name}")


@app.command()
def logs(
    name: EndpointArg,
    since: Annotated[
        str, typer.Option(help="How far back: 30s, 10m, 2h, 1d or an ISO time.")
    ] = "10m",
    tail: Annotated[int, typer.Option(min=1, help="At most this many lines (the last).")] = 100,
    stack: StackOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recent requests (which version answered, status, time) and the model's output.

    Local stack: nginx's log of the endpoint's requests and its model containers' own
    output. AWS stack: the CloudWatch Logs of its Lambda function (source lambda:N, the
    published version that wrote the line) and of a warm endpoint's tasks (warm:TASK).
    Merged by time; keys, Authorization headers and other credentials in a line are
    redacted."""
    from mlrig.core.deploy import logs as deploy_logs

    found = deploy_logs.read(name, stack=stack, since=since, tail=tail)
    if as_json:
        console().print_json(json.dumps([e.as_json() for e in found]))
        return
    for e in found:
        console().print(
            f"{e.at.isoformat(timespec='milliseconds')} {e.source:>6}  {e.text}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@keys_app.command("create")
def keys_create(name: EndpointArg, stack: StackOpt = None) -> None:
    """A new key for the endpoint, shown once (only its hash is stored)."""
    endpoints = _core(stack)
    console().print(endpoints.create_key(name, stack=stack), markup=False, highlight=False)


@keys_app.command("list")
def keys_list(name: EndpointArg, stack: StackOpt = None, as_json: JsonOpt = False) -> None:
    """The endpoint's key IDs and when each was made (never a secret)."""
    endpoints = _core(stack)
    rows = endpoints.list_keys(name, stack=stack)
    if as_json:
        console().print_json(json.dumps(rows))
        return
    for row in rows:
        console().print(f"{row['id']}  {row['created_at']}", markup=False, highlight=False)


@keys_app.command("revoke")
def keys_revoke(
    name: EndpointArg,
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID")],
    stack: StackOpt = None,
) -> None:
    """Revoke a key: the local stack's nginx refuses it from the next request; on AWS the
    authorizer refuses it within about 90 s (API Gateway caches a verdict 60 s, the
    authorizer the key hashes 30 s)."""
    endpoints = _core(stack)
    endpoints.revoke_key(name, key_id, stack=stack)
    console().print(f"[green]revoked[/] {key_id} of {name}")
