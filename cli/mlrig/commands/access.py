"""`mlrig access …`: who may read and write what on a stack's MLflow (as the stack's admin)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlrig.commands.options import JsonOpt, StackOpt, YesOpt
from mlrig.ui import console, err_console

if TYPE_CHECKING:
    from mlrig.contract import StackOutputs
    from mlrig.core.access.plan import Step

app = typer.Typer(
    help="Users, machine identities and grants on a stack's MLflow.", no_args_is_help=True
)
RoleOpt = Annotated[
    str,
    typer.Option(
        "--role",
        help="reader: READ on every experiment and model; editor: EDIT on every one; "
        "admin: MLflow admin; none: only what the access file grants.",
    ),
]
TakeOverOpt = Annotated[
    bool,
    typer.Option(
        "--take-over",
        help="If someone else manages the project's experiment or model, revoke their MANAGE "
        "and EDIT there (otherwise refused).",
    ),
]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from stdin instead.")
]


def _outputs(stack: str | None) -> StackOutputs:
    from mlrig import contract
    from mlrig.core.stack import stacks

    return contract.load(stacks.resolve_name(stack))


def _stdin_password() -> str:
    from mlrig.errors import UsageError

    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise UsageError("no password on stdin", hint="pipe one in, e.g. `< file`")
    return value


def _hand_over(user: str, password: str) -> None:
    console().print(
        f"password for {user} (shown once, store it now): {password}", soft_wrap=True, markup=False
    )


def _cache_note() -> None:
    from mlrig.core.access.accounts import CACHE_WINDOW

    err_console().print(f"[dim]note: {CACHE_WINDOW}[/]")


@app.command("apply")
def apply_cmd(
    file: Annotated[Path, typer.Argument(help="The access file (YAML).")],
    stack: StackOpt = None,
    yes: YesOpt = False,
) -> None:
    """Make the stack's users, roles and grants what FILE says (asks before removing users)."""
    from mlrig.core.access import accounts as access
    from mlrig.core.access import file as access_file

    outputs = _outputs(stack)
    spec = access_file.load(file, admin=access.admin_name(outputs))

    def confirm(users: list[str]) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        return typer.confirm(f"remove {len(users)} user(s) not in {file}: {', '.join(users)}?")

    def shown(step: Step) -> None:
        console().print(step.describe(), soft_wrap=True, markup=False)  # names from the server

    steps = access.apply(
        outputs, spec, confirm_removal=confirm, on_password=_hand_over, on_step=shown
    )
    if not steps:
        console().print(f"no changes: stack '{outputs.name}' already matches {file}")
        return
    console().print(f"[green]applied {len(steps)} change(s)[/] to stack '{outputs.name}'")
    if any(s.action in ("delete-user", "revoke", "update", "set-role") for s in steps):
        _cache_note()


@app.command("show")
def show_cmd(stack: StackOpt = None, json_out: JsonOpt = False) -> None:
    """Users, roles, machine identities and grants on the stack."""
    from dataclasses import asdict

    from rich.markup import escape
    from rich.table import Table

    from mlrig.core.access import view as access_view

    outputs = _outputs(stack)
    rows = access_view.show(outputs)
    if json_out:
        import json

        typer.echo(json.dumps({"stack": outputs.name, "users": [asdict(r) for r in rows]}))
        return
    table = Table(title=f"access on stack '{outputs.name}'", title_justify="left")
    for col in ("user", "kind", "role", "grants"):
        table.add_column(col, overflow="fold")
    for row in rows:
        grants = [
            f"{g.kind.replace('registered_model', 'model')} {g.resource}: {g.permission}"
            + ("" if g.via == "direct" else f" (via {g.via})")
            for g in row.grants
        ]
        role = f"{row.role} + create" if row.create else row.role
        # user, experiment and model names come from the server: shown, never read as markup
        table.add_row(escape(row.name), row.kind, role, escape("\n".join(grants)) or "-")
    console().print(table)


@app.command("add-user")
def add_user_cmd(
    name: Annotated[str, typer.Argument(help="The user name.")],
    role: RoleOpt = "reader",
    password_stdin: PasswordStdinOpt = False,
    stack: StackOpt = None,
) -> None:
    """Create a person's account; its password is printed once (or read from stdin)."""
    from mlrig.core.access import accounts as access

    outputs = _outputs(stack)
    given = _stdin_password() if password_stdin else None
    password = access.add_user(outputs, name, role, given)
    console().print(f"[green]created user {name}[/] (role {role}) on stack '{outputs.name}'")
    if given is None:
        _hand_over(name, password)


@app.command("add-machine")
def add_machine_cmd(
    project: Annotated[str, typer.Argument(help="The repository's project name.")],
    github_repo: Annotated[
        str,
        typer.Option(
            "--github-repo",
            metavar="OWNER/NAME",
            help="Also accept this GitHub repository's Actions OIDC tokens as the identity.",
        ),
    ] = "",
    take_over: TakeOverOpt = False,
    stack: StackOpt = None,
) -> None:
    """Create or repair repo-PROJECT, a repository's machine identity.

    It gets EDIT on the repository's experiment and model only; its password is kept with the
    stack's secrets. An experiment or model of that name someone else manages is refused
    unless --take-over."""
    from mlrig.core.access import accounts as access
    from mlrig.core.stack import oidc_rules

    outputs = _outputs(stack)
    result = access.add_machine(outputs, project, github_repo, take_over=take_over)
    for grant in result.revoked:
        console().print(f"- revoked {grant} (taken over)", soft_wrap=True, markup=False)
    state = "created" if result.created else "repaired" if result.password_set else "up to date"
    console().print(
        f"[green]machine identity {result.user} {state}[/]: EDIT on experiment and registered "
        f"model {result.project}; password kept in {result.where}",
        soft_wrap=True,
    )
    if result.oidc_repository:
        when = "now" if oidc_rules.is_local(outputs.name) else "after the next `mlrig stack up`"
        console().print(
            f"GitHub Actions OIDC tokens of {result.oidc_repository} act as {result.user} {when}",
            soft_wrap=True,
        )


@app.command("rotate")
def rotate_cmd(
    name: Annotated[str, typer.Argument(help="A user or machine identity (repo-…).")],
    password_stdin: PasswordStdinOpt = False,
    stack: StackOpt = None,
) -> None:
    """Give NAME a new password: printed once for a person, stored for a machine identity."""
    from mlrig.core.access import accounts as access

    outputs = _outputs(stack)
    result = access.rotate(outputs, name, _stdin_password() if password_stdin else None)
    if result.password is not None and not password_stdin:
        _hand_over(name, result.password)
    elif result.stored_at:
        console().print(f"new password for {name} stored in {result.stored_at}", soft_wrap=True)
    else:
        console().print(f"password for {name} changed")
    _cache_note()


@app.command("log")
def log_cmd(
    since: Annotated[
        str | None, typer.Option(help="Only entries newer than this: 1h, 30m, 2d or ISO time.")
    ] = None,
    stack: StackOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Who changed what: the MLflow server's audit lines and mlrig's endpoint changes.

    The server's lines come from its log (local stack) or its task's CloudWatch log group
    (AWS stack: the newest 10,000 since --since); the endpoint changes from this machine's
    audit log of the stack."""
    from mlrig.core.access import view as access_view

    def note(message: str) -> None:
        err_console().print(message, markup=False, highlight=False, soft_wrap=True)

    entries = access_view.log(_outputs(stack), since, progress=note)
    if json_out:
        for e in entries:
            typer.echo(e.model_dump_json())
        return
    for e in entries:
        what = " ".join(f"{k}={v}" for k, v in e.object.items())
        console().print(
            f"{e.ts.isoformat(timespec='seconds')} {e.user or '-'} ({e.auth}) {e.method} "
            f"{e.path} {what}"
            + ("" if e.auth == "local" else f" -> {e.status if e.status is not None else '?'}"),
            soft_wrap=True,
            markup=False,
        )
    if not entries:
        err_console().print("no audit entries" + (f" since {since}" if since else ""))
