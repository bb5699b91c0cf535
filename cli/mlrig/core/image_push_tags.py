"""After a verified push: name the pushed image on the model version it serves (digest,
repository, every reference ever pushed), so `mlrig trace` finds the run from a digest alone."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from mlrig.adapters.mlflow_rest import MlflowRest, ModelVersion
from mlrig.contract import StackOutputs
from mlrig.core import provenance as p
from mlrig.core.progress import Progress
from mlrig.errors import MlrigError, RemoteError, UsageError

RETRY_HINT = (
    "re-running `mlrig image push` is safe: the image is already there, so the push is a "
    "no-op that writes the tags"
)


def merged_refs(existing: str, reference: str) -> str:
    """The space-separated reference list with reference appended once."""
    refs = existing.split()
    return " ".join(refs if reference in refs else [*refs, reference])


@dataclass(frozen=True)
class Found:
    rest: MlflowRest
    version: ModelVersion | None  # None: not on this stack's MLflow


def look_up(outputs: StackOutputs, labels: dict[str, str]) -> Found | None:
    """The model version the image's labels name, as the identity of the repository that
    owns the model (admin otherwise); None when they name none. It does not depend on the
    push, so `serving_push.push` reads it while the push runs."""
    from mlrig.core import identities

    name, version = labels.get(p.LABEL_MODEL_NAME), labels.get(p.LABEL_MODEL_VERSION)
    if not (name and version):
        return None
    rest = MlflowRest.from_env(identities.acting_env(outputs, name))
    try:
        return Found(rest, rest.model_version(name, version))
    except UsageError:
        return Found(rest, None)


def record(
    outputs: StackOutputs,
    labels: dict[str, str],
    reference: str,
    digest: str,
    progress: Progress = lambda _m: None,
    looked_up: Future[Found | None] | None = None,
) -> bool:
    """Tag the model version the image's labels name (read by `look_up`, or the future of
    it), the tags that change side by side; False when there is none to tag (an image of a
    run, or of a version another stack's MLflow holds)."""
    name, version = labels.get(p.LABEL_MODEL_NAME), labels.get(p.LABEL_MODEL_VERSION)
    if not (name and version and digest):
        return False
    try:
        found = looked_up.result() if looked_up else look_up(outputs, labels)
        if found is None:
            return False
        mv = found.version
        if mv is None:
            progress(
                f"model version {version} of {name} is not on stack '{outputs.name}''s MLflow: "
                "no push tags written (trace still reads the image's labels)"
            )
            return False
        refs = merged_refs(mv.tags.get(p.MV_IMAGE_REFS, ""), reference)
        changed = [
            (key, value)
            for key, value in (
                (p.MV_IMAGE_DIGEST, digest),
                (p.MV_IMAGE_REPOSITORY, reference.rsplit("@", 1)[0]),
                (p.MV_IMAGE_REFS, refs),
            )
            if mv.tags.get(key) != value
        ]
        if changed:
            with ThreadPoolExecutor(max_workers=len(changed)) as pool:
                writes = [
                    pool.submit(found.rest.set_model_version_tag, name, version, key, value)
                    for key, value in changed
                ]
                for write in writes:
                    write.result()
    except MlrigError as exc:
        raise RemoteError(
            f"{reference} was pushed, but tagging model version {version} of {name} with it "
            f"failed: {exc.message}",
            hint=RETRY_HINT,
        ) from exc
    return True
