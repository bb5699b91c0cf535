"""Build lean model-serving images from MLflow models (push: `image.push`).

The serving base is an engine build on host networking (docker/serving/Dockerfile.tmpl:
runtime, the model's pinned dependencies, the server), reused while its inputs are
unchanged; the model downloaded from the tracking server goes on it as one layer mlrig
assembles itself (`oci.layer`) and loads into the engine, its blobs kept for a push
(`oci.cache`). Which model and its provenance live in `image.model`, running it in
`image.run`, the last build's record in `image.last_built`.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrig import assets
from mlrig.adapters import docker as docker_adapter
from mlrig.adapters import mlflow as mlflow_adapter
from mlrig.adapters import skops as skops_adapter
from mlrig.core.image import last_built as image_last_built
from mlrig.core.image import smoke
from mlrig.core.image.model import ANSWERS_FILE, default_model_uri, provenance, tracking_env
from mlrig.core.image.run import run
from mlrig.core.oci import cache as image_cache
from mlrig.core.oci import layer as image_layer
from mlrig.core.shared import serving_model
from mlrig.core.shared.progress import Progress
from mlrig.core.shared.serving_model import Provenance
from mlrig.errors import DependencyMissing, RemoteError, UsageError
from mlrig.version import __version__

# `run` and `tracking_env` stay importable from here too, for callers outside the image code
__all__ = [
    "PLATFORMS",
    "BuiltImage",
    "build",
    "prepare_context",
    "resolve_base_image",
    "run",
    "serving_assets",
    "tracking_env",
]

PLATFORMS = ("linux/amd64", "linux/arm64")
SERVER_PACKAGE = "mlrig_serve"  # docker/serving/mlrig_serve: the server serve.py runs
BASE_REPOSITORY = "mlrig/serving-base"  # tagged by a hash of its inputs (`serving_base`)


def serving_assets() -> Path:
    """docker/serving/: the serving image's Dockerfile template, its entry point and the
    server's package (SERVER_PACKAGE)."""
    return assets.docker_dir() / "serving"


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    image_id: str
    size: int
    provenance: Provenance
    seconds: float


def _download(uri: str, ctx: Path, prov: Provenance) -> Path:
    """The model's files in ctx/model, however deep the URI nests them: a registered version
    (the one provenance resolved, so an alias moved meanwhile changes neither) through the
    tracking server's artifact proxy, anything else with MLflow's client."""
    model_dir = ctx / "model"
    if prov.model_name and prov.model_version:
        mlflow_adapter.download_model_version(
            prov.model_name, prov.model_version, model_dir, uri=uri
        )
    else:
        mlflow_adapter.download_model(uri, model_dir)
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
    return model_dir


def prepare_context(
    uri: str, ctx: Path, provenance_repo: Path | None, base_image: str
) -> tuple[Provenance, serving_model.ServingPlan, smoke.Request | None]:
    """Download the model and write the serving base's build context: ctx/base (runtime,
    dependencies, server); the model's files go to ctx/model/model (`build_model_image`).
    Also the request the built image must answer before it is tagged (`smoke`)."""
    import yaml

    prov = provenance(uri, provenance_repo)
    model_dir = _download(uri, ctx / "model", prov)
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text()) or {}
    reqs_file = model_dir / "requirements.txt"
    if not reqs_file.exists():
        raise UsageError(f"model {uri} has no requirements.txt", hint=serving_model.PIN_HINT)
    plan = serving_model.plan(mlmodel, reqs_file.read_text())
    request = smoke.request_for(model_dir, mlmodel)
    if plan.spec.get("serialization_format") == "skops":
        plan.spec["skops_types"] = skops_types(
            model_dir / plan.spec["model_file"], plan.spec.get("skops_trusted_types")
        )
    (model_dir / "mlrig-serving.json").write_text(json.dumps(plan.spec, indent=1))
    base_ctx = ctx / "base"
    base_ctx.mkdir()
    (base_ctx / "requirements.txt").write_text(plan.requirements_text)
    files = serving_assets()
    for asset in ("serve.py", "healthcheck.py", "mkroot.sh"):
        shutil.copy2(files / asset, base_ctx / asset)
    # the server's package, without the byte-code a local import leaves (it would change the
    # base's hash, `_base_key`)
    shutil.copytree(
        files / SERVER_PACKAGE,
        base_ctx / SERVER_PACKAGE,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    (base_ctx / "Dockerfile").write_text(
        serving_model.render_dockerfile(
            (files / "Dockerfile.tmpl").read_text(),
            base_image=base_image,
            mlrig_version=__version__,
        )
    )
    return prov, plan, request


def skops_types(path: Path, trusted_by_model: list[str] | None) -> list[str] | None:
    """The exact allow-list the server loads the model's skops file with: every type the file
    holds, decided here, so its start skips skops' default trust (building that imports all
    of scikit-learn: ~0.3 s of every start; mlrig_serve.scoring). A file with a type that
    neither skops trusts by default nor the model's MLmodel lists (skops_trusted_types) is
    refused here, as its load would be refused at start. None: this skops cannot list them
    (the server then loads with skops' defaults, as before)."""
    found = skops_adapter.file_types(path)
    unlisted = sorted(set(found.untrusted) - set(trusted_by_model or []))
    if unlisted:
        raise UsageError(
            f"the model's file {path.name} holds types skops does not trust and the model "
            f"does not list: {', '.join(unlisted[:5])}",
            hint="if you trust them, log the model with "
            "mlflow.sklearn.log_model(..., skops_trusted_types=[...]) naming them",
        )
    return found.every


def _base_key(base_ctx: Path, base_image: str, platform: str | None) -> str:
    """A hash of everything the serving base is built from: every file of its context
    (Dockerfile, pinned requirements, server), the base image's ID and the platform."""
    import hashlib

    info = docker_adapter.image_info(base_image)
    digest = hashlib.sha256(f"{info.id if info else base_image}\0{platform or ''}\0".encode())
    for path in sorted(p for p in base_ctx.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(base_ctx).as_posix()}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def serving_base(
    base_ctx: Path,
    base_image: str,
    *,
    platform: str | None,
    no_cache: bool,
    progress: Progress,
    on_chunk: docker_adapter.OnChunk,
) -> str:
    """The serving base's image ID. One built from the very same inputs is tagged
    mlrig/serving-base:<their hash> and reused as is; otherwise it is built (the engine's
    layer cache still spares the dependency install when only the server changed).

    Reusing it by tag is what keeps the engine out of a new model version's build (the
    model layer goes on it as `build_model_image` writes it): a full Dockerfile makes the
    engine re-check every cached step, and its check of the first step after `FROM
    scratch` reads every image on the engine (seconds on a busy one)."""
    ref = f"{BASE_REPOSITORY}:{_base_key(base_ctx, base_image, platform)[:32]}"
    info = None if no_cache else docker_adapter.image_info(ref)
    if info is not None:
        return info.id
    progress(f"building the serving base {ref} from {base_image}")
    output: list[str] = []  # the stream's text: a line may span chunks

    def keep(chunk: dict[str, Any]) -> None:
        output.append(str(chunk.get("stream", "")))
        on_chunk(chunk)

    try:
        image_id = docker_adapter.build_image(
            base_ctx, tag=ref, labels={}, platform=platform, no_cache=no_cache, on_chunk=keep
        )
    except RemoteError as exc:
        raise pip_failure("".join(output).splitlines()) or exc from None
    if not image_id:
        raise RemoteError(f"building {ref} ended without an image ID")
    return image_id


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PIP_NOT_FOUND = re.compile(r"^ERROR: No matching distribution found for (?P<req>\S+)")
_PIP_UNREACHABLE = re.compile(
    r"(Network is unreachable|Name or service not known|"
    r"Temporary failure in name resolution|Connection refused|timed out)"
)


def pip_failure(output: list[str]) -> UsageError | None:
    """The model's requirement pip could not install while the serving base was built, as
    one line (None when pip is not what failed). The build installs the model's pins with
    pip inside the base image, wheels only, from the index that image reaches (PyPI unless
    its pip configuration names another), over the host's network."""
    output = [_ANSI.sub("", ln) for ln in output]  # the engine colours a step's stderr
    errors = [ln.strip() for ln in output if ln.strip().startswith("ERROR: ")]
    if not errors:
        return None
    found = next((m for ln in errors if (m := _PIP_NOT_FOUND.match(ln))), None)
    unreachable = next((m[1] for ln in output if (m := _PIP_UNREACHABLE.search(ln))), None)
    where = (
        f"the package index did not answer ({unreachable})"
        if unreachable
        else ("the package index the build reaches has no wheel of it for this platform")
    )
    if found:
        what = f"the model's requirement {found['req']} cannot be installed: {where}"
    else:
        what = f"pip could not install the model's requirements: {errors[-1][7:][:240]}"
    return UsageError(
        f"{what}; nothing was tagged",
        hint="make the wheel available on that index, or log the model with requirements "
        "that are (the image installs wheels only, never builds from source)",
    )


def base_config(base_id: str) -> bytes:
    """The serving base's exact config bytes: taken from the engine once per base (a
    streamed save; its hash must be the base's ID), then from the cache."""
    cached = image_cache.base_config(base_id)
    if cached is not None:
        return cached
    from mlrig.adapters import docker_archive

    config = docker_archive.image_config(base_id)
    if image_layer.sha256(config) != base_id:
        raise RemoteError(f"the engine's config of {base_id[:19]} does not hash to its ID")
    image_cache.remember_base_config(base_id, config)
    return config


def build_model_image(
    model_ctx: Path,
    base_id: str,
    *,
    ref: str,
    labels: dict[str, str],
    check: Callable[[str], None] | None = None,
) -> str:
    """The model on its serving base as one layer mlrig makes itself (what `COPY model/
    /opt/model/` made), the labels in its config; loaded into the engine, which receives only
    the new layer. With check, the image is loaded untagged and tagged ref only once
    check(image ID) returns; when it raises, an image this build loaded is removed again and
    ref keeps whatever it named before. Its blobs are cached for a push; the image ID."""
    from mlrig.adapters import docker_archive

    base = base_config(base_id)
    layer = image_layer.model_layer(model_ctx / "model", model_ctx / "layer.tar.gz")
    config = image_layer.image_config(base, layer, labels, base_id)
    base_layers = len(json.loads(base)["rootfs"]["diff_ids"])
    image_id = image_layer.sha256(config)
    existed = docker_adapter.image_info(image_id) is not None
    archive = model_ctx / "load.tar"
    load_as = None if check else ref
    docker_archive.load(
        image_layer.write_load_archive(archive, config, base_layers, layer, load_as)
    )
    archive.unlink()
    if check is not None:
        if docker_adapter.image_info(image_id) is None:
            raise RemoteError(f"the engine did not load the image {image_id[:19]}")
        try:
            check(image_id)
        except BaseException:
            if not existed:
                docker_adapter.remove_image(image_id)
            raise
        repository, tag = ref.rsplit(":", 1)
        docker_adapter.tag_image(image_id, repository, tag)
    info = docker_adapter.image_info(ref)
    if info is None or info.id != image_id:
        raise RemoteError(f"the engine did not load {ref} as {image_id[:19]}")
    image_cache.remember(image_id, base_id, config, layer, ref=ref)
    return image_id


def resolve_base_image(base_image: str | None, progress: Progress) -> str:
    from mlrig.core.setup import engine

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
    if platform and platform not in PLATFORMS:
        raise UsageError(
            f"unsupported platform {platform!r}", hint=f"use one of {', '.join(PLATFORMS)}"
        )
    base = resolve_base_image(base_image, progress)
    start = time.monotonic()
    with (
        tracking_env(stack, repo=repo, model_uri=model_uri),
        tempfile.TemporaryDirectory(prefix="mlrig-image-") as tmp,
    ):
        uri = model_uri or default_model_uri(repo or Path.cwd())
        progress(f"downloading {uri}")
        in_repo = repo or (Path.cwd() if (Path.cwd() / ANSWERS_FILE).exists() else None)
        prov, plan, request = prepare_context(uri, Path(tmp), in_repo, base)
        ref = tag or serving_model.default_tag(prov.model_name, prov.model_version, prov.run_id)
        if ":" not in ref.rsplit("/", 1)[-1]:
            ref += ":latest"

        def show(chunk: dict[str, Any]) -> None:
            line = str(chunk.get("stream", "")).strip()
            if line.startswith("Step ") or line.startswith("Successfully built"):
                progress(line)

        ctx = Path(tmp)
        base_id = serving_base(
            ctx / "base",
            base,
            platform=platform,
            no_cache=no_cache,
            progress=progress,
            on_chunk=show,
        )
        progress(f"building {ref} on the serving base {base_id[7:19]}")

        def prove(image_id: str) -> None:
            progress(
                f"starting {image_id[7:19]} once: it must load the model and answer "
                + (request.source if request else "/ping (the model has no example or signature)")
            )
            smoke.check(image_id, ref, request)

        image_id = build_model_image(
            ctx / "model",
            base_id,
            ref=ref,
            labels=prov.labels(__version__, plan.requirements_sha256),
            check=prove,
        )
        progress(f"tagged {ref} ({image_id[7:19]}): the model as one layer on the serving base")
    info = docker_adapter.image_info(image_id)
    built = BuiltImage(ref, image_id, info.size if info else 0, prov, time.monotonic() - start)
    image_last_built.remember(built.ref, built.image_id)
    return built
