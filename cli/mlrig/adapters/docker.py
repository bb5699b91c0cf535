"""docker-py behind one door: lazy import, API version negotiation, stream error checks.

docker-py does not raise when a build or push stream reports an error; `consume_stream`
does, so no caller can report success for a failed build or push.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mlrig.errors import Conflict, DependencyMissing, RemoteError, ServiceError, UsageError

ENGINE_HINT = "start it with `scripts/setup.sh` (as root) or `mlrig setup engine`"


@cache
def client() -> Any:
    """A DockerClient that negotiates the API version with whatever engine answers."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - hard dependency
        raise DependencyMissing("docker-py is not installed", hint="pip install docker") from exc
    try:
        cli = docker.from_env(version="auto", timeout=300)
        cli.ping()
    except Exception as exc:  # docker.errors.DockerException and requests errors alike
        raise ServiceError("no Docker engine answers", hint=ENGINE_HINT) from exc
    return cli


def engine_version() -> str | None:
    try:
        return str(client().version().get("Version"))
    except ServiceError:
        return None


def image_exists(ref: str) -> bool:
    import docker.errors

    try:
        client().images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise _bad_reference(ref, exc) from exc
    return True


def _bad_reference(ref: str, exc: Exception) -> Exception:
    """The engine's 400 for a malformed name as a usage error; anything else as is."""
    if getattr(exc, "status_code", None) == 400:
        reason = str(getattr(exc, "explanation", "") or exc).rsplit(": ", 1)[-1]
        return UsageError(
            f"{ref!r} is not a valid image reference ({reason})",
            hint="use NAME[:TAG] in lowercase, e.g. mlrig/churn:v3",
        )
    return exc


def consume_stream(
    chunks: Iterable[dict[str, Any]],
    action: str,
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Read a decoded build/push/pull stream to the end, raising on any error chunk."""
    seen = []
    for chunk in chunks:
        seen.append(chunk)
        if on_chunk:
            on_chunk(chunk)
        err = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
        if err:
            raise RemoteError(f"{action} failed: {str(err).strip().splitlines()[-1]}")
    return seen


def pull(ref: str, auth: tuple[str, str] | None = None) -> bool:
    """Try to pull ref (as user, password when given); False when the registry cannot be
    reached (offline machines)."""
    creds = {"auth_config": {"username": auth[0], "password": auth[1]}} if auth else {}
    try:
        consume_stream(client().api.pull(ref, stream=True, decode=True, **creds), f"pulling {ref}")
    except Exception:  # noqa: BLE001 - any failure means "not available here"
        return False
    return True


OnChunk = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ImageInfo:
    id: str
    size: int
    labels: dict[str, str]
    repo_digests: tuple[str, ...] = ()  # host/repository@sha256:... it was pushed as
    user: str = ""  # the user its containers run as (Config.User; empty: root)


def image_info(ref: str) -> ImageInfo | None:
    """ID, size and labels of an image on the engine, or None when it has no such image."""
    import docker.errors

    try:
        info = client().api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise _bad_reference(ref, exc) from exc
    labels = (info.get("Config") or {}).get("Labels") or {}
    digests = tuple(str(d) for d in info.get("RepoDigests") or ())
    user = str((info.get("Config") or {}).get("User") or "")
    return ImageInfo(str(info["Id"]), int(info.get("Size", 0)), dict(labels), digests, user)


def image_by_digest(digest: str) -> ImageInfo | None:
    """The engine's image pushed or pulled as some repository@digest (a manifest digest,
    which the engine does not accept as an image name on its own), or None."""
    for img in client().api.images():
        if any(str(d).endswith(f"@{digest}") for d in img.get("RepoDigests") or ()):
            return image_info(str(img["Id"]))
    return None


def _aux(chunks: list[dict[str, Any]], key: str) -> str | None:
    """The last `aux` value named key in a stream (the image ID of a build, a push's digest)."""
    return next(
        (
            str(c["aux"][key])
            for c in reversed(chunks)
            if isinstance(c.get("aux"), dict) and key in c["aux"]
        ),
        None,
    )


def build_image(
    context: Path,
    *,
    tag: str,
    labels: dict[str, str],
    platform: str | None = None,
    no_cache: bool = False,
    on_chunk: OnChunk | None = None,
    buildargs: dict[str, str] | None = None,
) -> str | None:
    """Build context on host networking, never pulling; the image ID the stream reports."""
    kwargs: dict[str, Any] = {"platform": platform} if platform else {}
    if buildargs:
        kwargs["buildargs"] = buildargs
    stream = client().api.build(
        path=str(context),
        tag=tag,
        labels=labels,
        network_mode="host",
        rm=True,
        forcerm=True,
        decode=True,
        pull=False,
        nocache=no_cache,
        **kwargs,
    )
    return _aux(consume_stream(stream, f"building {tag}", on_chunk=on_chunk), "ID")


def tag_image(image: str, repository: str, tag: str) -> None:
    client().api.tag(image, repository, tag)


def remove_tag(ref: str) -> None:
    """Untag ref, keeping the image's layers (they stay as build cache)."""
    client().api.remove_image(ref, noprune=True)


def remove_image(image_id: str) -> None:
    """Delete an image and the layers only it uses; one already gone is no error."""
    import contextlib

    import docker.errors

    with contextlib.suppress(docker.errors.NotFound):
        client().api.remove_image(image_id)


def push_image(
    repository: str, tag: str, *, username: str, password: str, on_chunk: OnChunk | None = None
) -> str | None:
    """Push repository:tag with these registry credentials; the digest the engine reports."""
    stream = client().api.push(
        repository,
        tag=tag,
        stream=True,
        decode=True,
        auth_config={"username": username, "password": password},
    )
    return _aux(consume_stream(stream, f"pushing {repository}:{tag}", on_chunk=on_chunk), "Digest")


RESTART_POLICY = {"Name": "unless-stopped"}


def run_container(
    image: str,
    *,
    name: str,
    environment: dict[str, str],
    memory_bytes: int | None = None,
    labels: dict[str, str] | None = None,
    binds: dict[str, str] | None = None,
    user: str | None = None,
) -> str:
    """Start image detached on host networking (never pulls); the container's ID.
    memory_bytes caps its memory, swap included (the kernel OOM-kills it beyond); the
    engine restarts it after a kill or a crash until it is stopped or removed. binds mounts
    host folders (read-write) at container paths; user overrides the image's user."""
    import docker.errors

    limits: dict[str, Any] = (
        {"mem_limit": memory_bytes, "memswap_limit": memory_bytes} if memory_bytes else {}
    )
    if binds:
        limits["volumes"] = {host: {"bind": inside, "mode": "rw"} for host, inside in binds.items()}
    if user:
        limits["user"] = user
    try:
        container = client().containers.run(
            image,
            detach=True,
            name=name,
            network_mode="host",
            environment=environment,
            restart_policy=RESTART_POLICY,
            labels=labels or {},
            **limits,
        )
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            raise Conflict(
                f"a container named {name} already exists (kept from an earlier run?)",
                hint=f"remove it with `docker rm -f {name}`, or pass another --port",
            ) from exc
        raise ServiceError(f"starting {image} failed: {exc.explanation or exc}") from exc
    return str(container.id)


def container_status(container_id: str) -> str:
    """The container's state as the engine reports it now (running, exited, ...)."""
    return str(client().api.inspect_container(container_id)["State"]["Status"])


def container_logs(container_id: str, *, tail: int) -> str:
    return bytes(client().api.logs(container_id, tail=tail)).decode(errors="replace")


def container_log_lines(container_id: str, *, since: float, tail: int) -> list[tuple[str, str]]:
    """(RFC 3339 time the engine stamped, line) of a container's output since `since`
    (epoch seconds), its last `tail` lines at most; [] when there is no such container."""
    import docker.errors

    try:
        raw = client().api.logs(container_id, timestamps=True, since=int(since), tail=tail)
    except docker.errors.NotFound:
        return []
    found = []
    for line in bytes(raw).decode(errors="replace").splitlines():
        stamp, _, text = line.partition(" ")
        found.append((stamp, text))
    return found


def read_container_file(container_id: str, path: str, max_bytes: int | None = None) -> bytes | None:
    """The bytes of one file inside a container, or None when it has no such file; a file
    over max_bytes is refused before its bytes are read."""
    import io
    import posixpath
    import tarfile

    import docker.errors

    try:
        stream, stat = client().api.get_archive(container_id, path)
    except docker.errors.NotFound:
        return None
    size = int((stat or {}).get("size") or 0)
    if max_bytes is not None and size > max_bytes:
        raise UsageError(f"{path} in the container is {size} bytes, more than {max_bytes}")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile(posixpath.basename(path))
        return member.read() if member else b""


def stop_container(container_id: str, *, timeout: int = 10) -> None:
    """SIGTERM, then SIGKILL after timeout seconds (the server flushes what it holds)."""
    import contextlib

    import docker.errors

    with contextlib.suppress(docker.errors.NotFound):
        client().api.stop(container_id, timeout=timeout)


def remove_container(container_id: str) -> None:
    client().api.remove_container(container_id, force=True)


# --- a container run as a task runs (the rehearsal's): state, exec, memory peak ---


@dataclass(frozen=True)
class ContainerState:
    status: str  # created, running, exited, dead...
    exit_code: int | None
    oom_killed: bool  # the last exit was the kernel's memory kill (kept across a restart)
    restarts: int = 0  # how often the engine restarted it under its restart policy
    memory_bytes: int = 0  # its memory limit (0: none)


def container_state(container_id: str) -> ContainerState:
    return _state(client().api.inspect_container(container_id))


def _state(info: dict[str, Any]) -> ContainerState:
    state = info.get("State") or {}
    code = state.get("ExitCode")
    exit_code = None if code is None else int(code)
    return ContainerState(
        str(state.get("Status", "")),
        exit_code,
        bool(state.get("OOMKilled")),
        int(info.get("RestartCount") or 0),
        int((info.get("HostConfig") or {}).get("Memory") or 0),
    )


def container_states(name_prefix: str) -> dict[str, ContainerState]:
    """Every container, running or not, whose name starts with name_prefix: name -> state."""
    import docker.errors

    found = client().api.containers(all=True, filters={"name": f"^/{name_prefix}"})
    states = {}
    for summary in found:
        try:
            info = client().api.inspect_container(summary["Id"])
        except docker.errors.NotFound:  # removed since it was listed
            continue
        name = str(info.get("Name", "")).lstrip("/")
        if name.startswith(name_prefix):  # the engine's filter is a pattern, checked again
            states[name] = _state(info)
    return states


def exec_output(container_id: str, command: str) -> str:
    """Run command inside the running container; its standard output."""
    result = client().containers.get(container_id).exec_run(command)
    return bytes(result.output).decode()


def containers_labelled(labels: dict[str, str], *, running: bool = False) -> list[str]:
    """IDs of the containers carrying every one of these labels (each with its value):
    every one, running or not, or with running=True only those running (or starting)."""
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    return [str(c.id) for c in client().containers.list(all=not running, filters=filters)]


def import_image(tarball: Path, *, repository: str, tag: str, changes: list[str]) -> None:
    """Import a root filesystem tarball as repository:tag with Dockerfile-style changes."""
    client().api.import_image(src=str(tarball), repository=repository, tag=tag, changes=changes)


class MemorySampler(threading.Thread):
    """Peak of `docker stats` memory (usage minus inactive page cache, as the CLI shows it)."""

    def __init__(self, container_id: str) -> None:
        super().__init__(daemon=True)
        self.container_id, self.peak, self.samples = container_id, 0, 0
        self.max_usage = 0  # cgroup v1's high-water mark, page cache included (0 on v2)
        self._done = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(Exception):
            for stat in client().api.stats(self.container_id, stream=True, decode=True):
                mem = stat.get("memory_stats") or {}
                extra = mem.get("stats") or {}
                cache = extra.get("total_inactive_file", extra.get("inactive_file", 0))
                if "usage" in mem:
                    self.peak = max(self.peak, int(mem["usage"]) - int(cache))
                    self.max_usage = max(self.max_usage, int(mem.get("max_usage", 0)))
                    self.samples += 1
                if self._done.is_set():
                    return

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)


# --- containers run as tasks run (a remote retrain's on the local engine, the rehearsal's) ---


def run_task(
    image: str,
    *,
    command: list[str],
    user: str,
    environment: dict[str, str],
    memory_mib: int,
    cpu_units: int,
    labels: dict[str, str],
    network_mode: str = "host",
    name: str | None = None,
    init: bool = False,
    mounts: Sequence[tuple[str, str, bool]] = (),
    cpu_weight: bool = False,
) -> str:
    """Start image detached as an ECS task runs: its memory (swap included) and CPU (ECS
    units, 1024 a CPU) as hard limits, never restarted, kept after it exits for its exit
    code and log; the container's ID.

    name: Conflict when a container of that name exists (one task per name at a time).
    init: an init process as PID 1 forwards SIGTERM (python as PID 1 would ignore it).
    mounts: (host path, container path, read-only) bind mounts.
    cpu_weight: also weight its CPU against other containers', as ECS does a container's."""
    import docker.errors
    from docker.types import Mount

    options: dict[str, Any] = {}
    if name:
        options["name"] = name
    if init:
        options["init"] = True
    if mounts:
        options["mounts"] = [
            Mount(target=inside, source=host, type="bind", read_only=ro)
            for host, inside, ro in mounts
        ]
    if cpu_weight:
        options["cpu_shares"] = cpu_units
    try:
        container = client().containers.run(
            image,
            command=command,
            user=user,
            environment=environment,
            network_mode=network_mode,
            detach=True,
            mem_limit=f"{memory_mib}m",
            memswap_limit=f"{memory_mib}m",
            # Fargate's task CPU is a hard quota
            nano_cpus=cpu_units * 1_000_000_000 // 1024,
            labels=labels,
            **options,
        )
    except docker.errors.ImageNotFound as exc:
        raise UsageError(f"the image {image} is not on the engine") from exc
    except docker.errors.APIError as exc:
        if exc.status_code == 409 and name:
            raise Conflict(f"a container named {name} exists") from exc
        raise ServiceError(f"starting {image} failed: {exc.explanation or exc}") from exc
    return str(container.id)


def follow_log(container_id: str) -> Iterator[str]:
    """The container's output line by line from its start, until it stops; ServiceError
    when the engine's stream breaks before that."""
    import docker.errors

    try:
        stream = client().api.logs(container_id, stream=True, follow=True)
        pending = b""
        for chunk in stream:
            pending += bytes(chunk)
            *done, pending = pending.split(b"\n")
            for line in done:
                yield line.decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")
    except docker.errors.NotFound:
        return
    except Exception as exc:  # requests' and urllib3's errors alike: the stream broke
        raise ServiceError(f"following the log of {container_id[:12]} broke ({exc})") from exc


def container_labels(container_id: str) -> dict[str, str] | None:
    import docker.errors

    try:
        info = client().api.inspect_container(container_id)
    except docker.errors.NotFound:
        return None
    return dict((info.get("Config") or {}).get("Labels") or {})
