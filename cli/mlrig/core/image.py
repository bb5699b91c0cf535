"""Build and run lean model-serving images from MLflow models (push: `serving_push`).

The model is downloaded from the tracking server into a build context together with the
server (docker/serving/), then built with docker-py's streaming API on host networking.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrig import assets
from mlrig.core import serving_model
from mlrig.core.serving_model import Provenance
from mlrig.errors import (
    ConfigError,
    DependencyMissing,
    RemoteError,
    ServiceError,
    UsageError,
)
from mlrig.version import __version__

Progress = Callable[[str], None]
ANSWERS_FILE = ".copier-answers.yml"
PLATFORMS = ("linux/amd64", "linux/arm64")
LAST_BUILD = "last-image.json"
_RUN_URI = re.compile(r"^runs:/(?P<run>[0-9a-f]{8,64})(/|$)")
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(/(?P<version>[^/]+)|@(?P<alias>[^/]+))/?$")


def serving_assets() -> Path:
    """docker/serving/: the serving image's Dockerfile template and server."""
    return assets.docker_dir() / "serving"


@contextlib.contextmanager
def tracking_env(stack: str | None) -> Iterator[None]:
    """MLflow client settings: the environment's if set, else the named (or only) stack's."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if os.environ.get("MLFLOW_TRACKING_URI") and not stack:
        yield
        return
    from mlrig import contract
    from mlrig.core import stacks

    names = contract.list_names()
    name = stack or os.environ.get("MLRIG_STACK") or (names[0] if len(names) == 1 else None)
    if not name:
        raise UsageError(
            "no MLflow tracking server to read the model from",
            hint="pass --stack NAME or export MLFLOW_TRACKING_URI",
        )
    env = {
        k: v for k, v in stacks.client_env(contract.load(name)).items() if k.startswith("MLFLOW_")
    }
    with stacks.temporary_env(env):
        yield


def _mlflow_error(exc: Exception, uri: str) -> Exception:
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


def default_model_uri(repo: Path) -> str:
    """The latest version of the registered model a generated repo trains (project_name)."""
    import yaml

    answers = repo / ANSWERS_FILE
    if not answers.exists():
        raise UsageError(
            f"no --model given and {repo} is not an mlrig-generated repo (no {ANSWERS_FILE})",
            hint="pass --model models:/NAME/VERSION",
        )
    try:
        name = (yaml.safe_load(answers.read_text()) or {}).get("project_name")
    except yaml.YAMLError as exc:
        raise ConfigError(f"{answers} is not valid YAML") from exc
    if not name:
        raise ConfigError(f"{answers} has no project_name", hint="pass --model")
    from mlflow import MlflowClient

    try:
        versions = MlflowClient().search_model_versions(f"name='{name}'")
    except Exception as exc:
        raise _mlflow_error(exc, f"models:/{name}") from exc
    if not versions:
        raise UsageError(
            f"registered model {name!r} has no versions yet",
            hint="train and register it first (`dvc repro`)",
        )
    return f"models:/{name}/{max(int(v.version) for v in versions)}"


def describe(uri: str) -> tuple[str | None, str | None, str | None]:
    """(registered name, version, run id) behind a model URI."""
    from mlflow import MlflowClient

    if run := _RUN_URI.match(uri):
        return None, None, run["run"]
    match = _MODEL_URI.match(uri)
    if not match:
        if uri.startswith(("models:", "runs:")):
            raise UsageError(
                f"cannot parse model URI {uri!r}",
                hint="use models:/NAME/VERSION, models:/NAME@ALIAS or runs:/ID/PATH",
            )
        return None, None, None
    client = MlflowClient()
    try:
        if match["alias"]:
            mv = client.get_model_version_by_alias(match["name"], match["alias"])
        elif match["version"] == "latest":
            versions = client.search_model_versions(f"name='{match['name']}'")
            if not versions:
                raise UsageError(f"registered model {match['name']!r} has no versions")
            mv = max(versions, key=lambda v: int(v.version))
        else:
            mv = client.get_model_version(match["name"], match["version"])
    except UsageError:
        raise
    except Exception as exc:
        raise _mlflow_error(exc, uri) from exc
    return mv.name, str(mv.version), mv.run_id


def git_info(repo: Path) -> tuple[str | None, str | None]:
    def git(*args: str) -> str | None:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return proc.stdout.strip() or None if proc.returncode == 0 else None

    if not shutil.which("git") or not (repo / ".git").exists():
        return None, None
    return git("rev-parse", "HEAD"), git("remote", "get-url", "origin")


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    image_id: str
    size: int
    provenance: Provenance
    seconds: float


def prepare_context(
    uri: str, ctx: Path, provenance_repo: Path | None, base_image: str
) -> tuple[Provenance, serving_model.ServingPlan]:
    """Download the model and write the complete build context into ctx."""
    import mlflow.artifacts
    import yaml

    name, version, run_id = describe(uri)
    model_dir = ctx / "model"
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(model_dir))
    except Exception as exc:
        raise _mlflow_error(exc, uri) from exc
    # runs:/ID/path downloads into a sub-folder named after the path
    found = [p.parent for p in model_dir.rglob("MLmodel")]
    if not found:
        raise UsageError(
            f"{uri} is not an MLflow model (no MLmodel file)",
            hint="point --model at a logged model, e.g. runs:/ID/model",
        )
    if found[0] != model_dir:
        tmp = ctx / "model.tmp"
        found[0].rename(tmp)
        shutil.rmtree(model_dir)
        tmp.rename(model_dir)
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text()) or {}
    reqs_file = model_dir / "requirements.txt"
    if not reqs_file.exists():
        raise UsageError(f"model {uri} has no requirements.txt", hint=serving_model.PIN_HINT)
    plan = serving_model.plan(mlmodel, reqs_file.read_text())
    (model_dir / "mlrig-serving.json").write_text(json.dumps(plan.spec, indent=1))
    (ctx / "requirements.txt").write_text(plan.requirements_text)
    assets = serving_assets()
    for asset in ("serve.py", "healthcheck.py", "mkroot.sh"):
        shutil.copy2(assets / asset, ctx / asset)
    (ctx / "Dockerfile").write_text(
        serving_model.render_dockerfile(
            (assets / "Dockerfile.tmpl").read_text(),
            base_image=base_image,
            model_ref=uri,
            mlrig_version=__version__,
        )
    )
    commit = remote = None
    dvc: dict[str, str] = {}
    if provenance_repo is not None:
        commit, remote = git_info(provenance_repo)
        dvc = serving_model.dvc_lock_hashes(provenance_repo / "dvc.lock")
    if not commit and run_id:
        commit = _run_tag(run_id, "mlflow.source.git.commit")
    return Provenance(uri, name, version, run_id, commit, remote, dvc), plan


def _run_tag(run_id: str, key: str) -> str | None:
    from mlflow import MlflowClient

    try:
        return MlflowClient().get_run(run_id).data.tags.get(key)
    except Exception:  # provenance is best effort; the build does not depend on it
        return None


def resolve_base_image(base_image: str | None, progress: Progress) -> str:
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core import engine

    docker_adapter.client()  # raises "no Docker engine answers" first
    if base_image:
        if not docker_adapter.image_exists(base_image):
            raise DependencyMissing(
                f"base image {base_image} is not present on this engine",
                hint="build it first or omit --base-image (mlrig then uses its offline base)",
            )
        return base_image
    return engine.ensure_base_image(progress)


def build(
    model_uri: str | None = None,
    *,
    repo: Path | None = None,
    tag: str | None = None,
    platform: str | None = None,
    base_image: str | None = None,
    stack: str | None = None,
    no_cache: bool = False,
    progress: Progress = lambda _m: None,
) -> BuiltImage:
    """Build the serving image for a model; tags it only when every step succeeded."""
    from mlrig.adapters import docker as docker_adapter

    if platform and platform not in PLATFORMS:
        raise UsageError(
            f"unsupported platform {platform!r}", hint=f"use one of {', '.join(PLATFORMS)}"
        )
    base = resolve_base_image(base_image, progress)
    start = time.monotonic()
    with tracking_env(stack), tempfile.TemporaryDirectory(prefix="mlrig-image-") as tmp:
        uri = model_uri or default_model_uri(repo or Path.cwd())
        progress(f"downloading {uri}")
        in_repo = repo or (Path.cwd() if (Path.cwd() / ANSWERS_FILE).exists() else None)
        prov, plan = prepare_context(uri, Path(tmp), in_repo, base)
        ref = tag or serving_model.default_tag(prov.model_name, prov.model_version, prov.run_id)
        if ":" not in ref.rsplit("/", 1)[-1]:
            ref += ":latest"
        labels = prov.labels(__version__, plan.requirements_sha256)
        progress(f"building {ref} from {base}")
        kwargs: dict[str, Any] = {"platform": platform} if platform else {}
        stream = docker_adapter.client().api.build(
            path=tmp,
            tag=ref,
            labels=labels,
            network_mode="host",
            rm=True,
            forcerm=True,
            decode=True,
            pull=False,
            nocache=no_cache,
            **kwargs,
        )

        def show(chunk: dict[str, Any]) -> None:
            line = str(chunk.get("stream", "")).strip()
            if line.startswith("Step ") or line.startswith("Successfully built"):
                progress(line)

        chunks = docker_adapter.consume_stream(stream, f"building {ref}", on_chunk=show)
    image_id = next(
        (
            str(c["aux"]["ID"])
            for c in reversed(chunks)
            if isinstance(c.get("aux"), dict) and "ID" in c["aux"]
        ),
        None,
    )
    if not image_id:
        raise RemoteError(f"building {ref} ended without an image ID")
    info = docker_adapter.client().api.inspect_image(image_id)
    built = BuiltImage(ref, image_id, int(info.get("Size", 0)), prov, time.monotonic() - start)
    _remember(built)
    return built


def _remember(built: BuiltImage) -> None:
    from mlrig import contract, paths

    contract.atomic_write(
        paths.home() / LAST_BUILD, json.dumps({"ref": built.ref, "id": built.image_id}) + "\n"
    )


def last_built() -> str:
    from mlrig import paths

    try:
        return str(json.loads((paths.home() / LAST_BUILD).read_text())["ref"])
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(
            "no image given and none built yet", hint="run `mlrig image build` or name the image"
        ) from exc


@dataclass(frozen=True)
class Running:
    container: str
    url: str
    seconds_to_healthy: float
    smoke_predictions: list[Any] | None = None


def _example(container: Any) -> bytes:
    import io
    import tarfile

    import docker.errors

    try:
        stream, _ = container.get_archive("/opt/model/serving_input_example.json")
    except docker.errors.NotFound:
        raise UsageError(
            "the model in this image has no input example, so --smoke cannot check it",
            hint="log the model with input_example=...",
        ) from None
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile("serving_input_example.json")
        return member.read() if member else b""


def smoke_check(url: str, example: bytes) -> list[Any]:
    """POST the model's own input example; the answer must be one prediction per row."""
    import requests

    resp = requests.post(
        f"{url}/invocations", data=example, headers={"Content-Type": "application/json"}, timeout=30
    )
    if resp.status_code != 200:
        raise ServiceError(
            f"the model answered {resp.status_code} to its own input example: {resp.text[:200]}"
        )
    preds = resp.json().get("predictions")
    doc = json.loads(example)
    inner = next(
        (
            doc[k]
            for k in ("dataframe_split", "dataframe_records", "instances", "inputs")
            if k in doc
        ),
        None,
    )
    rows = inner.get("data") if isinstance(inner, dict) and "data" in inner else inner
    if not isinstance(preds, list) or (isinstance(rows, list) and len(preds) != len(rows)):
        raise ServiceError(f"unexpected answer to the input example: {resp.text[:200]}")
    return preds


def run(
    image: str | None = None,
    *,
    port: int = 8080,
    smoke: bool = False,
    keep: bool = False,
    timeout: float = 120.0,
) -> Running:
    """Start the image on host networking (never pulls) and wait until it is healthy."""
    import docker.errors
    import requests

    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.local_stack import port_is_free
    from mlrig.errors import PortInUse

    ref = image or last_built()
    cli = docker_adapter.client()
    if not docker_adapter.image_exists(ref):
        raise UsageError(
            f"image {ref} does not exist on this engine",
            hint="build it with `mlrig image build` (run never pulls)",
        )
    if not 1024 <= port <= 65535:
        raise UsageError(f"port {port} is out of range", hint="pick 1024-65535")
    if not port_is_free(port):
        raise PortInUse(f"port {port} is already in use", hint="pass --port with a free one")
    name = f"mlrig-serve-{port}"
    start = time.monotonic()
    try:
        container = cli.containers.run(
            ref, detach=True, name=name, network_mode="host", environment={"PORT": str(port)}
        )
    except docker.errors.APIError as exc:
        raise ServiceError(f"starting {ref} failed: {exc.explanation or exc}") from exc
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            container.reload()
            if container.status == "exited" or time.monotonic() - start > timeout:
                logs = container.logs(tail=3).decode(errors="replace").strip()
                last = logs.splitlines()[-1] if logs else "no output"
                raise ServiceError(
                    f"{ref} did not become healthy: {last}",
                    hint=f"see `docker logs {name}` before it is removed",
                )
            time.sleep(0.05)
        healthy = time.monotonic() - start
        preds = smoke_check(url, _example(container)) if smoke else None
    except BaseException:
        container.remove(force=True)
        raise
    if smoke and not keep:
        container.remove(force=True)
    return Running(name, url, healthy, preds)
