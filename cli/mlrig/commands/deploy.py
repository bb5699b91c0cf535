"""`mlrig deploy …`: a model version behind an authenticated endpoint of the local stack."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from mlrig.commands.options import JsonOpt, StackOpt
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


def _progress(msg: str) -> None:
    err_console().print(f"[dim]•[/] {msg}", markup=True, highlight=False)


def _show(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        console().print_json(json.dumps(rows))
        return
    if not rows:
        console().print("no endpoint (deploy one with `mlrig deploy`)", markup=False)
    for row in rows:
        flag = " [PUBLIC: no key needed]" if row["public"] else ""
        console().print(
            f"{row['endpoint']}: {row['url']} (nginx {row['proxy']}){flag}",
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
        str | None, typer.Option("--endpoint", "-e", help="Endpoint name (default: the model's).")
    ] = None,
    stack: StackOpt = None,
    canary: Annotated[
        int | None,
        typer.Option(help="Send this share (1-99 %) of traffic to the new version; promote later."),
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="No key needed (flagged in `status`).")
    ] = False,
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
    """Deploy a pushed model version (by digest) to an endpoint of the local stack."""
    if ctx.invoked_subcommand is not None:
        return
    from mlrig.core.deploy import endpoints

    done = endpoints.deploy(
        ref,
        endpoint=endpoint,
        stack=stack,
        canary=canary,
        public=public,
        capture=capture,
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


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(metavar="[NAME]")] = None,
    stack: StackOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What each endpoint serves: version, digest, since, traffic split, URL, public."""
    from mlrig.core.deploy import endpoints

    _show(endpoints.status(name, stack=stack), as_json)


@app.command("list")
def list_(stack: StackOpt = None, as_json: JsonOpt = False) -> None:
    """Every endpoint of the stack."""
    from mlrig.core.deploy import endpoints

    _show(endpoints.status(None, stack=stack), as_json)


@app.command()
def promote(name: EndpointArg, stack: StackOpt = None) -> None:
    """Send all traffic to the canary; the old version drains, then stops."""
    from mlrig.core.deploy import endpoints

    ep = endpoints.promote(name, stack=stack, progress=_progress)
    console().print(f"[green]promoted[/] {name}: v{ep.backends[0].version} takes all traffic")


@app.command()
def abort(name: EndpointArg, stack: StackOpt = None) -> None:
    """Stop the canary; the stable version takes all traffic again."""
    from mlrig.core.deploy import endpoints

    ep = endpoints.abort(name, stack=stack, progress=_progress)
    console().print(f"[green]aborted[/] the canary of {name}: v{ep.backends[0].version} serves")


@app.command()
def rollback(
    name: EndpointArg,
    to: Annotated[
        str | None, typer.Option("--to", help="REF to go back to (default: the previous one).")
    ] = None,
    stack: StackOpt = None,
) -> None:
    """Serve the previous version again (its pushed image by digest, no rebuild)."""
    from mlrig.core.deploy import endpoints

    ep = endpoints.rollback(name, to=to, stack=stack, progress=_progress)
    console().print(f"[green]rolled back[/] {name}: v{ep.backends[0].version} serves")


@app.command()
def delete(name: EndpointArg, stack: StackOpt = None) -> None:
    """Remove the endpoint: its route, keys and containers."""
    from mlrig.core.deploy import endpoints

    endpoints.delete(name, stack=stack, progress=_progress)
    console().print(f"[green]deleted[/] endpoint {name}")


@keys_app.command("create")
def keys_create(name: EndpointArg, stack: StackOpt = None) -> None:
    """A new key for the endpoint, shown once (only its hash is stored)."""
    from mlrig.core.deploy import endpoints

    console().print(endpoints.create_key(name, stack=stack), markup=False, highlight=False)


@keys_app.command("list")
def keys_list(name: EndpointArg, stack: StackOpt = None, as_json: JsonOpt = False) -> None:
    """The endpoint's key IDs and when each was made (never a secret)."""
    from mlrig.core.deploy import endpoints

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
    """Revoke a key: nginx refuses it from the next request."""
    from mlrig.core.deploy import endpoints

    endpoints.revoke_key(name, key_id, stack=stack)
    console().print(f"[green]revoked[/] {key_id} of {name}")
