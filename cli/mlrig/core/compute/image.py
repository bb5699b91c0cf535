"""A repository's own trainer image: what a remote retrain's task runs.

Built on mlrig's base image from the repository's requirements.txt, the few of mlrig's
dependencies the task's entrypoint imports (TASK_DEPENDENCIES, at the ranges mlrig declares)
and mlrig's wheel installed without its dependencies, plus git (DVC comes with the
repository's requirements). Its tag is a hash of those requirements' bytes, mlrig's version
(and, from a source checkout, the wheel's sources) and the build's own files (the Dockerfile,
the byte-code step and its module list): the image is reused, not rebuilt or pushed again,
while they are unchanged. It is pushed to the stack's registry with an immutable tag and named
by the digest the registry answers when asked back.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from mlrig import assets
from mlrig.contract import StackOutputs
from mlrig.core.shared import wheel
from mlrig.core.shared.progress import Progress
from mlrig.errors import DependencyMissing, ServiceError, UsageError

REPOSITORY = "mlrig/trainer-task"
# what `python -m mlrig.core.compute.task` imports beside the repository's own dependencies
# (boto3: the run's storage on AWS is the DVC bucket; its botocore comes with dvc[s3] already)
TASK_DEPENDENCIES = ("boto3", "platformdirs", "psutil", "pydantic", "pyyaml", "requests")
REQUIREMENTS = "requirements.txt"


@dataclass(frozen=True)
class TrainerImage:
    tag: str  # the local image's name, REPOSITORY:trainer-<project>-<hash>
    reference: str  # host/repository@sha256:<digest>, as the stack's registry answered
    digest: str
    built: bool  # False: reused (on the engine or already in the registry)
    seconds: float  # what building (and pushing) took here


def context_dir() -> Path:
    return assets.docker_dir() / "task"


def task_requirements() -> list[str]:
    """mlrig's own requirement lines for TASK_DEPENDENCIES (as its metadata declares them)."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted = {canonicalize_name(n) for n in TASK_DEPENDENCIES}
    found = []
    for raw in distribution("mlrig").requires or []:
        req = Requirement(raw)
        if canonicalize_name(req.name) in wanted and req.marker is None:
            found.append(str(req))
    missing = wanted - {canonicalize_name(Requirement(r).name) for r in found}
    if missing:
        raise DependencyMissing(
            f"mlrig's metadata declares no {', '.join(sorted(missing))}",
            hint="reinstall mlrig",
        )
    return sorted(found)


def requirements_of(repo: Path) -> bytes:
    path = repo / REQUIREMENTS
    if not path.is_file():
        raise UsageError(
            f"{repo} has no {REQUIREMENTS}: its trainer image installs the pipeline's "
            "dependencies from it",
            hint="a repository `mlrig init` made has one; restore it from git",
        )
    return path.read_bytes()


def image_tag(project: str, requirements: bytes) -> str:
    """REPOSITORY:trainer-<project>-<hash of every input of the build>."""
    from mlrig.version import __version__

    digest = hashlib.sha256()
    parts = [requirements, "\n".join(task_requirements()).encode(), __version__.encode()]
    for path in sorted(context_dir().rglob("*")):  # the Dockerfile and the files it copies
        if path.is_file() and "__pycache__" not in path.parts:
            name = path.relative_to(context_dir()).as_posix().encode()
            parts.append(name + b"\0" + path.read_bytes())
    with contextlib.suppress(DependencyMissing):  # a checkout's version is not every edit's
        parts.append(wheel.source_digest().encode())
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return f"{REPOSITORY}:trainer-{project.replace('_', '-')}-{digest.hexdigest()[:16]}"


def build(
    repo: Path,
    project: str,
    outputs: StackOutputs,
    *,
    progress: Progress = lambda _m: None,
    base_image: str | None = None,
) -> TrainerImage:
    """The repository's trainer image in the stack's registry: read back there when its tag
    is already pushed, else built (unless the engine has it) and pushed, digest verified."""
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.image import wheel_image

    started = time.monotonic()
    requirements = requirements_of(repo)
    tag = image_tag(project, requirements)
    remote_tag = tag.rsplit(":", 1)[1]
    found = _in_registry(outputs, remote_tag)
    if found is not None:
        progress(f"trainer image {remote_tag} is in the registry: reused")
        return TrainerImage(tag, found[0], found[1], False, time.monotonic() - started)
    built = False
    if not docker_adapter.image_exists(tag):
        wheel_image.build(
            context_dir(),
            {
                REQUIREMENTS: requirements,
                "task-requirements.txt": ("\n".join(task_requirements()) + "\n").encode(),
            },
            tag=tag,
            labels={"org.opencontainers.image.title": f"{project} trainer (mlrig)"},
            base_image=base_image,
            progress=progress,
        )
        built = True
    pushed = _push(tag, outputs, progress)
    return TrainerImage(tag, pushed[0], pushed[1], built, time.monotonic() - started)


def _in_registry(outputs: StackOutputs, tag: str) -> tuple[str, str] | None:
    """(reference by digest, digest) of the tag in the stack's registry, or None. ECR is
    asked through its API (DescribeImages: no registry login needed to look)."""
    from mlrig.core.oci.push import target_for

    if outputs.registry.kind == "ecr":
        from mlrig.adapters import aws

        reg = outputs.registry
        digest = aws.ecr_tag_digest(
            reg.repository, tag, region=outputs.region, endpoint_url=reg.endpoint_url
        )
        return (f"{reg.url}@{digest}", digest) if digest else None
    from mlrig.core.oci.steps import login

    client, target, _current = login(target_for(outputs), [tag])
    digest = client.manifest_digest(target.repository, tag)
    if not digest:
        return None
    return f"{outputs.registry.url}@{digest}", digest


def _push(tag: str, outputs: StackOutputs, progress: Progress) -> tuple[str, str]:
    from mlrig.core.oci.push import push_to

    result = push_to(tag, outputs.registry, owner=f"stack '{outputs.name}'", progress=progress)
    found = _in_registry(outputs, tag.rsplit(":", 1)[1])
    if found is None or found[1] != result.digest:  # read back: the registry holds it
        raise ServiceError(
            f"the stack's registry does not answer {result.digest} for the trainer image "
            f"{tag} it was just pushed as",
            hint="check the registry (`mlrig doctor`) and retry",
        )
    return found
