"""Run a serving image locally until it is healthy, and smoke-check it with the model's own
input example (`mlrig image run [--smoke]`).

The server has no authentication, so it binds 127.0.0.1 unless the user names another
address, and its memory is capped so one large request cannot take the host down; the engine
restarts it if it is killed anyway (restart policy unless-stopped), and `status` says so.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters import http
from mlrig.core.image.last_built import last_built
from mlrig.core.provenance import record as p
from mlrig.core.shared import capture as capture_contract
from mlrig.core.shared.files import private_dir
from mlrig.errors import Conflict, MlrigError, PortInUse, ServiceError, UsageError
from mlrig.wait import Abandoned, WaitTimeout, wait_until

EXAMPLE_FILE = "/opt/model/serving_input_example.json"
MAX_EXAMPLE_BYTES = 8 << 20  # an input example is a few rows
DEFAULT_HOST = "127.0.0.1"
DEFAULT_MEMORY = "1g"
_MEMORY = re.compile(r"^(?P<n>\d+)(?P<unit>[bkmg]?)$")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MIN_MEMORY = 6 << 20  # the engine refuses less
NAME_PREFIX = "mlrig-serve-"


@dataclass(frozen=True)
class Running:
    container: str
    url: str  # where this machine reaches it
    seconds_to_healthy: float
    smoke_predictions: list[Any] | None = None
    bind: str = f"{DEFAULT_HOST}:8080"  # the address the server listens on
    memory_bytes: int = 0
    captures: Path | None = None  # where captured records go (None: capture off)


def memory_bytes(text: str) -> int:
    """`512m`, `1g`, `2048k`, `1073741824` (docker's units, case-insensitive) in bytes."""
    match = _MEMORY.match(text.strip().lower())
    if not match:
        raise UsageError(
            f"--memory {text!r} is not a size", hint="use a number with b, k, m or g, e.g. 1g"
        )
    size = int(match["n"]) * _UNITS[match["unit"]]
    if size < MIN_MEMORY:
        raise UsageError(f"--memory {text!r} is below the engine's minimum of 6m")
    return size


def bind_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """--host must be an IP address of this machine (0.0.0.0 or :: for every interface)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(
            f"--host {host!r} is not an IP address",
            hint="use 127.0.0.1 (the default), an address of this machine, or 0.0.0.0 to "
            "listen on every interface",
        ) from None


def _local_url(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    """How this machine reaches a server bound to addr (a wildcard: through loopback)."""
    if addr.is_unspecified:
        addr = ipaddress.ip_address("::1" if addr.version == 6 else "127.0.0.1")
    host = f"[{addr}]" if addr.version == 6 else str(addr)
    return f"http://{host}:{port}"


def _port_free(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((str(addr), port))
        except OSError:
            return False
    return True


def capture_setup(
    ref: str, percent: int, folder: Path
) -> tuple[dict[str, str], dict[str, str], str | None]:
    """(env, binds, user) for a container of ref capturing percent of its predictions into
    folder: the record's identity from the image's labels, the digest it was pushed as (its
    ID when it was never pushed)."""
    info = docker_adapter.image_info(ref)
    if info is None:
        raise UsageError(f"image {ref} does not exist on this engine")
    digest = next((d.rsplit("@", 1)[1] for d in info.repo_digests if "@sha256:" in d), info.id)
    ident = capture_contract.identity(
        endpoint=None,
        model=info.labels.get(p.LABEL_MODEL_NAME),
        version=info.labels.get(p.LABEL_MODEL_VERSION),
        digest=digest,
        run_id=info.labels.get(p.LABEL_RUN_ID),
    )
    private_dir(folder.parent)
    user = capture_contract.writable_folder(folder, info.user)
    env = capture_contract.container_env(percent, ident)
    return env, {str(folder): capture_contract.MOUNT_POINT}, user


def _example(container: str) -> bytes:
    example = docker_adapter.read_container_file(container, EXAMPLE_FILE, MAX_EXAMPLE_BYTES)
    if example is None:
        raise UsageError(
            "the model in this image has no input example, so --smoke cannot check it",
            hint="log the model with input_example=...",
        )
    return example


def smoke_check(url: str, example: bytes, what: str = "its own input example") -> list[Any]:
    """POST the model's own input example (what: how to name the body in an error); the
    answer must be one prediction per row."""
    resp = http.post(f"{url}/invocations", example, content_type="application/json", timeout=30)
    if resp.status != 200:
        raise ServiceError(f"the model answered {resp.status} to {what}: {resp.text[:200]}")
    try:
        preds = resp.json().get("predictions")
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
        raise ServiceError(f"unexpected answer to the input example: {resp.text[:200]}") from None
    doc = json.loads(example)  # the server just accepted it as JSON, at most 64 levels deep
    doc = doc if isinstance(doc, dict) else {}
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


def describe(name: str, state: docker_adapter.ContainerState) -> str:
    """One line on a serving container: its state, and a memory kill or restarts if any."""
    line = f"{name} {state.status}"
    if state.oom_killed:
        limit = f" {state.memory_bytes / 2**20:.0f} MiB" if state.memory_bytes else ""
        line += f"; killed for using more than its{limit} memory limit (exit 137)"
    elif state.status in ("exited", "dead") and state.exit_code:
        line += f" with code {state.exit_code}"
    if state.restarts:
        line += f"; restarted {state.restarts} time{'s' if state.restarts > 1 else ''}"
    return line


def status() -> list[tuple[str, docker_adapter.ContainerState]]:
    """Every serving container `run` started on this engine, running or not, by name."""
    return sorted(docker_adapter.container_states(NAME_PREFIX).items())


def wait_serving(container: str, url: str, timeout: float, what: str) -> None:
    """Wait until the serving container answers url/ping: Abandoned as soon as it exits or
    the engine restarts it (under the restart policy a crash is "restarting", or running
    again with a count), WaitTimeout after timeout. `image run` and `deploy` both wait so."""

    def exited() -> str | None:
        state = docker_adapter.container_state(container)
        return "exited" if state.status != "running" or state.restarts else None

    wait_until(
        lambda: http.status(f"{url}/ping", timeout=1) == 200,
        timeout=timeout,
        what=what,
        interval=0.05,
        retry_on=(OSError,),
        give_up=exited,
    )


def _wait_healthy(ref: str, container: str, url: str, timeout: float) -> None:
    try:
        wait_serving(container, url, timeout, f"{ref} to answer /ping")
    except WaitTimeout as exc:
        raise ServiceError(f"{ref} did not become healthy within {exc.timeout:g} s") from None
    except Abandoned:
        raise ServiceError(f"{ref} exited before it became healthy") from None


def _diagnosis(container: str, lines: int = 3) -> tuple[bool, str]:
    """(killed for memory?, last log lines on one line): what the user needs once the
    container is gone. Best effort: the error being reported matters more."""
    try:
        oom = docker_adapter.container_state(container).oom_killed
        logs = docker_adapter.container_logs(container, tail=20)
    except Exception:  # noqa: BLE001 - the engine may have lost the container already
        return False, "its log could not be read"
    last = [ln.strip() for ln in logs.splitlines() if ln.strip()][-lines:]
    return oom, " | ".join(last)[-400:] if last else "no output"


def _after_failure(exc: MlrigError, container: str, name: str, keep: bool) -> None:
    """Complete the error with what the user needs once the container is gone: a failing
    server's log tail, and a hint that works (the container is removed unless --keep)."""
    hints = [exc.hint] if exc.hint else []
    if isinstance(exc, ServiceError):
        oom, tail = _diagnosis(container)
        if oom:
            exc.message += " (killed for using more than its --memory limit)"
            hints.append("pass a larger --memory")
        exc.message = f"{exc.message}; container log: {tail}"
    if keep:
        hints.append(f"container kept: `docker logs {name}`, then `docker rm -f {name}`")
    else:
        docker_adapter.remove_container(container)
        if isinstance(exc, ServiceError):
            hints.append("rerun with --keep to keep the container for `docker logs`")
    exc.hint = "; ".join(hints) or None


def run(
    image: str | None = None,
    *,
    port: int = 8080,
    host: str = DEFAULT_HOST,
    memory: str = DEFAULT_MEMORY,
    smoke: bool = False,
    keep: bool = False,
    timeout: float = 120.0,
    capture: int = 0,
    capture_dir: Path | None = None,
) -> Running:
    """Start the image on host networking (never pulls), bound to host:port with at most
    `memory`, and wait until it is healthy. With keep, a failed start stays for inspection.
    capture: the share of predictions recorded under capture_dir (default ./captures)."""
    capture_contract.check_percent(capture)
    addr = bind_address(host)
    limit = memory_bytes(memory)
    if not 1024 <= port <= 65535:
        raise UsageError(f"port {port} is out of range", hint="pick 1024-65535")
    ref = image or last_built()
    docker_adapter.client()  # raises "no Docker engine answers" first
    if not docker_adapter.image_exists(ref):
        raise UsageError(
            f"image {ref} does not exist on this engine",
            hint="build it with `mlrig image build` (run never pulls)",
        )
    name = f"{NAME_PREFIX}{port}"
    existing = docker_adapter.container_states(name).get(name)
    if existing is not None:
        raise Conflict(
            f"a container named {name} already exists: {describe(name, existing)}",
            hint=f"remove it with `docker rm -f {name}`, or pass another --port",
        )
    if not _port_free(addr, port):
        raise PortInUse(
            f"port {port} on {addr} is already in use", hint="pass --port with a free one"
        )
    env = {"PORT": str(port), "HOST": str(addr)}
    binds: dict[str, str] = {}
    user: str | None = None
    captures = None
    if capture:
        captures = (capture_dir or Path("captures")).absolute()
        extra, binds, user = capture_setup(ref, capture, captures)
        env |= extra
    start = time.monotonic()
    container = docker_adapter.run_container(
        ref, name=name, environment=env, memory_bytes=limit, binds=binds, user=user
    )
    url = _local_url(addr, port)
    try:
        _wait_healthy(ref, container, url, timeout - (time.monotonic() - start))
        healthy = time.monotonic() - start
        preds = smoke_check(url, _example(container)) if smoke else None
    except MlrigError as exc:
        _after_failure(exc, container, name, keep)
        raise
    except BaseException:
        docker_adapter.remove_container(container)
        raise
    if smoke and not keep:
        docker_adapter.remove_container(container)
    bind = f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"
    return Running(name, url, healthy, preds, bind, limit, captures)
