"""Rendering: what the template is told (the project, and from StackOutputs only where
things are, never a secret) and the copier run that writes the files."""

from __future__ import annotations

from pathlib import Path

from mlrig.adapters import copier
from mlrig.contract import StackOutputs


def stack_answers(outputs: StackOutputs) -> dict[str, str]:
    """What the template needs from StackOutputs (never a secret, only where it lives)."""
    answers = {
        "stack": outputs.name,
        "stack_kind": outputs.kind,
        "aws_region": outputs.region or "",
        "mlflow_tracking_uri": outputs.mlflow.tracking_uri,
        "mlflow_username": "",
        "mlflow_password_secret_id": "",
        "mlflow_password_secret_key": "",
        "registry_url": outputs.registry.url,
        "ci_role_arn": outputs.ci_role_arn or "",
    }
    auth = outputs.mlflow.auth
    if auth:
        answers["mlflow_username"] = auth.username
        if auth.password.source == "aws-secretsmanager":
            answers["mlflow_password_secret_id"] = auth.password.ref
            answers["mlflow_password_secret_key"] = auth.password.key or ""
    return answers


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
    if description:  # else the template's own default
        answers["description"] = description
    copier.render(template, ref, dest, answers)
