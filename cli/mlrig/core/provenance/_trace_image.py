"""Image -> run: an image reference, digest or ID to the labels mlrig build wrote, found on the
local engine, else in the stack's registry, else through the model version push tagged."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters.mlflow_rest import MlflowRest, ModelVersion
from mlrig.contract import StackOutputs
from mlrig.core.provenance import _inputs as provenance_input
from mlrig.core.provenance import record as p
from mlrig.core.provenance._inputs import Refused
from mlrig.core.provenance.record import CodeRecord, ImageRecord, MissingLink, ProvenanceRecord
from mlrig.errors import MlrigError, ServiceError, UsageError

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass
class FoundImage:
    """What is known of an image: its labels (empty when only MLflow named it)."""

    images: list[ImageRecord] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    version: ModelVersion | None = None  # when found through the model-version tags
    refused: list[Refused] = field(default_factory=list)  # labels left out of `labels`


def split(ref: str) -> tuple[str | None, str | None]:
    """(repository part, digest) of `repo@sha256:…`, a bare digest or a 64-hex image ID."""
    if DIGEST.fullmatch(ref):
        return None, ref
    if re.fullmatch(r"[0-9a-f]{64}", ref):
        return None, f"sha256:{ref}"
    if "@" in ref:
        repo, digest = ref.rsplit("@", 1)
        return repo, digest
    return ref, None


def records_from_refs(refs: list[str], image_id: str | None = None) -> list[ImageRecord]:
    """ImageRecords of `host/repository@sha256:…` strings, one per reference (anything else,
    e.g. in a model version's tag, is left out)."""
    out = []
    for ref in dict.fromkeys(provenance_input.image_refs(refs)):
        if "@" in ref:
            repo, digest = ref.rsplit("@", 1)
            out.append(
                ImageRecord(digest=digest, repository=repo, reference=ref, image_id=image_id)
            )
    return out


def _engine(ref: str, digest: str | None) -> FoundImage | None:
    try:
        info = docker_adapter.image_info(ref) if not DIGEST.fullmatch(ref) else None
        if info is None and digest:
            info = docker_adapter.image_info(digest) or docker_adapter.image_by_digest(digest)
    except ServiceError:  # no engine here: the registry and MLflow can still answer
        return None
    except UsageError:  # not a name the engine accepts, e.g. a bare digest
        return None
    if info is None:
        return None
    images = records_from_refs(list(info.repo_digests), info.id)
    if not images:
        images = [ImageRecord(digest=info.id, image_id=info.id)]
    return FoundImage(images, dict(info.labels))


def _registry(
    outputs: StackOutputs | None, repo: str | None, digest: str | None
) -> FoundImage | None:
    """The stack's own registry (an OCI one; ECR images are found through MLflow)."""
    reg = outputs.registry if outputs is not None else None
    if reg is None or reg.kind != "oci" or reg.auth is None:
        return None
    if digest is not None and not DIGEST.fullmatch(digest):  # it goes into the registry's URL
        return None
    from mlrig.adapters.registry import RegistryClient
    from mlrig.core.shared import secrets

    name = f"{reg.host}/{reg.repository}"
    if repo is None or repo == name:
        reference = digest
    elif repo.startswith(f"{name}:"):
        reference = digest or repo[len(name) + 1 :]
    else:  # another registry's image
        return None
    if not reference:
        return None
    client = RegistryClient(
        f"http://{reg.host}", reg.auth.username, secrets.resolve(reg.auth.password)
    )
    try:
        labels = client.config_labels(reg.repository, reference)
        manifest = digest or client.manifest_digest(reg.repository, reference)
    except MlrigError:
        return None
    if labels is None or not manifest:
        return None
    return FoundImage(records_from_refs([f"{name}@{manifest}"]), labels)


def _mlflow(rest: MlflowRest, digest: str | None) -> FoundImage | None:
    if not digest or not DIGEST.fullmatch(digest):  # it goes into a search filter
        return None
    versions = rest.search_model_versions(f"tags.`{p.MV_IMAGE_REFS}` LIKE '%{digest}%'")
    if not versions:
        versions = rest.search_model_versions(f"tags.`{p.MV_IMAGE_DIGEST}` = '{digest}'")
    if not versions:
        return None
    mv = max(versions, key=lambda v: int(v.version))
    return FoundImage(records_from_refs(mv.tags.get(p.MV_IMAGE_REFS, "").split()), version=mv)


def find(ref: str, rest: MlflowRest, outputs: StackOutputs | None) -> FoundImage:
    """The image behind ref, from the first place that knows it."""
    repo, digest = split(ref)
    found = _engine(ref, digest) or _registry(outputs, repo, digest) or _mlflow(rest, digest)
    if found is None:
        where = f"stack '{outputs.name}''s registry" if outputs else "the stack's registry"
        raise UsageError(
            f"no image {ref} found: not on this engine, not in {where}, "
            "and no model version's push tags name it",
            hint="check the digest, or pass --stack for the stack it was pushed to",
        )
    found.labels, found.refused = provenance_input.checked_labels(found.labels)
    if found.version is None and not found.labels.get(p.LABEL_RUN_ID):
        if found.refused:
            raise UsageError(
                f"image {ref}: {found.refused[0].line()}",
                hint="rebuild it with `mlrig image build`, or trace its model version",
            )
        # no mlrig labels: a model version whose push tags name one of its digests, if any
        for image in found.images:
            by_digest = _mlflow(rest, image.digest)
            if by_digest is not None:
                found.version = by_digest.version
                break
    return found


def unlabelled(ref: str, found: FoundImage) -> ProvenanceRecord:
    """The record of an image that names no run (no mlrig labels, no model version's push
    tags name its digest): its digest and registry, and each missing link."""
    missing = [
        MissingLink(
            link="mlrig labels",
            how="build the image with `mlrig image build` (its labels name the model version, "
            "run and commit)",
        ),
        MissingLink(
            link="model version",
            how="no model version's push tags name its digest: push it with `mlrig image push`",
        ),
        MissingLink(link="run", how="nothing names the MLflow run the model was logged from"),
        MissingLink(link="commit and data", how="known only through the run's tags"),
    ]
    return ProvenanceRecord(
        ref=ref,
        images=found.images,
        code=CodeRecord(reason=f"image {ref} names no run: there is nothing to restore"),
        missing=missing,
    )
