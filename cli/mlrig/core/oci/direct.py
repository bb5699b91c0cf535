"""Push a model image mlrig assembled (`oci.layer`, blobs in `oci.cache`) through the
registry API itself: its base's layers are in the repository already, so a new version is
its model layer, its config and its manifest.

On a basic-auth registry every request is a password check, so a push costs its number of
*sequential* requests. All that depends on nothing starts at once: the tag checks (which
also prove the credentials), the read of the base's manifest and both blob uploads (POST
then PUT each). Then the manifest is stored under each new tag and read back, tags side by
side: four requests one after another. The first push to a repository puts the serving base
there once, through the engine, as `serving-base-<12 hex of its ID>`; its manifest there is
remembered (`oci.cache`), so later pushes do not read it. A registry that lost the base's
layers since refuses the new manifest (MANIFEST_BLOB_UNKNOWN): the push forgets what it
remembered, reads (or pushes) the base again and stores the manifest once more.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters.registry import RegistryClient
from mlrig.core.oci import cache as image_cache
from mlrig.core.oci import layer as image_layer
from mlrig.core.oci.cache import Cached
from mlrig.core.oci.steps import (
    PushResult,
    Target,
    login,
    push_tag,
    retried,
    sorted_tags,
    verified,
)
from mlrig.core.shared.progress import Progress
from mlrig.errors import RemoteError

# A registry this push just reached that stops answering may be restarting: retried too.
UNREACHABLE = ("unreachable",)
# How a registry refuses a manifest whose layers it does not hold (OCI distribution spec).
STALE = "MANIFEST_BLOB_UNKNOWN"


def base_tag(base_id: str) -> str:
    return f"serving-base-{base_id.removeprefix('sha256:')[:12]}"


class _Reads:
    """The base's manifest read and both blob uploads, started together with one client.
    The base's manifest this repository held when a push last read it is taken from the
    cache instead of asked for: one password check fewer in the first round."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        client: RegistryClient,
        where: str,
        repository: str,
        cached: Cached,
        progress: Progress,
        stop: threading.Event,
    ) -> None:
        def run(what: str, call: Callable[[], Any]) -> Future[Any]:
            return pool.submit(retried, call, progress, what=what, also=UNREACHABLE, stop=stop)

        tag = base_tag(cached.base_id)
        self.remembered = image_cache.base_manifest(cached.base_id, where)
        self.base: Future[Any] | None = None  # the read, when nothing was remembered
        if self.remembered is None:
            self.base = run(f"reading {tag}", lambda: client.manifest(repository, tag))
        layer, config = cached.layer_path, cached.config  # the layer streams from its file
        self.uploads = [
            run("the layer", lambda: client.upload_blob(repository, cached.layer_digest, layer)),
            run("the config", lambda: client.upload_blob(repository, cached.image_id, config)),
        ]


def _base_manifest(
    got: tuple[bytes, str, str] | None,
    client: RegistryClient,
    target: Target,
    remote: str,
    cached: Cached,
    progress: Progress,
    on_chunk: Callable[[dict[str, Any]], None] | None,
) -> tuple[bytes, str] | None:
    """The base's manifest in the repository (bytes, media type) from `got`, the read of
    its tag, pushed there through the engine the first time; None when the tag holds
    something else than this base. Remembered for the next push to this repository."""
    tag = base_tag(cached.base_id)
    if got is None:
        progress(f"the serving base is not in {remote} yet: pushing it once as {tag}")
        push_tag(cached.base_id, remote, tag, target, progress, on_chunk)
        docker_adapter.remove_tag(f"{remote}:{tag}")  # the engine needs no name for it
        got = client.manifest(target.repository, tag)
    if got is None:
        raise RemoteError(f"{remote}:{tag} was pushed but the registry does not have it")
    doc = json.loads(got[0])
    if (doc.get("config") or {}).get("digest") != cached.base_id:
        progress(f"{remote}:{tag} holds another image: pushing through the engine")
        return None
    image_cache.remember_base_manifest(cached.base_id, remote, got[0], got[1])
    return got[0], got[1]


def push(
    image_id: str,
    labels: dict[str, str],
    tags: list[str],
    target: Target,
    cached: Cached,
    *,
    progress: Progress,
    on_chunk: Callable[[dict[str, Any]], None] | None,
    engine_id: Callable[[], str | None] | None = None,
    started: Callable[[], None] = lambda: None,
    stored: Callable[[str, str, dict[str, str]], None] = lambda _ref, _digest, _labels: None,
) -> PushResult | None:
    """Push through the registry API; None when the engine must push instead (the base's
    tag in the repository holds another image, or `engine_id`, asked on this thread while
    the registry work runs, names another image than the cached one: the reference moved
    since the build). `started` is called on this thread once the blobs are in and the
    manifest is being stored: what the caller does then overlaps the last requests.
    `stored(reference, digest, labels)` is called on this thread once the registry
    acknowledged the manifest under every new tag with this digest, while each is read back.
    Tags checked and conflicts raised as `serving_push.push_to` does; engine tags only
    once every new tag read back right."""
    stop = threading.Event()
    client = RegistryClient(target.api_base, target.username, target.password)
    pool = ThreadPoolExecutor(max_workers=4 + len(tags))
    with contextlib.ExitStack() as finish:
        finish.callback(lambda: pool.shutdown(wait=not moved, cancel_futures=True))
        moved = False
        checked = pool.submit(login, target, tags)
        remote = f"{target.host}/{target.repository}"
        reads = _Reads(pool, client, remote, target.repository, cached, progress, stop)
        try:
            if engine_id is not None and engine_id() != image_id:
                moved = True  # blobs already sent are harmless; nothing is tagged
                stop.set()
                progress(f"the engine's image is not {image_id[7:19]}, the one built as it")
                return None
            client, fresh, current = checked.result()
            remote = f"{fresh.host}/{fresh.repository}"
            unchanged, todo = sorted_tags(tags, current, image_id, remote)
            if not todo:  # every tag holds it already: report what the registry holds
                stop.set()
                digest = client.manifest_digest(fresh.repository, tags[0]) or ""
                return PushResult(f"{_name(fresh)}@{digest}", digest, [], unchanged, labels)
            if fresh is not target:  # an ECR token refreshed: what ran with the old one again
                reads = _Reads(pool, client, remote, fresh.repository, cached, progress, stop)
            base = reads.remembered  # checked against the base's ID when it was read
            if reads.base is not None:
                got = reads.base.result()
                base = _base_manifest(got, client, fresh, remote, cached, progress, on_chunk)
            if base is None:
                return None
            for upload in reads.uploads:
                upload.result()
        except BaseException:
            stop.set()
            raise

        def put(tag: str, body: bytes, media_type: str, digest: str) -> None:
            answered = retried(
                lambda: client.put_manifest(fresh.repository, tag, body, media_type),
                progress,
                what=f"tagging {tag}",
                also=UNREACHABLE,
                stop=stop,
            )
            if answered and answered != digest:
                raise RemoteError(
                    f"{remote}:{tag} was stored but the registry names digest {answered}, "
                    f"not {digest}",
                    hint="push again",
                )

        def put_all(base: tuple[bytes, str]) -> tuple[str, list[Future[None]]]:
            """The new manifest's digest, and its PUT under every new tag, started."""
            body = image_layer.manifest(
                base[0], cached.config, cached.layer_digest, cached.layer_size
            )
            digest = image_layer.sha256(body)
            return digest, [pool.submit(put, tag, body, base[1], digest) for tag in todo]

        digest, putting = put_all(base)
        # the caller's own work and this line's output run while the registry stores
        started()
        progress(f"pushing {remote}:{', '.join(todo)} (the model layer, {cached.layer_size} B)")
        try:
            for done in putting:
                done.result()
        except RemoteError as exc:
            if reads.remembered is None or STALE not in exc.message:
                raise
            # the registry lost the base's blobs since a push remembered its manifest
            image_cache.forget_base_manifest(cached.base_id, remote)
            progress(f"{remote} no longer holds the serving base's layers: reading it again")
            got = client.manifest(fresh.repository, base_tag(cached.base_id))
            again = _base_manifest(got, client, fresh, remote, cached, progress, on_chunk)
            if again is None:
                return None
            digest, putting = put_all(again)
            for done in putting:
                done.result()
        reading = [
            pool.submit(verified, client, fresh.repository, tag, digest, remote) for tag in todo
        ]
        stored(f"{_name(fresh)}@{digest}", digest, labels)
        for read in reading:
            read.result()
    for tag in todo:
        docker_adapter.tag_image(image_id, remote, tag)
    return PushResult(f"{_name(fresh)}@{digest}", digest, todo, unchanged, labels)


def _name(target: Target) -> str:
    return f"{target.name_host or target.host}/{target.repository}"
