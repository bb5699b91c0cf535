"""MLflow's client behind one door: lazy import, credentials from a stack, errors mapped.

Core code asks this module for models, runs and versions; it never imports `mlflow`.
Registry reads and model downloads go over the tracking server's REST API and artifact proxy
(`mlflow_rest`) when it is an HTTP server, as every mlrig stack's is: `import mlflow` alone
takes seconds, most of a whole `mlrig image build`. MLflow's client stays the fallback for
what that path cannot read (see `download_model`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mlrig.adapters.mlflow_rest import PROXY_SCHEME, MlflowRest
from mlrig.errors import CredentialsError, MlrigError, RemoteError, ServiceError, UsageError

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
T = TypeVar("T")
# what MLflow's client writes next to a registered version it downloads; written here too,
# so a model's files are the same whichever path fetched them
REGISTERED_MODEL_META = "registered_model_meta"


@dataclass(frozen=True)
class ModelVersion:
    """One version of a registered model and the run that produced it."""

    name: str
    version: str
    run_id: str | None
    tags: Mapping[str, str] = field(default_factory=dict)


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
    tags = {str(k): str(v) for k, v in (getattr(mv, "tags", None) or {}).items()}
    return ModelVersion(str(mv.name), str(mv.version), mv.run_id or None, tags)


def _rest() -> MlflowRest | None:
    """The tracking server's REST API, or None when MLFLOW_TRACKING_URI is not an HTTP server
    (unset, a local folder or a database: only MLflow's client reads those)."""
    if not os.environ.get(TRACKING_URI_ENV, "").startswith(("http://", "https://")):
        return None
    return MlflowRest.from_env(os.environ)


def _rest_error(exc: MlrigError, uri: str, server: str) -> MlrigError:
    """A REST failure while reading model `uri`, worded as MLflow client failures are."""
    if isinstance(exc, UsageError) or (
        isinstance(exc, RemoteError) and "not found" in exc.message.lower()
    ):  # 404, or the 400 MLflow answers for an alias that does not exist
        return UsageError(
            f"model {uri} does not exist on MLflow at {server}",
            hint="check the name and version in the MLflow UI",
        )
    if isinstance(exc, CredentialsError):
        return CredentialsError(
            f"MLflow at {server} rejected the credentials while reading {uri}",
            hint="check MLFLOW_TRACKING_USERNAME/PASSWORD or --stack",
        )
    return exc  # unreachable server (ServiceError) and other answers: already one line


def _read(rest: MlflowRest, uri: str, call: Callable[[], T]) -> T:
    """One REST read for model `uri`, its failure worded by `_rest_error`."""
    try:
        return call()
    except MlrigError as exc:
        raise _rest_error(exc, uri, rest.base) from exc


def model_versions(name: str, *, uri: str) -> list[ModelVersion]:
    """Every version of registered model `name`; `uri` is what the user asked for (errors)."""
    if rest := _rest():
        found = _read(rest, uri, lambda: rest.search_model_versions(f"name='{name}'"))
        return [ModelVersion(v.name, v.version, v.run_id, dict(v.tags)) for v in found]
    from mlflow import MlflowClient

    try:
        return [_version(mv) for mv in MlflowClient().search_model_versions(f"name='{name}'")]
    except Exception as exc:
        raise error(exc, uri) from exc


def model_version(name: str, version: str, *, uri: str) -> ModelVersion:
    if rest := _rest():
        mv = _read(rest, uri, lambda: rest.model_version(name, version))
        return ModelVersion(mv.name, mv.version, mv.run_id)
    from mlflow import MlflowClient

    try:
        return _version(MlflowClient().get_model_version(name, version))
    except Exception as exc:
        raise error(exc, uri) from exc


def model_version_by_alias(name: str, alias: str, *, uri: str) -> ModelVersion:
    if rest := _rest():
        mv = _read(rest, uri, lambda: rest.model_version_by_alias(name, alias))
        return ModelVersion(mv.name, mv.version, mv.run_id)
    from mlflow import MlflowClient

    try:
        return _version(MlflowClient().get_model_version_by_alias(name, alias))
    except Exception as exc:
        raise error(exc, uri) from exc


def logged_model_run(model_id: str, *, uri: str) -> str | None:
    """The source run of an MLflow 3 logged model (models:/m-<id>); None when it has none."""
    if rest := _rest():
        return _read(rest, uri, lambda: rest.logged_model_run(model_id))
    from mlflow import MlflowClient

    try:
        run = MlflowClient().get_logged_model(model_id).source_run_id
    except Exception as exc:
        raise error(exc, uri) from exc
    return str(run) if run else None


def run_tag(run_id: str, key: str) -> str | None:
    """A tag of a run, or None when the run, the tag or the server is not there."""
    from mlflow import MlflowClient

    try:
        value = MlflowClient().get_run(run_id).data.tags.get(key)
    except Exception:  # callers use tags as best-effort provenance; never fatal
        return None
    return str(value) if value is not None else None


def download_model_version(name: str, version: str, dst: Path, *, uri: str) -> None:
    """The files of one registered model version into dst, the way a whole `mlrig image
    build` needs them: the version's download URI from the registry, then every file listed
    and streamed through the server's artifact proxy (`mlflow server --serve-artifacts`,
    which mlrig's local stack and its AWS container both run), with no `import mlflow`.

    MLflow's client (`download_model`) stays the fallback only for what the proxy cannot
    serve: a tracking URI that is not an HTTP server, and a version whose files are stored
    elsewhere (an s3://, gs://, file: ... URI when a server runs without the proxy, or an
    mlflow-artifacts URI naming another host): those only MLflow's artifact repositories
    read, with credentials of their own (AWS's, a cloud SDK's)."""
    rest = _rest()
    resolved = f"models:/{name}/{version}"
    if rest is None:
        download_model(resolved, dst)
        return
    try:
        source = rest.download_uri(name, version)
        if not source.startswith(PROXY_SCHEME) or source.startswith(f"{PROXY_SCHEME}//"):
            download_model(resolved, dst)
            return
        dst.mkdir(parents=True, exist_ok=True)
        files = rest.download_artifacts(source, dst)
    except MlrigError as exc:
        raise _rest_error(exc, uri, rest.base) from exc
    if any(f.name == "MLmodel" and f.parent == dst for f in files):
        import yaml

        meta = {"model_name": name, "model_version": version}
        (dst / REGISTERED_MODEL_META).write_text(yaml.safe_dump(meta, default_flow_style=False))


def download_model(uri: str, dst: Path) -> None:
    """Download the artifacts behind any model URI into dst with MLflow's client: runs:/
    URIs (MLflow 3 keeps a run's model as a logged model, found by searching the run's
    experiment, which its RunsArtifactRepository does) and the fallbacks of
    `download_model_version`. Imports `mlflow` (seconds)."""
    import mlflow.artifacts

    # mlrig reports its own progress; MLflow's bar would garble the CLI's status line
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
    except Exception as exc:
        raise error(exc, uri) from exc


def run_metric(run_id: str, key: str) -> float | None:
    """The latest value of a run's metric, or None when the run did not log it."""
    from mlflow import MlflowClient

    try:
        value = MlflowClient().get_run(run_id).data.metrics.get(key)
    except Exception as exc:
        raise error(exc, f"runs:/{run_id}") from exc
    return float(value) if value is not None else None


# --- runs written and read back through the client (the rehearsal's checks) ---
# These use MLflow's client with credentials from the environment (the caller sets them).


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    step: int = 0
    timestamp: int = 0  # ms since the epoch; 0 keeps a load test's payload the same every run


@dataclass(frozen=True)
class RunRecord:
    """What a run holds, read back from the server."""

    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    artifacts: list[str]  # top-level artifact paths


@dataclass(frozen=True)
class RunBatch:
    """One run to log in a single request: its params and metric points."""

    params: dict[str, str]
    metrics: list[MetricPoint]


def _client_error(exc: Exception) -> RemoteError:
    """An MLflow client or HTTP failure, as its first line (MLflow's are many lines long)."""
    text = str(getattr(exc, "message", exc)).strip().splitlines()
    return RemoteError(text[0] if text else type(exc).__name__)


def log_run(
    url: str,
    *,
    experiment: str,
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    artifact: Path,
) -> str:
    """A new experiment with one finished run holding params, metrics and one artifact file;
    the run's ID."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri=url)
        run_id = str(client.create_run(client.create_experiment(experiment)).info.run_id)
        for key, value in params.items():
            client.log_param(run_id, key, value)
        for key, number in metrics.items():
            client.log_metric(run_id, key, number)
        client.log_artifact(run_id, str(artifact))
        client.set_terminated(run_id)
    except Exception as exc:
        raise _client_error(exc) from exc
    return run_id


def log_batches(url: str, *, experiment: str, runs: Iterable[RunBatch]) -> None:
    """A new experiment with one finished run per batch, each logged in one request."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    try:
        client = MlflowClient(tracking_uri=url)
        exp_id = client.create_experiment(experiment)
        for batch in runs:
            run_id = client.create_run(exp_id).info.run_id
            client.log_batch(
                run_id,
                params=[Param(k, v) for k, v in batch.params.items()],
                metrics=[Metric(m.key, m.value, m.timestamp, m.step) for m in batch.metrics],
            )
            client.set_terminated(run_id)
    except Exception as exc:
        raise _client_error(exc) from exc


def read_run(url: str, run_id: str) -> RunRecord:
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri=url)
        run = client.get_run(run_id)
        artifacts = [str(a.path) for a in client.list_artifacts(run_id)]
    except Exception as exc:
        raise _client_error(exc) from exc
    return RunRecord(
        run_id,
        {str(k): str(v) for k, v in run.data.params.items()},
        {str(k): float(v) for k, v in run.data.metrics.items()},
        artifacts,
    )


def set_auth_password(auth_db: Path, username: str, password: str) -> bool:
    """Set `username`'s password in a basic-auth store (SQLite file) with MLflow's own store
    code, so the hash is the one the server checks. False when the user does not exist yet
    (the server creates the admin from its environment at start)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    try:
        store.init_db(f"sqlite:///{auth_db.resolve()}")
        try:
            store.update_user(username, password=password)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise ServiceError(
                f"could not set the password of '{username}' in {auth_db}: {exc.message}",
                hint="check that the file is MLflow's auth database and is writable",
            ) from exc
    except ServiceError:
        raise
    except Exception as exc:  # noqa: BLE001 - sqlalchemy/alembic errors: one clear line
        raise ServiceError(
            f"could not open MLflow's auth database {auth_db} ({type(exc).__name__})",
            hint="check that the file is MLflow's auth database and is writable",
        ) from exc
    finally:
        engine = getattr(store, "engine", None)
        if engine is not None:
            engine.dispose()
    return True


def tag_run(run_id: str | None, tags: Mapping[str, str], params: Mapping[str, str]) -> str:
    """Set tags, and the params the run has not logged yet, on run_id (default: the active
    run of this process, as `mlflow.start_run()` opened it); return the run's ID. A param
    the run already has keeps its value (MLflow refuses to change one)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag

    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise UsageError(
                "no active MLflow run to record provenance on",
                hint="call it inside `with mlflow.start_run():`, or pass run_id=",
            )
        run_id = str(active.info.run_id)
    try:
        client = MlflowClient()
        have = client.get_run(run_id).data.params
        new = [Param(k, v) for k, v in params.items() if k not in have]
        client.log_batch(run_id, params=new, tags=[RunTag(k, v) for k, v in tags.items()])
    except Exception as exc:
        raise _client_error(exc) from exc
    return run_id
