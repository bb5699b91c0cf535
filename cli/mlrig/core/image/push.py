"""Push a model image to a stack's registry and name it on the model version it serves.

The registry mechanics (immutable tags, the digest verified, the registry API's direct
path) are `oci.push`; this module adds what only a model image has: the model version it
serves, read from MLflow while the push runs, and the version's tags written once the
registry holds the image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlrig.adapters import docker as docker_adapter
from mlrig.contract import StackOutputs
from mlrig.core.oci import cache as image_cache
from mlrig.core.oci.push import PushResult, push_to
from mlrig.core.shared.progress import Progress

__all__ = ["push"]


def push(
    image: str,
    outputs: StackOutputs,
    *,
    endpoint: str | None = None,
    progress: Progress = lambda _m: None,
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
) -> PushResult:
    """Push to a stack's registry, then name the image on the model version it serves
    (that version is read from MLflow while the push runs: for an image found in the cache
    by its reference, while the registry stores its manifest). Through the registry API,
    the version's tags are written once the registry acknowledged the manifest, while it is
    read back; a read-back that fails puts them back as they were before it raises."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from mlrig.core.image import _push_tags as image_push_tags

    hinted = image_cache.by_ref(image)  # built as this reference: no need to ask the engine
    if hinted is not None:
        labels: dict[str, str] | None = hinted.labels
    else:
        info = docker_adapter.image_info(image)
        labels = info.labels if info else None
    looking: list[Future[Any]] = []
    writing: list[Future[image_push_tags.Written | None]] = []
    with ThreadPoolExecutor(max_workers=1) as pool:

        def look_up() -> None:
            if labels is not None and not looking:
                looking.append(pool.submit(_look_up, outputs, labels))

        def looked_up(pushed: dict[str, str]) -> Future[Any] | None:
            """The read of the version, when it read the one the pushed image's labels name
            (the reference may have named another image than the cached one)."""
            return looking[0] if looking and pushed == labels else None

        def stored(reference: str, digest: str, pushed: dict[str, str]) -> None:
            if pushed == labels:
                look_up()
            args = (outputs, pushed, reference, digest, progress, looked_up(pushed))
            writing.append(pool.submit(image_push_tags.record, *args))

        if hinted is None:
            look_up()
        try:
            result = push_to(
                image,
                outputs.registry,
                owner=f"stack '{outputs.name}'",
                endpoint=endpoint,
                progress=progress,
                on_chunk=on_chunk,
                started=look_up,
                stored=stored,
            )
        except BaseException as exc:
            if writing:
                image_push_tags.undo(writing[0], exc)
            raise
        if writing:
            writing[0].result()
        else:
            image_push_tags.record(
                outputs,
                result.labels,
                result.reference,
                result.digest,
                progress,
                looked_up(result.labels),
            )
    return result


def _look_up(outputs: StackOutputs, labels: dict[str, str]) -> Any:
    from mlrig.core.image import (
        _push_tags as image_push_tags,  # imported off the main thread, meanwhile
    )

    return image_push_tags.look_up(outputs, labels)
