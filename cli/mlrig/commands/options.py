"""Every option more than one command takes, declared once, so a flag means one thing.

`-s` is always the stack, `-n` only the project name (`init`), `-y` always "do not ask".
"""

from __future__ import annotations

from typing import Annotated

import typer

StackOpt = Annotated[
    str | None,
    typer.Option(
        "--stack",
        "-s",
        help="Stack to use (default: $MLRIG_STACK, the repo's stack, or the only stack).",
        show_default=False,
    ),
]
# `--name` named the stack of `stack …` commands before `--stack` did; scripts still pass it.
StackNameAliasOpt = Annotated[
    str | None, typer.Option("--name", hidden=True, help="Old spelling of --stack.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ProjectNameOpt = Annotated[
    str | None,
    typer.Option(
        "--name",
        "-n",
        help="Project slug: Python package, MLflow model and ECR repository name. "
        "Default: derived from PATH.",
    ),
]

# AWS stack settings, shared by `stack up --aws`, `stack preview` and `stack plan`
ProfileOpt = Annotated[str, typer.Option(help="AWS size profile: small or production.")]
RegionOpt = Annotated[str | None, typer.Option(help="AWS region (default: AWS_REGION).")]
GithubRepoOpt = Annotated[
    str | None,
    typer.Option(help="owner/repo whose GitHub Actions may push images and data (AWS)."),
]
ServerSizeOpt = Annotated[
    str | None,
    typer.Option(
        help="The tracking server's task as CPU:MIB, a Fargate size (1024 CPU units a vCPU), "
        "instead of the profile's; 2048:4096 holds 25 users' load (see the README).",
    ),
]
DomainOpt = Annotated[
    str | None,
    typer.Option(help="Custom domain for the tracking server (AWS; its Route 53 zone must exist)."),
]
BackendUrlOpt = Annotated[
    str | None,
    typer.Option(help="Pulumi backend URL (default: a file backend under mlrig's home)."),
]


def stack_flag(stack: str | None, name: str | None) -> str | None:
    """The stack the user named with --stack or its old spelling --name (not both)."""
    if stack and name and stack != name:
        from mlrig.errors import UsageError

        raise UsageError(
            f"--stack {stack} and --name {name} name different stacks", hint="pass only --stack"
        )
    return stack or name
