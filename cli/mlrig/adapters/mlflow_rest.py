"""MLflow's REST API through `requests`: the registry reads and writes provenance and image
builds need, and model downloads through the server's artifact proxy, fast (no
`import mlflow`, which costs seconds), with basic or bearer auth from a stack's client settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mlrig.errors import CredentialsError, RemoteError, ServiceError, UsageError

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"  # `mlflow server --serve-artifacts`
PROXY_SCHEME = "mlflow-artifacts:"


@dataclass(frozen=True)
class Run:
    id: str
    experiment_id: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifact_uri: str | None = None  # where the run's artifacts are (mlflow-artifacts:/...)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


def _pairs(items: Any) -> dict[str, str]:
    return {str(i["key"]): str(i.get("value", "")) for i in items or () if "key" in i}


def _version(raw: Mapping[str, Any]) -> ModelVersion:
    return ModelVersion(
        name=str(raw["name"]),
        version=str(raw["version"]),
        run_id=str(raw["run_id"]) if raw.get("run_id") else None,
        tags=_pairs(raw.get("tags")),
        aliases=tuple(str(a) for a in raw.get("aliases") or ()),
    )


class MlflowRest:
    """One tracking server; every failure is an mlrig error naming what was asked for."""

    def __init__(
        self,
        tracking_uri: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        import requests

        self.base = tracking_uri.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if username:
            self.session.auth = (username, password or "")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MlflowRest:
        """From MLFLOW_TRACKING_URI/USERNAME/PASSWORD (a stack's client environment)."""
        uri = env.get("MLFLOW_TRACKING_URI")
        if not uri or not uri.startswith(("http://", "https://")):
            raise UsageError(
                f"MLflow tracking URI {uri or '(unset)'} is not an HTTP server",
                hint='pass --stack, or export the stack\'s settings: eval "$(mlrig stack env)"',
            )
        rest = cls(uri, env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD"))
        token = env.get("MLFLOW_TRACKING_TOKEN")
        if token and not env.get("MLFLOW_TRACKING_USERNAME"):  # what MLflow's client sends
            rest.session.headers["Authorization"] = f"Bearer {token}"
        return rest

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> Any:
        """The server's answer (a requests.Response); unreachable or 401/403 raise."""
        import requests

        try:
            resp = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ServiceError(
                f"the MLflow tracking server at {self.base} is unreachable ({type(exc).__name__})",
                hint="check that the stack is up: `mlrig stack status`",
            ) from exc
        if resp.status_code in (401, 403):
            resp.close()
            raise CredentialsError(
                f"MLflow at {self.base} rejected the credentials while reading {what}",
                hint="check MLFLOW_TRACKING_USERNAME/PASSWORD or --stack",
            )
        return resp

    def _call(
        self, method: str, path: str, what: str, *, api: str = API, **kwargs: Any
    ) -> dict[str, Any]:
        resp = self._request(method, f"{self.base}{api}/{path}".rstrip("/"), what, **kwargs)
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code == 404 or body.get("error_code") == "RESOURCE_DOES_NOT_EXIST":
            raise UsageError(f"{what} does not exist on MLflow at {self.base}")
        if resp.status_code != 200:
            message = str(body.get("message") or resp.text)[:200].splitlines()
            raise RemoteError(
                f"MLflow answered {resp.status_code} for {what}: {message[0] if message else ''}"
            )
        return dict(body)

    def run(self, run_id: str) -> Run:
        raw = self._call("GET", "runs/get", f"run {run_id}", params={"run_id": run_id})["run"]
        data, info = raw.get("data") or {}, raw.get("info") or {}
        metrics = {str(m["key"]): float(m["value"]) for m in data.get("metrics") or ()}
        return Run(
            id=str(info.get("run_id") or run_id),
            experiment_id=str(info["experiment_id"]) if info.get("experiment_id") else None,
            params=_pairs(data.get("params")),
            metrics=metrics,
            tags=_pairs(data.get("tags")),
            artifact_uri=str(info["artifact_uri"]) if info.get("artifact_uri") else None,
        )

    def experiment_name(self, experiment_id: str) -> str | None:
        body = self._call(
            "GET",
            "experiments/get",
            f"experiment {experiment_id}",
            params={"experiment_id": experiment_id},
        )
        name = (body.get("experiment") or {}).get("name")
        return str(name) if name else None

    def model_version(self, name: str, version: str) -> ModelVersion:
        body = self._call(
            "GET",
            "model-versions/get",
            f"model version {version} of {name}",
            params={"name": name, "version": version},
        )
        return _version(body["model_version"])

    def model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        body = self._call(
            "GET",
            "registered-models/alias",
            f"alias @{alias} of model {name}",
            params={"name": name, "alias": alias},
        )
        return _version(body["model_version"])

    def logged_model_run(self, model_id: str) -> str | None:
        """The run an MLflow 3 logged model (`models:/m-…`) was logged from (its
        source_run_id), None when it was logged outside a run. model_id: checked by the caller
        (record.logged_model_id) before it reaches this URL."""
        body = self._call("GET", f"logged-models/{model_id}", f"logged model {model_id}")
        info = (body.get("model") or {}).get("info") or {}
        run = info.get("source_run_id")
        return str(run) if run else None

    def search_model_versions(self, filter_string: str) -> list[ModelVersion]:
        """Every model version the filter selects (MLflow's search syntax), all pages."""
        found: list[ModelVersion] = []
        token: str | None = None
        while True:
            params = {"filter": filter_string, "max_results": "200"}
            if token:
                params["page_token"] = token
            body = self._call("GET", "model-versions/search", "model versions", params=params)
            found += [_version(mv) for mv in body.get("model_versions") or ()]
            token = body.get("next_page_token")
            if not token:
                return found

    def set_run_tag(self, run_id: str, key: str, value: str) -> None:
        self._call(
            "POST",
            "runs/set-tag",
            f"run {run_id}",
            json={"run_id": run_id, "key": key, "value": value},
        )

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._call(
            "POST",
            "model-versions/set-tag",
            f"model version {version} of {name}",
            json={"name": name, "version": version, "key": key, "value": value},
        )

    def delete_model_version_tag(self, name: str, version: str, key: str) -> None:
        self._call(
            "DELETE",
            "model-versions/delete-tag",
            f"model version {version} of {name}",
            json={"name": name, "version": version, "key": key},
        )

    def champion(self, name: str, alias: str) -> str | None:
        """The version `alias` points at, or None when the model or the alias does not exist."""
        try:
            return self.model_version_by_alias(name, alias).version
        except UsageError:  # no such model
            return None
        except RemoteError as exc:  # MLflow answers 400 "alias ... not found" for a model
            if "not found" in exc.message:
                return None
            raise

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(
            "POST",
            "registered-models/alias",
            f"alias @{alias} of model {name}",
            json={"name": name, "alias": alias, "version": version},
        )

    def delete_alias(self, name: str, alias: str) -> None:
        self._call(
            "DELETE",
            "registered-models/alias",
            f"alias @{alias} of model {name}",
            json={"name": name, "alias": alias},
        )

    def download_uri(self, name: str, version: str) -> str:
        """Where a registered version's files are: an artifact URI (mlflow-artifacts:/...
        when the server proxies its artifact store)."""
        body = self._call(
            "GET",
            "model-versions/get-download-uri",
            f"model version {version} of {name}",
            params={"name": name, "version": version},
        )
        return str(body.get("artifact_uri") or "")

    def list_artifacts(self, path: str) -> list[tuple[str, bool]]:
        """(path under the proxy's root, is a directory) of every entry directly in path;
        [] when path is a file or absent (MLflow answers an empty listing for both)."""
        body = self._call(
            "GET", "", f"artifacts at {path}", api=ARTIFACTS_API, params={"path": path}
        )
        return [(f"{path}/{f['path']}", bool(f.get("is_dir"))) for f in body.get("files") or ()]

    def download_artifacts(self, artifact_uri: str, dst: Path) -> list[Path]:
        """Every file under an mlflow-artifacts:/ directory URI into dst (same layout),
        each streamed to disk through the server's artifact proxy; the files written."""
        from urllib.parse import quote, urlsplit

        root = urlsplit(artifact_uri).path.strip("/")
        if not artifact_uri.startswith(PROXY_SCHEME) or urlsplit(artifact_uri).netloc:
            raise UsageError(f"{artifact_uri} is not served by the artifact proxy at {self.base}")
        written: list[Path] = []
        todo = [root]
        while todo:
            for path, is_dir in self.list_artifacts(todo.pop()):
                if is_dir:
                    todo.append(path)
                    continue
                rel = PurePosixPath(path).relative_to(root)
                if ".." in rel.parts:  # the server names the files; never write outside dst
                    raise RemoteError(f"MLflow listed an artifact outside {root}: {path}")
                target = dst.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                url = f"{self.base}{ARTIFACTS_API}/{quote(path)}"
                with self._request("GET", url, f"artifact {path}", stream=True) as resp:
                    if resp.status_code != 200:
                        raise RemoteError(
                            f"MLflow answered {resp.status_code} for artifact {path}",
                            hint="check the tracking server's artifact store",
                        )
                    with target.open("wb") as out:
                        for chunk in resp.iter_content(chunk_size=1 << 20):
                            out.write(chunk)
                written.append(target)
        return written

    def model_versions_created_since(self, name: str, since_ms: int) -> list[ModelVersion]:
        """The versions of model `name` the server says were created at or after since_ms
        (milliseconds since the epoch), all pages."""
        found: list[ModelVersion] = []
        token: str | None = None
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        while True:
            params = {"filter": f"name='{quoted}'", "max_results": "200"}
            if token:
                params["page_token"] = token
            body = self._call("GET", "model-versions/search", "model versions", params=params)
            for raw in body.get("model_versions") or ():
                created = raw.get("creation_timestamp")
                if str(created).isdigit() and int(created) >= since_ms:
                    found.append(_version(raw))
            token = body.get("next_page_token")
            if not token:
                return found

    def set_model_version_description(self, name: str, version: str, description: str) -> None:
        self._call(
            "PATCH",
            "model-versions/update",
            f"model version {version} of {name}",
            json={"name": name, "version": version, "description": description},
        )

    # -- runs written through REST (monitor's run per window: no `import mlflow`) ------------
    def experiment_id(self, name: str) -> str:
        """The ID of experiment `name`, created when it does not exist yet."""
        try:
            body = self._call(
                "GET",
                "experiments/get-by-name",
                f"experiment {name}",
                params={"experiment_name": name},
            )
            return str(body["experiment"]["experiment_id"])
        except UsageError:
            pass
        body = self._call("POST", "experiments/create", f"experiment {name}", json={"name": name})
        return str(body["experiment_id"])

    def create_run(self, experiment_id: str, start_ms: int, tags: Mapping[str, str]) -> str:
        body = self._call(
            "POST",
            "runs/create",
            "a new run",
            json={
                "experiment_id": experiment_id,
                "start_time": start_ms,
                "tags": [{"key": k, "value": v} for k, v in tags.items()],
            },
        )
        return str(body["run"]["info"]["run_id"])

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[tuple[str, float, int, int]] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Metrics as (key, value, timestamp ms, step), params and tags, in requests of at most
        1000 metrics (MLflow's limit per batch)."""
        pending = list(metrics)
        first = True
        while first or pending:
            chunk, pending = pending[:1000], pending[1000:]
            body: dict[str, Any] = {
                "run_id": run_id,
                "metrics": [
                    {"key": k, "value": v, "timestamp": ts, "step": step}
                    for k, v, ts, step in chunk
                ],
            }
            if first:
                body["params"] = [{"key": k, "value": v} for k, v in (params or {}).items()]
                body["tags"] = [{"key": k, "value": v} for k, v in (tags or {}).items()]
            self._call("POST", "runs/log-batch", f"run {run_id}", json=body)
            first = False

    def end_run(self, run_id: str, end_ms: int, status: str = "FINISHED") -> None:
        self._call(
            "POST",
            "runs/update",
            f"run {run_id}",
            json={"run_id": run_id, "status": status, "end_time": end_ms},
        )

    def read_artifact(self, artifact_uri: str, name: str, limit: int = 1 << 20) -> bytes | None:
        """One small file under an mlflow-artifacts:/ directory URI (a model's MLmodel), or
        None when the server has no such file."""
        from urllib.parse import quote, urlsplit

        if not artifact_uri.startswith(PROXY_SCHEME) or urlsplit(artifact_uri).netloc:
            return None
        path = f"{urlsplit(artifact_uri).path.strip('/')}/{name}"
        url = f"{self.base}{ARTIFACTS_API}/{quote(path)}"
        with self._request("GET", url, f"artifact {path}", stream=True) as resp:
            if resp.status_code != 200:
                return None
            data = resp.raw.read(limit + 1, decode_content=True)
        return None if len(data) > limit else bytes(data)
