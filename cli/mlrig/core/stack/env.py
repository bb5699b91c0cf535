"""A stack's client environment: the variables that point MLflow, DVC, docker and AWS
clients at it (`stack env`, the façade's `env()`, generated repos through `mlrig.api`)."""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Iterator, Mapping

from mlrig.contract import StackOutputs
from mlrig.core.shared import secrets


def client_env(outputs: StackOutputs) -> dict[str, str]:
    """Environment that configures MLflow, DVC, docker and AWS clients for a stack.

    This resolves secrets: only `stack env` and code that talks to the services call it.
    """
    env: dict[str, str] = {
        "MLRIG_STACK": outputs.name,
        "MLFLOW_TRACKING_URI": outputs.mlflow_tracking_uri,
        "MLRIG_REGISTRY_URL": outputs.registry_url,
        "MLRIG_DVC_REMOTE_URL": outputs.dvc_remote_url,
    }
    if outputs.mlflow.auth:
        env["MLFLOW_TRACKING_USERNAME"] = outputs.mlflow.auth.username
        env["MLFLOW_TRACKING_PASSWORD"] = secrets.resolve(outputs.mlflow.auth.password)
    if outputs.registry.auth:
        env["MLRIG_REGISTRY_USERNAME"] = outputs.registry.auth.username
        env["MLRIG_REGISTRY_PASSWORD"] = secrets.resolve(outputs.registry.auth.password)
    if outputs.kind == "aws":
        # the small profile's HTTP API caps requests at 10 MB: large artifacts go to S3
        # directly through presigned multipart uploads instead of through the proxy
        env["MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"] = "true"
    if outputs.region:
        env["AWS_REGION"] = outputs.region
    if outputs.dvc_remote.endpoint_url:
        env["AWS_ENDPOINT_URL_S3"] = outputs.dvc_remote.endpoint_url
    if outputs.dvc_remote.profile:
        env["AWS_PROFILE"] = outputs.dvc_remote.profile
    return env


def export_lines(env: dict[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


@contextlib.contextmanager
def temporary_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for a block (MLflow's client reads credentials only from
    there) and restore the previous values, set or unset, afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
