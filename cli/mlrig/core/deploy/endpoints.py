"""Deploy a model version by digest to an endpoint of the local stack, and change what it
serves: canary, promote, abort, rollback, delete; keys; status.

Order of every change: start and health-check the new container on its own port first,
then write nginx.conf (checked by `nginx -t` before it replaces the serving one) and reload
nginx gracefully, and only then stop the container that no longer gets traffic (after the
old workers drained). A failure before the reload removes what this command started and
leaves the previous config serving.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlrig import contract
from mlrig.adapters import docker as docker_adapter
from mlrig.adapters import nginx, processes
from mlrig.adapters.mlflow_rest import MlflowRest
from mlrig.adapters.registry_client import RegistryClient
from mlrig.contract import StackOutputs
from mlrig.core.deploy import _keys, _render
from mlrig.core.deploy.state import Backend, Endpoint, Proxy, Store, check_name
from mlrig.core.image import run as image_run
from mlrig.core.provenance import record as p
from mlrig.core.shared import capture as capture_contract
from mlrig.core.shared import secrets
from mlrig.core.shared.files import PRIVATE_UMASK, private_dir
from mlrig.core.shared.progress import Progress
from mlrig.core.stack import env as stack_env
from mlrig.core.stack import stacks
from mlrig.core.stack.local.stack import free_port, port_is_free
from mlrig.core.stack.local.state import Layout
from mlrig.errors import MlrigError, PortInUse, ServiceError, UsageError
from mlrig.wait import Abandoned, WaitTimeout, wait_until

HEALTH_TIMEOUT = 120.0
MEMORY = 1024**3
_REF = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))")


@dataclass(frozen=True)
class Site:
    """One local stack's endpoints: its layout, outputs and state store."""

    layout: Layout
    outputs: StackOutputs
    store: Store

    @classmethod
    def open(cls, stack: str | None) -> Site:
        name = stacks.resolve_name(stack)
        outputs = stacks.outputs(name)
        if outputs.kind != "local":
            raise UsageError(
                f"stack '{name}' is an AWS stack: `mlrig deploy` serves on the local stack "
                "only so far",
                hint="pass --stack with a local stack",
            )
        layout = Layout(name)
        return cls(layout, outputs, Store(layout.root))

    def url(self, name: str) -> str | None:
        proxy = self.store.proxy()
        return f"http://127.0.0.1:{proxy.port}/endpoints/{name}" if proxy else None

    def rest(self) -> MlflowRest:
        return MlflowRest.from_env(stack_env.client_env(self.outputs))


# -- resolving what to deploy --------------------------------------------------------------
def default_ref(repo: Path) -> str:
    from mlrig.core.shared.names import load_answers
    from mlrig.paths import ANSWERS_FILE

    answers = repo / ANSWERS_FILE
    if not answers.is_file():
        raise UsageError(
            f"no REF given and {repo} is not an mlrig-generated repo (no {ANSWERS_FILE})",
            hint="pass REF: models:/NAME@champion or models:/NAME/VERSION",
        )
    return f"models:/{load_answers(answers)['project_name']}@champion"


@dataclass(frozen=True)
class Target:
    model: str
    version: str
    digest: str
    image: str  # host/repository@digest
    run_id: str | None = None


def resolve(site: Site, ref: str) -> Target:
    """The version REF names and the image its push recorded, verified in the registry."""
    match = _REF.fullmatch(ref)
    if not match:
        raise UsageError(
            f"REF {ref!r} is not models:/NAME/VERSION or models:/NAME@ALIAS",
            hint="for example models:/NAME@champion",
        )
    rest = site.rest()
    name = match.group("name")
    if match.group("version"):
        mv = rest.model_version(name, match.group("version"))
    else:
        mv = rest.model_version_by_alias(name, match.group("alias"))
    digest, repository = mv.tags.get(p.MV_IMAGE_DIGEST), mv.tags.get(p.MV_IMAGE_REPOSITORY)
    if not digest or not repository:
        raise UsageError(
            f"model version {mv.version} of {name} has no pushed image",
            hint=f"run `mlrig image build --model models:/{name}/{mv.version}` and "
            "`mlrig image push` first (deploy does not build yet)",
        )
    host, _, repo_path = repository.partition("/")
    reg = site.outputs.registry
    user = reg.auth.username if reg.auth else None
    password = secrets.resolve(reg.auth.password) if reg.auth else None
    client = RegistryClient(f"http://{host}", user, password)
    if client.manifest_digest(repo_path, digest) != digest:
        raise UsageError(
            f"image {repository}@{digest} of model version {mv.version} is not in stack "
            f"'{site.outputs.name}''s registry",
            hint="push it again with `mlrig image push`",
        )
    return Target(name, mv.version, digest, f"{repository}@{digest}", mv.run_id)


def _local_image(site: Site, target: Target) -> str:
    """An engine image whose content is the digest's: the image whose ID is the manifest's
    config digest (it pins every layer), else the digest pulled from the registry."""
    host, _, repo_path = target.image.split("@", 1)[0].partition("/")
    reg = site.outputs.registry
    auth = (reg.auth.username, secrets.resolve(reg.auth.password)) if reg.auth else None
    client = RegistryClient(f"http://{host}", *(auth or (None, None)))
    config = client.config_digest(repo_path, target.digest)
    if config and docker_adapter.image_info(config) is not None:
        return config
    if docker_adapter.pull(target.image, auth=auth):
        return target.image
    raise ServiceError(f"the engine could not pull {target.image}")


# -- containers ----------------------------------------------------------------------------
def captures_dir(site: Site, endpoint: str) -> Path:
    """Where an endpoint's containers write captured records (the monitor reads them)."""
    return site.layout.root / "captures" / endpoint


def _start(
    site: Site, endpoint: str, target: Target, progress: Progress, capture: int = 0
) -> Backend:
    """A container of target on a free loopback port, healthy (its own /ping) or removed;
    with capture, its records go to the endpoint's captures folder, bind-mounted."""
    docker_adapter.client()  # "no Docker engine answers" first
    image = _local_image(site, target)
    port = free_port()
    name = f"mlrig-ep-{site.layout.name}-{endpoint}-v{target.version}-{port}"
    env = {"PORT": str(port), "HOST": "127.0.0.1"}
    binds: dict[str, str] = {}
    user: str | None = None
    if capture:
        run_id = target.run_id or site.rest().model_version(target.model, target.version).run_id
        ident = capture_contract.identity(
            endpoint=endpoint,
            model=target.model,
            version=target.version,
            digest=target.digest,
            run_id=run_id,
        )
        env |= capture_contract.container_env(capture, ident)
        private_dir(site.layout.root / "captures")
        folder = captures_dir(site, endpoint)
        info = docker_adapter.image_info(image)
        user = capture_contract.writable_folder(folder, info.user if info else "")
        binds = {str(folder): capture_contract.MOUNT_POINT}
        target = Target(target.model, target.version, target.digest, target.image, run_id)
    progress(
        f"starting version {target.version} of {target.model} on 127.0.0.1:{port}"
        + (f", capturing {capture}% of predictions" if capture else "")
    )
    container = docker_adapter.run_container(
        image,
        name=name,
        environment=env,
        memory_bytes=MEMORY,
        binds=binds,
        user=user,
    )
    try:
        _wait_healthy(container, port)
    except BaseException:
        docker_adapter.remove_container(container)
        raise
    return Backend(
        model=target.model,
        version=target.version,
        digest=target.digest,
        image=target.image,
        container=name,
        port=port,
        weight=100,
        since=datetime.now(UTC),
        run_id=target.run_id,
        capture=capture,
    )


def _wait_healthy(container: str, port: int) -> None:
    try:
        image_run.wait_serving(
            container,
            f"http://127.0.0.1:{port}",
            HEALTH_TIMEOUT,
            "the model container to answer /ping",
        )
    except (WaitTimeout, Abandoned) as exc:
        logs = docker_adapter.container_logs(container, tail=3).strip().splitlines()
        why = "exited" if isinstance(exc, Abandoned) else "never answered /ping"
        raise ServiceError(
            f"the new model container {why}: {logs[-1] if logs else 'no output'}; "
            "the previous version keeps serving"
        ) from None


def _stop(backend: Backend) -> None:
    """SIGTERM first (the server writes the records it still holds), then remove."""
    import contextlib

    with contextlib.suppress(Exception):
        docker_adapter.stop_container(backend.container)
    with contextlib.suppress(Exception):
        docker_adapter.remove_container(backend.container)


# -- the proxy -----------------------------------------------------------------------------
def _ensure_proxy(site: Site, progress: Progress) -> Proxy:
    """The stack's nginx master, started (port chosen once, then kept) when not running."""
    nginx.binary()  # one line naming the package when it is missing
    store, layout = site.store, site.layout
    proxy = store.proxy()
    if proxy is None:
        proxy = Proxy(port=free_port())
        store.write_proxy(proxy)
    st, _ = processes.status(layout.pid_file("nginx"))
    if st == processes.Status.RUNNING:
        return proxy
    if not port_is_free(proxy.port):
        raise PortInUse(
            f"port {proxy.port} for the endpoints of stack '{layout.name}' is taken",
            hint=f"stop what holds it (`ss -ltnp 'sport = :{proxy.port}'`); the stack keeps "
            "its port",
        )
    _write_conf(site, proxy)
    progress(f"starting nginx on 127.0.0.1:{proxy.port}")
    rec = processes.start(
        nginx.argv(store.conf, store.folder, layout.log_file("nginx-error")),
        pid_file=layout.pid_file("nginx"),
        log_file=layout.log_file("nginx"),
        cwd=layout.root,
        umask=PRIVATE_UMASK,
    )
    try:
        wait_until(
            lambda: not port_is_free(proxy.port),
            timeout=10,
            what="nginx to listen",
            interval=0.02,
            give_up=lambda: "exited" if processes.exited_early(rec) else None,
        )
    except (WaitTimeout, Abandoned):
        processes.stop(layout.pid_file("nginx"))
        raise ServiceError(
            f"nginx did not start: {processes.tail(layout.log_file('nginx'), 2) or 'no output'}",
            hint=f"its log: {layout.log_file('nginx-error')}",
        ) from None
    return proxy


def _write_conf(
    site: Site, proxy: Proxy, override: Endpoint | None = None, drop: str | None = None
) -> None:
    """nginx.conf for the endpoints (override replaces its namesake, or is added; drop is
    left out), checked by `nginx -t` before it replaces the serving one; a refused config
    changes nothing."""
    store, layout = site.store, site.layout
    private_dir(layout.run_dir)
    gone = {drop, override.name if override else None}
    eps = [e for e in store.all() if e.name not in gone]
    if override is not None:
        eps.append(override)
    text = _render.render(
        proxy.port,
        eps,
        store.folder,
        layout.run_dir,
        layout.log_file("nginx-error"),
        user=_root_user(),
    )
    candidate = store.folder / "nginx.conf.next"
    contract.atomic_write(candidate, text, mode=0o600)
    refused = nginx.check(candidate, store.folder, layout.log_file("nginx-error"))
    if refused:
        candidate.unlink(missing_ok=True)
        raise ServiceError(f"nginx refused the new config ({refused}); the old one keeps serving")
    os.replace(candidate, store.conf)


def _root_user() -> str | None:
    """The workers' user when mlrig runs as root: root's own name (see `_render.render`)."""
    import pwd

    return pwd.getpwuid(0).pw_name if os.geteuid() == 0 else None


def _apply(site: Site, ep: Endpoint | None, name: str, progress: Progress) -> set[int]:
    """Write the endpoint's keys and state into nginx and reload; the old workers (drain
    them before stopping a container they may still be talking to)."""
    store = site.store
    with store.proxy_lock():
        proxy = _ensure_proxy(site, progress)
        if ep is not None:
            contract.atomic_write(store.htpasswd(name), _keys.htpasswd(ep.keys), mode=0o600)
        _write_conf(site, proxy, ep, drop=name)
        if ep is None:
            store.remove(name)
        else:
            store.write(ep)
        _, rec = processes.status(site.layout.pid_file("nginx"))
        if rec is None:
            raise ServiceError("nginx is not running")
        return nginx.reload(rec.pid)


def _retire(old: set[int], backends: list[Backend]) -> None:
    nginx.drained(old)
    for b in backends:
        _stop(b)


def _record(site: Site, name: str, b: Backend, what: str) -> None:
    """The version serves this endpoint: an alias per endpoint and a tag (best effort)."""
    import contextlib

    with contextlib.suppress(MlrigError):
        rest = site.rest()
        rest.set_alias(b.model, f"endpoint-{name}", b.version)
        stamp = f"{what} {datetime.now(UTC).isoformat(timespec='seconds')}"
        rest.set_model_version_tag(b.model, b.version, f"mlrig.endpoint.{name}", stamp)


# -- the commands --------------------------------------------------------------------------
@dataclass(frozen=True)
class Deployed:
    endpoint: Endpoint
    url: str
    key: str | None  # ID:SECRET, shown once (a new endpoint's first key)


def deploy(
    ref: str | None,
    *,
    endpoint: str | None = None,
    stack: str | None = None,
    canary: int | None = None,
    public: bool = False,
    capture: int | None = None,
    progress: Progress = lambda _m: None,
) -> Deployed:
    """capture: the endpoint's capture percent from now on (None keeps its setting; a new
    endpoint's is 0, off); the containers this command starts capture that share."""
    capture_contract.check_percent(capture)
    site = Site.open(stack)
    ref = ref or default_ref(Path.cwd())
    target = resolve(site, ref)
    name = check_name(endpoint or target.model)
    if canary is not None and not 1 <= canary <= 99:
        raise UsageError(f"--canary {canary} is not a share", hint="pass 1-99 (percent)")
    with site.store.lock(name):
        ep = site.store.read(name)
        if canary is not None and (ep is None or not ep.backends):
            raise UsageError(
                f"endpoint {name!r} serves nothing yet: a canary needs a version to compare to",
                hint="deploy without --canary first",
            )
        if ep is not None and ep.canary is not None:
            raise UsageError(
                f"endpoint {name!r} has a canary (version {ep.canary.version})",
                hint=f"`mlrig deploy promote {name}` or `mlrig deploy abort {name}` first",
            )
        share = capture if capture is not None else (ep.capture if ep else 0)
        new = _start(site, name, target, progress, share)
        key = None
        try:
            if ep is None:
                record, key = _keys.new_key()
                ep = Endpoint(
                    name=name,
                    public=public,
                    backends=[new],
                    keys=[] if public else [record],
                    created_at=datetime.now(UTC),
                    capture=share,
                )
                if public:
                    key = None
                old_backends: list[Backend] = []
                nxt = ep
            elif canary is not None:
                stable = ep.backends[0].model_copy(update={"weight": 100 - canary})
                nxt = ep.model_copy(
                    update={
                        "backends": [stable, new.model_copy(update={"weight": canary})],
                        "capture": share,
                    }
                )
                old_backends = []
            else:
                old_backends = list(ep.backends)
                nxt = ep.model_copy(
                    update={
                        "backends": [new],
                        "previous": ep.backends[0],
                        "public": ep.public or public,
                        "capture": share,
                    }
                )
            old = _apply(site, nxt, name, progress)
        except BaseException:
            _stop(new)
            raise
        _retire(old, old_backends)
        if canary is None:
            _record(site, name, new, "deployed")
    return Deployed(nxt, site.url(name) or "", key)


def promote(
    name: str, *, stack: str | None = None, progress: Progress = lambda _m: None
) -> Endpoint:
    site = Site.open(stack)
    with site.store.lock(check_name(name)):
        ep = site.store.get(name)
        if ep.canary is None:
            raise UsageError(f"endpoint {name!r} has no canary to promote")
        stable, canary = ep.backends
        nxt = ep.model_copy(
            update={
                "backends": [canary.model_copy(update={"weight": 100, "since": datetime.now(UTC)})],
                "previous": stable.model_copy(update={"weight": 100}),
            }
        )
        old = _apply(site, nxt, name, progress)
        _retire(old, [stable])
        _record(site, name, canary, "promoted")
    return nxt


def abort(name: str, *, stack: str | None = None, progress: Progress = lambda _m: None) -> Endpoint:
    site = Site.open(stack)
    with site.store.lock(check_name(name)):
        ep = site.store.get(name)
        if ep.canary is None:
            raise UsageError(f"endpoint {name!r} has no canary to abort")
        stable, canary = ep.backends
        nxt = ep.model_copy(update={"backends": [stable.model_copy(update={"weight": 100})]})
        old = _apply(site, nxt, name, progress)
        _retire(old, [canary])
    return nxt


def rollback(
    name: str,
    *,
    to: str | None = None,
    stack: str | None = None,
    progress: Progress = lambda _m: None,
) -> Endpoint:
    """Back to the previous version (or REF's): its pushed image by digest, no rebuild."""
    site = Site.open(stack)
    with site.store.lock(check_name(name)):
        ep = site.store.get(name)
        if ep.canary is not None:
            raise UsageError(
                f"endpoint {name!r} has a canary", hint=f"`mlrig deploy abort {name}` instead"
            )
        if to is not None:
            target = resolve(site, to)
        elif ep.previous is not None:
            prev = ep.previous
            target = Target(prev.model, prev.version, prev.digest, prev.image, prev.run_id)
        else:
            raise UsageError(f"endpoint {name!r} has no previous version", hint="pass --to REF")
        new = _start(site, name, target, progress, ep.capture)
        try:
            nxt = ep.model_copy(update={"backends": [new], "previous": ep.backends[0]})
            old = _apply(site, nxt, name, progress)
        except BaseException:
            _stop(new)
            raise
        _retire(old, ep.backends)
        _record(site, name, new, "rolled back")
    return nxt


def delete(name: str, *, stack: str | None = None, progress: Progress = lambda _m: None) -> None:
    site = Site.open(stack)
    with site.store.lock(check_name(name)):
        ep = site.store.get(name)
        old = _apply(site, None, name, progress)
        _retire(old, ep.backends)
        import contextlib

        with contextlib.suppress(MlrigError):
            for b in ep.backends:
                site.rest().delete_alias(b.model, f"endpoint-{name}")


def _capture_stats(b: Backend) -> dict[str, object] | None:
    """The container's capture counters (GET /capture on its loopback port), or None when
    it does not capture or does not answer."""
    if not b.capture:
        return None
    from mlrig.adapters import http

    try:
        resp = http.send_json(
            "GET", f"http://127.0.0.1:{b.port}{capture_contract.STATS_PATH}", timeout=2
        )
    except OSError:
        return None
    stats = capture_contract.parse_stats(resp.text) if resp.status == 200 else None
    return stats.model_dump() if stats else None


def status(name: str | None = None, *, stack: str | None = None) -> list[dict[str, object]]:
    """Each endpoint: URL, public flag, capture, and per backend version, digest, since,
    share and its container's capture counters."""
    site = Site.open(stack)
    eps = [site.store.get(name)] if name else site.store.all()
    running = processes.status(site.layout.pid_file("nginx"))[0] == processes.Status.RUNNING
    return [
        {
            "endpoint": ep.name,
            "url": f"{site.url(ep.name)}/invocations",
            "public": ep.public,
            "proxy": "running" if running else "stopped",
            "keys": [k.id for k in ep.keys],
            "serving": [
                {
                    "model": b.model,
                    "version": b.version,
                    "digest": b.digest,
                    "since": b.since.isoformat(timespec="seconds"),
                    "traffic": b.weight,
                    "container": b.container,
                    "capture": b.capture,
                    "captured": _capture_stats(b),
                }
                for b in ep.backends
            ],
            "previous": ep.previous.version if ep.previous else None,
            "capture": ep.capture,
            "captures": str(captures_dir(site, ep.name)),
        }
        for ep in eps
    ]


def create_key(name: str, *, stack: str | None = None) -> str:
    site = Site.open(stack)
    with site.store.lock(check_name(name)):
        ep = site.store.get(name)
        record, shown = _keys.new_key()
        nxt = ep.model_copy(update={"keys": [*ep.keys, record]})
        _apply(site, nxt, name, lambda _m: None)
    return shown


def list_keys(name: str, *, stack: str | None = None) -> list[dict[str, str]]:
    ep = Site.open(stack).store.get(check_name(name))
    return [{"id": k.id, "created_at": k.created_at.isoformat(timespec="seconds")} for k in ep.keys]


def revoke_key(name: str, key_id: str, *, stack: str | None = None) -> None:
    site = Site.open(stack)
    with site.store.lock(check_name(name)):
        ep = site.store.get(name)
        if key_id not in {k.id for k in ep.keys}:
            raise UsageError(
                f"endpoint {name!r} has no key {key_id!r}",
                hint=f"see its keys with `mlrig deploy keys list {name}`",
            )
        nxt = ep.model_copy(update={"keys": [k for k in ep.keys if k.id != key_id]})
        _apply(site, nxt, name, lambda _m: None)
