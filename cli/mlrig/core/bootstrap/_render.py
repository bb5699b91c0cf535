"""Rendering: what the template is told (the project, and from StackOutputs only where
things are, never a secret) and the copier run that writes the files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mlrig.adapters import copier
from mlrig.contract import StackOutputs
from mlrig.core.bootstrap._pin import Pin
from mlrig.core.shared.names import check_template_answers, machine_user
from mlrig.errors import ConfigError, UsageError
from mlrig.version import __version__


def stack_answers(outputs: StackOutputs) -> dict[str, str]:
    """What the template needs from StackOutputs (never a secret, and not where the admin's
    lives: a repository acts as its own machine identity, and its CI by OIDC)."""
    return {
        "stack": outputs.name,
        "stack_kind": outputs.kind,
        "aws_region": outputs.region or "",
        "mlflow_tracking_uri": outputs.mlflow.tracking_uri,
        # contract B: the audience a CI job's GitHub OIDC token is minted for
        "mlflow_oidc_audience": f"mlrig:{outputs.name}",
        "registry_url": outputs.registry.url,
        "ci_role_arn": outputs.ci_role_arn or "",
    }


def identity_answer(outputs: StackOutputs, project: str) -> str:
    """Who the repository logs in as on the stack's MLflow: its machine identity, or nobody
    when that MLflow has no login."""
    return machine_user(project) if outputs.mlflow.auth else ""


def checked_stack_answers(outputs: StackOutputs, answers: Mapping[str, str]) -> dict[str, str]:
    """answers with the stack's wiring over them, every value checked: a StackOutputs file
    is written by an earlier process, and each value lands in the CI workflow's YAML and shell."""
    try:
        return check_template_answers({**answers, **stack_answers(outputs)})
    except UsageError as exc:
        raise ConfigError(
            f"stack '{outputs.name}' cannot wire a repository: {exc.message}",
            hint=f"run `mlrig stack up --stack {outputs.name}` to rewrite its outputs",
        ) from None


def render(
    template: Path,
    ref: str,
    dest: Path,
    *,
    project: str,
    outputs: StackOutputs,
    github_repo: str = "",
    description: str | None = None,
    temporal: bool = False,
    snapshots: str | None = None,
    pin: Pin | None = None,
) -> None:
    """Render template version `ref` into dest with every answer given (no prompts); the
    CI workflow installs exactly pin.version (default: this mlrig, no hashes), hash-checked
    when pin has hashes.

    snapshots is "table" or "partitioned"; None means partitioned for a temporal repository
    (its labels keep arriving) and table otherwise."""
    pin = pin or Pin(__version__)
    answers = {
        "project_name": project,
        "github_repo": github_repo,
        "mlflow_username": identity_answer(outputs, project),
        "temporal": "true" if temporal else "false",
        "snapshots": snapshots or ("partitioned" if temporal else "table"),
        "mlrig_version": pin.version,  # the CI workflow installs exactly this mlrig
        "mlrig_sha256": pin.answer,
    }
    if description:  # else the template's own default
        answers["description"] = description
    copier.render(template, ref, dest, checked_stack_answers(outputs, answers))
