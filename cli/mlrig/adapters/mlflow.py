"""MLflow's client behind one door: lazy import, credentials from a stack, errors mapped.

Core code asks this module for models, runs and versions; it never imports `mlflow`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrig.errors import MlrigError, RemoteError, ServiceError, UsageError

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class ModelVersion:
    """One version of a registered model and the run that produced it."""

    name: str
    version: str
    run_id: str | None


def tracking_configured() -> bool:
    """True when the environment already names a tracking server (the user exported it)."""
    return bool(os.environ.get(TRACKING_URI_ENV))


def client_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The part of a stack's client environment MLflow's client reads (its MLFLOW_ keys)."""
    return {k: v for k, v in env.items() if k.startswith("MLFLOW_")}


def error(exc: Exception, uri: str) -> MlrigError:
    """An MLflow client failure while reading model `uri`, as the error the user can act on."""
    code = getattr(exc, "error_code", "")
    text = str(getattr(exc, "message", exc)).splitlines()[0][:200]
    if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in text.lower():
        return UsageError(
            f"model {uri} does not exist ({text})",
            hint="check the name and version in the MLflow UI",
        )
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED") or "401" in text:
        return ServiceError(
            f"MLflow rejected the credentials while reading {uri}",
            hint="check MLFLOW_TRACKING_USERNAME/PASSWORD or --stack",
        )
    if "max retries" in text.lower() or "connection" in text.lower():
        return ServiceError(
            f"the MLflow tracking server is unreachable ({text})",
            hint="check that the stack is up: `mlrig stack status`",
        )
    return RemoteError(f"reading model {uri} failed: {text}")


def _version(mv: Any) -> ModelVersion:
    return ModelVersion(str(mv.name), str(mv.version), mv.run_id or None)


def model_versions(name: str, *, uri: str) -> list[ModelVersion]:
    """Every version of registered model `name`; `uri` is what the user asked for (errors)."""
    from mlflow import MlflowClient

    try:
        return [_version(mv) for mv in MlflowClient().search_model_versions(f"name='{name}'")]
    except Exception as exc:
        raise error(exc, uri) from exc


def model_version(name: str, version: str, *, uri: str) -> ModelVersion:
    from mlflow import MlflowClient

    try:
        return _version(MlflowClient().get_model_version(name, version))
    except Exception as exc:
        raise error(exc, uri) from exc


def model_version_by_alias(name: str, alias: str, *, uri: str) -> ModelVersion:
    from mlflow import MlflowClient

    try:
        return _version(MlflowClient().get_model_version_by_alias(name, alias))
    except Exception as exc:
        raise error(exc, uri) from exc


def run_tag(run_id: str, key: str) -> str | None:
    """A tag of a run, or None when the run, the tag or the server is not there."""
    from mlflow import MlflowClient

    try:
        value = MlflowClient().get_run(run_id).data.tags.get(key)
    except Exception:  # callers use tags as best-effort provenance; never fatal
        return None
    return str(value) if value is not None else None


def download_model(uri: str, dst: Path) -> None:
    """Download the artifacts behind a model URI into dst."""
    import mlflow.artifacts

    # mlrig reports its own progress; MLflow's bar would garble the CLI's status line
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
    except Exception as exc:
        raise error(exc, uri) from exc
