"""A stack's client environment: the variables that point MLflow, DVC, docker and AWS
clients at it (`stack env`, the façade's `env()`, generated repos through `mlrig.api`)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Iterator, Mapping

from mlrig.contract import StackOutputs
from mlrig.core.shared import secrets


def client_env(outputs: StackOutputs) -> dict[str, str]:
    """Environment that configures MLflow, DVC, docker and AWS clients for a stack, logged in
    as its admin (MLflow) and its registry account.

    This resolves secrets: only `stack env` and code that talks to the services call it.
    """
    env = settings_env(outputs)
    if outputs.mlflow.auth:
        env["MLFLOW_TRACKING_USERNAME"] = outputs.mlflow.auth.username
        env["MLFLOW_TRACKING_PASSWORD"] = secrets.resolve(outputs.mlflow.auth.password)
    if outputs.registry.auth:
        env["MLRIG_REGISTRY_USERNAME"] = outputs.registry.auth.username
        env["MLRIG_REGISTRY_PASSWORD"] = secrets.resolve(outputs.registry.auth.password)
    return env


def settings_env(outputs: StackOutputs) -> dict[str, str]:
    """The same environment without any of the stack's secrets: where its services are and
    how DVC and the AWS SDK reach its remote. An identity adds its own MLflow login."""
    env: dict[str, str] = {
        "MLRIG_STACK": outputs.name,
        "MLFLOW_TRACKING_URI": outputs.mlflow_tracking_uri,
        "MLRIG_REGISTRY_URL": outputs.registry_url,
        "MLRIG_DVC_REMOTE_URL": outputs.dvc_remote_url,
    }
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


FORMATS = ("sh", "dotenv", "json")


def check_format(fmt: str) -> str:
    from mlrig.errors import UsageError

    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    return fmt


def render(env: dict[str, str], fmt: str) -> str:
    """The environment as `export` lines (sh: eval or source them), KEY=value lines (dotenv:
    docker's --env-file, GitHub's $GITHUB_ENV and python-dotenv read the value literally)
    or a JSON object."""
    from mlrig.errors import UsageError

    if check_format(fmt) == "sh":
        return export_lines(env)
    if fmt == "json":
        return json.dumps(env, indent=2) + "\n"
    broken = sorted(k for k, v in env.items() if "\n" in v or "\r" in v)
    if broken:  # a literal value ends at the line break: the rest would be a line of its own
        raise UsageError(
            f"{', '.join(broken)} holds a line break, which a dotenv line cannot carry",
            hint="use --format sh or --json",
        )
    return "".join(f"{k}={v}\n" for k, v in env.items())


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
