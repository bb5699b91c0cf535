"""The image a model version serves, by digest: the one its push named on the version (its
tags validated here, the manifest read back from the stack's registry and hashed), or, when
the version names none yet, built (`image.build`) and pushed (`image.push`) first and then
read back the same way. A version a retrain undid is refused: it is in no commit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydantic import BaseModel, Field, ValidationError

from mlrig.adapters.mlflow_rest import MlflowRest, ModelVersion
from mlrig.adapters.registry_client import RegistryClient
from mlrig.contract import StackOutputs
from mlrig.core.provenance import record as p
from mlrig.core.shared import secrets
from mlrig.core.shared.progress import Progress
from mlrig.errors import UsageError

_REPOSITORY = r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?/[a-z0-9]+(?:(?:[._/]|__|-+)[a-z0-9]+)*$"


class PushedTags(BaseModel):
    """What a push wrote on the version (MLflow tags: input, checked before any use)."""

    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    repository: str = Field(pattern=_REPOSITORY, max_length=255)


@dataclass(frozen=True)
class Pushed:
    digest: str
    image: str  # host/repository@digest


def refuse_undone(mv: ModelVersion) -> None:
    if mv.tags.get(p.TAG_UNDONE) == "true":
        raise UsageError(
            f"model version {mv.version} of {mv.name} was registered by a retrain that was "
            "undone (it is in no commit)",
            hint="deploy another version: models:/NAME/VERSION",
        )


def tags_of(mv: ModelVersion, outputs: StackOutputs) -> PushedTags | None:
    """The version's pushed image, None when it names none; one line when its tags are not
    a digest in this stack's registry."""
    digest, repository = mv.tags.get(p.MV_IMAGE_DIGEST), mv.tags.get(p.MV_IMAGE_REPOSITORY)
    if not digest and not repository:
        return None
    try:
        tags = PushedTags(digest=digest or "", repository=repository or "")
    except ValidationError:
        tags = None
    if tags is None or tags.repository.split("/", 1)[0] != outputs.registry.host:
        raise UsageError(
            f"the image tags of model version {mv.version} of {mv.name} do not name a digest "
            f"in stack '{outputs.name}''s registry ({p.MV_IMAGE_DIGEST}, "
            f"{p.MV_IMAGE_REPOSITORY})",
            hint="push the version's image again with `mlrig image push` (it rewrites them)",
        )
    return tags


def verified(tags: PushedTags, mv: ModelVersion, outputs: StackOutputs) -> Pushed:
    """The digest, proved: the registry holds a manifest under it whose bytes hash to it."""
    host, _, repo_path = tags.repository.partition("/")
    reg = outputs.registry
    user = reg.auth.username if reg.auth else None
    password = secrets.resolve(reg.auth.password) if reg.auth else None
    found = RegistryClient(f"http://{host}", user, password).manifest(repo_path, tags.digest)
    if found is None:
        raise UsageError(
            f"image {tags.repository}@{tags.digest} of model version {mv.version} is not in "
            f"stack '{outputs.name}''s registry",
            hint="push it again with `mlrig image push`",
        )
    body, _media_type, _named = found
    actual = "sha256:" + hashlib.sha256(body).hexdigest()
    if actual != tags.digest:
        raise UsageError(
            f"the registry's manifest for {tags.repository}@{tags.digest} hashes to {actual}: "
            "the digest does not verify",
            hint="check the registry (`mlrig doctor`), then push the image again",
        )
    return Pushed(tags.digest, f"{tags.repository}@{tags.digest}")


def build_and_push(
    mv: ModelVersion, outputs: StackOutputs, rest: MlflowRest, progress: Progress
) -> tuple[ModelVersion, PushedTags]:
    """Build the version's serving image and push it; the version as MLflow has it after the
    push (its tags name the image) and those tags."""
    from mlrig.core.image import build as image_build
    from mlrig.core.image import push as image_push

    uri = f"models:/{mv.name}/{mv.version}"
    progress(f"version {mv.version} of {mv.name} has no pushed image: building it")
    built = image_build.build(uri, stack=outputs.name, progress=progress)
    progress(f"pushing {built.ref}")
    image_push.push(built.ref, outputs, progress=progress)
    after = rest.model_version(mv.name, mv.version)
    tags = tags_of(after, outputs)
    if tags is None:
        raise UsageError(
            f"the push of {built.ref} named no image on model version {mv.version} of {mv.name}",
            hint="run `mlrig image push` again, then deploy",
        )
    return after, tags
