"""After a push: name the pushed image on the model version it serves (digest, repository,
every reference ever pushed), so `mlrig trace` finds the run from a digest alone. Written
once the registry acknowledged the manifest (`image.push`); a push that fails after that
puts the tags back as they were (`undo`)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mlrig.adapters.mlflow_rest import MlflowRest, ModelVersion
from mlrig.contract import StackOutputs
from mlrig.core.provenance import record as p
from mlrig.core.shared.progress import Progress
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
    from mlrig.core.access import identities

    name, version = labels.get(p.LABEL_MODEL_NAME), labels.get(p.LABEL_MODEL_VERSION)
    if not (name and version):
        return None
    rest = MlflowRest.from_env(identities.acting_env(outputs, name))
    try:
        return Found(rest, rest.model_version(name, version))
    except UsageError:
        return Found(rest, None)


@dataclass(frozen=True)
class Written:
    """The tags a push wrote on a model version, and what each held before (None: unset)."""

    rest: MlflowRest
    name: str
    version: str
    before: dict[str, str | None] = field(default_factory=dict)


def record(
    outputs: StackOutputs,
    labels: dict[str, str],
    reference: str,
    digest: str,
    progress: Progress = lambda _m: None,
    looked_up: Future[Found | None] | None = None,
) -> Written | None:
    """Tag the model version the image's labels name (read by `look_up`, or the future of
    it), the tags that change side by side; None when there is none to tag (an image of a
    run, or of a version another stack's MLflow holds)."""
    name, version = labels.get(p.LABEL_MODEL_NAME), labels.get(p.LABEL_MODEL_VERSION)
    if not (name and version and digest):
        return None
    try:
        found = looked_up.result() if looked_up else look_up(outputs, labels)
        if found is None:
            return None
        mv = found.version
        if mv is None:
            progress(
                f"model version {version} of {name} is not on stack '{outputs.name}''s MLflow: "
                "no push tags written (trace still reads the image's labels)"
            )
            return None
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
        written = Written(found.rest, name, version, {k: mv.tags.get(k) for k, _v in changed})
        _each(
            changed, lambda key, value: found.rest.set_model_version_tag(name, version, key, value)
        )
    except MlrigError as exc:
        raise RemoteError(
            f"{reference} was pushed, but tagging model version {version} of {name} with it "
            f"failed: {exc.message}",
            hint=RETRY_HINT,
        ) from exc
    return written


def undo(writing: Future[Written | None], failure: BaseException) -> None:
    """After the push failed (`failure`): the tags `record` (running as `writing`) wrote,
    back to what they held, unset where they were unset. Raises a RemoteError naming both
    when they cannot be put back, except while the process is being stopped (a signal),
    whose own exit wins; what `record` itself failed with adds nothing."""
    try:
        written = writing.result()
    except MlrigError:
        return  # its writes failed or never ran: the push's own failure is the one to tell
    if written is None:
        return
    rest, name, version = written.rest, written.name, written.version

    def restore(key: str, old: str | None) -> None:
        if old is None:
            rest.delete_model_version_tag(name, version, key)
        else:
            rest.set_model_version_tag(name, version, key, old)

    try:
        _each(list(written.before.items()), restore)
    except MlrigError as exc:
        if not isinstance(failure, Exception):
            return
        told = failure.message if isinstance(failure, MlrigError) else str(failure)
        raise RemoteError(
            f"{told}; and model version {version} of {name} keeps the tags this push wrote: "
            f"restoring them failed ({exc.message})",
            hint=RETRY_HINT,
        ) from failure


def _each(pairs: list[tuple[str, Any]], call: Callable[[str, Any], None]) -> None:
    """call(key, value) for every pair, side by side (each is one MLflow request)."""
    if not pairs:
        return
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        for done in [pool.submit(call, key, value) for key, value in pairs]:
            done.result()
