"""Deploy a model version by digest to an endpoint of the local stack, and change what it
serves: canary, promote, abort, rollback, delete; keys; status.

Order of every change: start and health-check the new container on its own port first,
then write nginx.conf (checked by `nginx -t` before it replaces the serving one) and reload
nginx gracefully, and only then stop the container that no longer gets traffic (after the
old workers drained). A failure before the reload removes what this command started and
leaves the previous config serving.
"""

from __future__ import annotations

import contextlib
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
from mlrig.core.deploy import _audit, _images, _keys, _render, traffic
from mlrig.core.deploy.state import (
    Backend,
    Endpoint,
    Proxy,
    Store,
    check_canary,
    check_name,
    default_name,
)
from mlrig.core.image import run as image_run
from mlrig.core.shared import capture as capture_contract
from mlrig.core.shared import rotation, secrets
from mlrig.core.shared.files import PRIVATE_UMASK, private_dir, private_umask
from mlrig.core.shared.progress import Progress
from mlrig.core.stack import env as stack_env
from mlrig.core.stack import stacks
from mlrig.core.stack.local import access_logs
from mlrig.core.stack.local.stack import ENDPOINT_LABEL, free_port, port_is_free
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
            # every `mlrig deploy` verb and `trace endpoint:` pick the AWS code by the
            # stack's kind (backend.for_stack); what still lands here is local-only (the demo)
            raise UsageError(
                f"stack '{name}' is an AWS stack: this step acts on the local stack's nginx "
                "and containers only",
                hint="pass --stack with a local stack (`mlrig stack list` shows each one's kind)",
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


def resolve(site: Site, ref: str, progress: Progress = lambda _m: None) -> Target:
    """The version REF names and the image its push recorded (built and pushed first when
    it has none), verified in the registry."""
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
    _images.refuse_undone(mv)
    tags = _images.tags_of(mv, site.outputs)
    if tags is None:
        mv, tags = _images.build_and_push(mv, site.outputs, rest, progress)
    pushed = _images.verified(tags, mv, site.outputs)
    return Target(name, mv.version, pushed.digest, pushed.image, mv.run_id)


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
        labels={ENDPOINT_LABEL: str(site.layout.root), "mlrig.endpoint": endpoint},
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


def _interruptible(name: str, verb: str) -> contextlib.AbstractContextManager[None]:
    """SIGTERM/SIGHUP raise inside the block (a CI cancel, `timeout`), so what this command
    started is removed and the previous version keeps serving, as on Ctrl-C."""
    from mlrig.core.shared import interrupts

    return interrupts.terminate_as_exception(
        name,
        what=f"`mlrig {verb}` of endpoint {name!r}",
        hint=f"see what the endpoint serves with `mlrig deploy status {name}`",
    )


def _resolving(ref: str) -> contextlib.AbstractContextManager[None]:
    """SIGTERM/SIGHUP while REF is resolved (and its image built and pushed, which may take
    minutes) is one line: nothing has been deployed yet, so every endpoint serves what it
    served; the build removes its check container on the way out."""
    from mlrig.core.shared import interrupts

    return interrupts.terminate_as_exception(
        ref,
        what=f"`mlrig deploy` of {ref} (resolving it, building and pushing its image)",
        hint="nothing was deployed; run the same `mlrig deploy` again",
    )


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
        access_logs.ensure(layout)  # a keeper killed meanwhile comes back
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
    access_logs.ensure(layout)
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
        access_logs=private_dir(traffic.logs_dir(layout)),
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
    # private_umask: nginx creates its logs (also under `nginx -t`) with the caller's umask
    with store.proxy_lock(), private_umask():
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


def _switch(
    site: Site,
    ep: Endpoint,
    new: Backend,
    retired: list[Backend],
    record: str | None,
    progress: Progress,
) -> None:
    """Traffic to `ep` (new started and healthy), then `retired` drained and stopped: once
    begun, finished before a SIGTERM is raised (`interrupts.shielded`). A config nginx
    refuses removes `new` and leaves the previous one serving."""
    from mlrig.core.shared import interrupts

    with interrupts.shielded():
        try:
            old = _apply(site, ep, ep.name, progress)
        except BaseException:
            _stop(new)
            raise
        _retire(old, retired)
        if record:
            _record(site, ep.name, new, record)


def _cold(previous: Backend | None) -> list[Backend]:
    """The kept previous version's container, to stop when another takes its place."""
    return [previous] if previous is not None else []


def _warm(b: Backend) -> bool:
    """The kept previous version's container is running and answers /ping now, so a
    rollback only re-points nginx (no start, no model load)."""
    from mlrig.adapters import http

    try:
        if docker_adapter.container_status(b.container) != "running":
            return False
        return http.send_json("GET", f"http://127.0.0.1:{b.port}/ping", timeout=2).status == 200
    except Exception:  # gone, or not answering: a cold start instead
        return False


def _shielded() -> contextlib.AbstractContextManager[None]:
    from mlrig.core.shared import interrupts

    return interrupts.shielded()


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
    bake: float = 60.0,
    limits: traffic.CanaryLimits | None = None,
    progress: Progress = lambda _m: None,
) -> Deployed:
    """A version to an endpoint; a canary is watched for `bake` seconds and aborted when its
    container stops answering or its requests break `limits` (`canary.bake`).

    capture: the endpoint's capture percent from now on (None keeps its setting; a new
    endpoint's is 0, off); the containers this command starts capture that share."""
    capture_contract.check_percent(capture)
    check_canary(canary)  # before REF is resolved (which may build and push)
    site = Site.open(stack)
    nginx.binary()  # one line naming the package before anything is built or started
    ref = ref or default_ref(Path.cwd())
    with _resolving(ref):  # a build and push may run here: minutes a CI cancel can cut
        target = resolve(site, ref, progress)
    name = check_name(endpoint or default_name(target.model))
    with site.store.lock(name), _interruptible(name, "deploy"):
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
                        "canary_limits": limits or traffic.CanaryLimits(),
                        "capture": share,
                    }
                )
                old_backends = []
            else:
                # the serving version stays up, unrouted, as the warm `previous` a rollback
                # re-points to; the one kept before it stops
                old_backends = [*ep.backends[1:], *_cold(ep.previous)]
                nxt = ep.model_copy(
                    update={
                        "backends": [new],
                        "previous": ep.backends[0],
                        "public": ep.public or public,
                        "capture": share,
                    }
                )
        except BaseException:
            _stop(new)
            raise
        log_start = rotation.end(traffic.log_file(site.layout, name))
        _switch(site, nxt, new, old_backends, "deployed" if canary is None else None, progress)
        first_key = ep.keys[0].id if key and ep.keys else None
        _audit.log(
            site.layout.name,
            "canary" if canary else "deploy",
            name,
            nxt.backends[-1],
            key_id=first_key,
        )
        if canary is not None and bake > 0:
            _bake(site, nxt, bake, log_start, progress)
    return Deployed(nxt, site.url(name) or "", key)


def promote(
    name: str,
    *,
    stack: str | None = None,
    force: bool = False,
    progress: Progress = lambda _m: None,
) -> Endpoint:
    """All traffic to the canary, unless what it answered so far breaks its limits (force:
    promote anyway)."""
    site = Site.open(stack)
    with site.store.lock(check_name(name)):
        ep = site.store.get(name)
        if ep.canary is None:
            raise UsageError(f"endpoint {name!r} has no canary to promote")
        if not force:
            _check_canary(site, ep, progress)
        stable, canary = ep.backends
        nxt = ep.model_copy(
            update={
                "backends": [canary.model_copy(update={"weight": 100, "since": datetime.now(UTC)})],
                "previous": stable.model_copy(update={"weight": 100}),
                "canary_limits": None,
            }
        )
        old = _apply(site, nxt, name, progress)
        _retire(old, _cold(ep.previous))  # the stable one stays up as the warm previous
        _record(site, name, canary, "promoted")
        _audit.log(site.layout.name, "promote", name, nxt.backends[0])
    return nxt


def _check_canary(site: Site, ep: Endpoint, progress: Progress) -> None:
    from mlrig.core.deploy import canary as canary_watch

    assert ep.canary is not None
    numbers, why = canary_watch.since_started(ep, traffic.log_file(site.layout, ep.name))
    if why:
        raise UsageError(
            f"the canary v{ep.canary.version} of {ep.name} is over its limits: {why}",
            hint=f"`mlrig deploy abort {ep.name}`, or promote anyway with --force",
        )
    progress(f"the canary v{ep.canary.version} since it started: {numbers.describe()}")


def abort(name: str, *, stack: str | None = None, progress: Progress = lambda _m: None) -> Endpoint:
    site = Site.open(stack)
    with site.store.lock(check_name(name)):
        ep = site.store.get(name)
        if ep.canary is None:
            raise UsageError(f"endpoint {name!r} has no canary to abort")
        return _abort(site, ep, progress)


def _abort(site: Site, ep: Endpoint, progress: Progress) -> Endpoint:
    """All traffic back to the stable version; the canary drains, then stops."""
    stable, canary = ep.backends
    nxt = ep.model_copy(
        update={"backends": [stable.model_copy(update={"weight": 100})], "canary_limits": None}
    )
    old = _apply(site, nxt, ep.name, progress)
    _retire(old, [canary])
    _audit.log(site.layout.name, "abort", ep.name, canary)
    return nxt


def _bake(
    site: Site, ep: Endpoint, seconds: float, start: rotation.Mark, progress: Progress
) -> None:
    """Watch the new canary; abort it (and say why) when it fails, or when this command is
    interrupted while watching (nothing half-done is left serving)."""
    from mlrig.adapters import http
    from mlrig.core.deploy import canary as canary_watch

    stable, new = ep.backends

    def alive() -> str | None:
        try:
            code = http.status(f"http://127.0.0.1:{new.port}/ping", timeout=2.0)
        except OSError:
            return "its container stopped answering /ping"
        return None if code == 200 else f"its /ping answered {code}"

    log = traffic.log_file(site.layout, ep.name)
    try:
        why = canary_watch.bake(ep, log, seconds, start=start, alive=alive, progress=progress)
    except BaseException:
        progress(f"interrupted: aborting the canary (v{new.version})")
        _abort(site, ep, progress)
        raise
    if why:
        _abort(site, ep, progress)
        raise ServiceError(
            f"the canary v{new.version} of {ep.name} was aborted: {why}; v{stable.version} "
            "serves all traffic again",
            hint=f"see `mlrig deploy logs {ep.name}`; the limits are options of `mlrig deploy`",
        )


def rollback(
    name: str,
    *,
    to: str | None = None,
    stack: str | None = None,
    progress: Progress = lambda _m: None,
) -> Endpoint:
    """Back to the previous version (or REF's): its pushed image by digest, no rebuild."""
    site = Site.open(stack)
    nginx.binary()
    with site.store.lock(check_name(name)), _interruptible(name, "deploy rollback"):
        ep = site.store.get(name)
        if ep.canary is not None:
            raise UsageError(
                f"endpoint {name!r} has a canary", hint=f"`mlrig deploy abort {name}` instead"
            )
        if to is None and ep.previous is not None and _warm(ep.previous):
            back = ep.previous.model_copy(update={"weight": 100, "since": datetime.now(UTC)})
            nxt = ep.model_copy(update={"backends": [back], "previous": ep.backends[0]})
            with _shielded():
                old = _apply(site, nxt, name, progress)
                _retire(old, [])  # the version it leaves stays up as the warm previous
                _record(site, name, back, "rolled back")
            _audit.log(site.layout.name, "rollback", name, back)
            return nxt
        if to is not None:
            target = resolve(site, to, progress)
        elif ep.previous is not None:
            prev = ep.previous
            target = Target(prev.model, prev.version, prev.digest, prev.image, prev.run_id)
        else:
            raise UsageError(f"endpoint {name!r} has no previous version", hint="pass --to REF")
        new = _start(site, name, target, progress, ep.capture)
        nxt = ep.model_copy(update={"backends": [new], "previous": ep.backends[0]})
        retired = [*ep.backends[1:], *_cold(ep.previous)]
        _switch(site, nxt, new, retired, "rolled back", progress)
        _audit.log(site.layout.name, "rollback", name, new)
    return nxt


def delete(name: str, *, stack: str | None = None, progress: Progress = lambda _m: None) -> None:
    site = Site.open(stack)
    with site.store.lock(check_name(name)):
        ep = site.store.get(name)
        old = _apply(site, None, name, progress)
        _retire(old, [*ep.backends, *_cold(ep.previous)])
        import contextlib

        with contextlib.suppress(MlrigError):
            for b in ep.backends:
                site.rest().delete_alias(b.model, f"endpoint-{name}")
        rotation.remove(traffic.log_file(site.layout, name))
    site.store.forget(name)
    _audit.log(site.layout.name, "delete", name)


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
    """Each endpoint: URL, public flag, keys (IDs and count), capture, and per backend
    version, digest, image, since, share and its container's capture counters; the version
    a rollback goes back to."""
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
            "key_count": len(ep.keys),
            "created_at": ep.created_at.isoformat(timespec="seconds"),
            "serving": [
                {
                    "model": b.model,
                    "version": b.version,
                    "digest": b.digest,
                    "since": b.since.isoformat(timespec="seconds"),
                    "traffic": b.weight,
                    "container": b.container,
                    "image": b.image,
                    "capture": b.capture,
                    "captured": _capture_stats(b),
                }
                for b in ep.backends
            ],
            "previous": ep.previous.version if ep.previous else None,
            "previous_digest": ep.previous.digest if ep.previous else None,
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
        # a public endpoint's first key makes it keyed: the way out of --public
        nxt = ep.model_copy(update={"keys": [*ep.keys, record], "public": False})
        old = _apply(site, nxt, name, lambda _m: None)
        if ep.public:  # the old workers answer without a key until they have exited
            _retire(old, [])
        _audit.log(site.layout.name, "key-create", name, key_id=record.id)
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
        _audit.log(site.layout.name, "key-revoke", name, key_id=key_id)
