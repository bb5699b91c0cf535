"""Rendering: what the template is told (the project, and from StackOutputs only where
things are, never a secret) and the copier run that writes the files."""

from __future__ import annotations

from pathlib import Path

from mlrig.adapters import copier
from mlrig.contract import StackOutputs
from mlrig.core.identities import machine_user


def stack_answers(outputs: StackOutputs) -> dict[str, str]:
    """What the template needs from StackOutputs (never a secret, and not where the admin's
    lives: a repository acts as its own machine identity, and its CI by OIDC)."""
    return {
        "stack": outputs.name,
        "stack_kind": outputs.kind,
        "aws_region": outputs.region or "",
        "mlflow_tracking_uri": outputs.mlflow.tracking_uri,
        "mlflow_username": "",
        # contract B: the audience a CI job's GitHub OIDC token is minted for
        "mlflow_oidc_audience": f"mlrig:{outputs.name}",
        "registry_url": outputs.registry.url,
        "ci_role_arn": outputs.ci_role_arn or "",
    }


def render(
    template: Path,
    ref: str,
    dest: Path,
    *,
    project: str,
    outputs: StackOutputs,
    github_repo: str = "",
    description: str | None = None,
) -> None:
    """Render template version `ref` into dest with every answer given (no prompts)."""
    answers = {"project_name": project, "github_repo": github_repo, **stack_answers(outputs)}
    if outputs.mlflow.auth:
        answers["mlflow_username"] = machine_user(project)  # who the repository logs in as
    if description:  # else the template's own default
        answers["description"] = description
    copier.render(template, ref, dest, answers)
