"""The demo's last scenario: the champion behind an authenticated endpoint of the local stack,
a keyed request through nginx, the retrained version as a canary, promotion and a rollback.

Every request goes through the stack's nginx with a key (a request without one must get 401)
and must answer 200 from the version the step expects (nginx's X-Model-Version). The demo's
key lives in memory only and is revoked by the last step; the summary never holds it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from mlrig.core.demo._context import PROJECT, StepFailed

if TYPE_CHECKING:
    from mlrig.core.demo._context import DemoContext

ENDPOINT = PROJECT.replace("_", "-")  # endpoint names: lowercase letters, digits, dashes
CANARY = 50
CANARY_REQUESTS = 20
_KEY = "endpoint key"  # in ctx.private: never a fact (facts are printed and written)
_EXAMPLE = "example"


def pushed(ctx: DemoContext, version: str) -> str:
    """models:/PROJECT/VERSION with its image in the stack's registry (built and pushed
    here when no push of it is recorded yet)."""
    from mlrig import contract
    from mlrig.core.deploy import endpoints
    from mlrig.core.image import build as image
    from mlrig.core.image import push as serving_push
    from mlrig.errors import UsageError

    ref = f"models:/{PROJECT}/{version}"
    try:
        endpoints.resolve(endpoints.Site.open(ctx.stack), ref)
        return ref
    except UsageError as exc:  # no pushed image (or not in this registry): push one
        ctx.log(f"{ref}: {exc.message}; building and pushing it")
    built = image.build(ref, repo=ctx.repo, stack=ctx.stack, progress=ctx.log)
    serving_push.push(built.ref, contract.load(ctx.stack), progress=ctx.log)
    return ref


def champion_version(ctx: DemoContext) -> str:
    from mlrig.core.deploy import endpoints

    return endpoints.Site.open(ctx.stack).rest().model_version_by_alias(PROJECT, "champion").version


def example(ctx: DemoContext) -> bytes:
    """The served model's own input example (read from its container once)."""
    if _EXAMPLE in ctx.private:
        return bytes(ctx.private[_EXAMPLE])
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.deploy import endpoints
    from mlrig.core.image import run as image_run

    ep = endpoints.Site.open(ctx.stack).store.get(ENDPOINT)
    example = docker_adapter.read_container_file(
        ep.backends[0].container, image_run.EXAMPLE_FILE, image_run.MAX_EXAMPLE_BYTES
    )
    if example is None:
        raise StepFailed("the served model has no input example to send")
    ctx.private[_EXAMPLE] = example
    return example


def _call(ctx: DemoContext, key: str | None) -> tuple[int, str | None]:
    """One POST of the model's own example through nginx: (status, version that answered)."""
    from mlrig.adapters import http

    user, _, secret = key.partition(":") if key else ("", "", "")
    resp = http.post(
        ctx.facts["endpoint"],
        example(ctx),
        content_type="application/json",
        auth=(user, secret) if key else None,
    )
    return resp.status, resp.headers.get("x-model-version")


def _expect(ctx: DemoContext, version: str, count: int = 1) -> None:
    for _ in range(count):
        status, served = _call(ctx, ctx.private[_KEY])
        if status != 200 or served != version:
            raise StepFailed(
                f"a keyed request answered {status} from version {served or '?'}, "
                f"not 200 from v{version}",
                hint=f"see `mlrig deploy status {ENDPOINT} --stack {ctx.stack}`",
            )


def deploy_champion(ctx: DemoContext) -> str:
    from mlrig.core.deploy import endpoints

    version = champion_version(ctx)
    ref = pushed(ctx, version)
    site = endpoints.Site.open(ctx.stack)
    old = site.store.read(ENDPOINT)
    if old is not None and old.canary is not None:  # a re-run after a stopped demo
        endpoints.abort(ENDPOINT, stack=ctx.stack, progress=ctx.log)
    # capture off: a re-run's deploy steps must not leave captures of several versions in the
    # window the drift steps judge (a re-run finds the last run's 100 % still set)
    done = endpoints.deploy(ref, endpoint=ENDPOINT, stack=ctx.stack, capture=0, progress=ctx.log)
    # a new endpoint hands over its first key; an existing one (a re-run) gets a new one
    ctx.private[_KEY] = done.key or endpoints.create_key(ENDPOINT, stack=ctx.stack)
    ctx.facts["endpoint"] = f"{done.url}/invocations"
    ctx.facts["champion"] = ref
    digest = done.endpoint.backends[0].digest
    return f"{ref} (@champion, {digest[:19]}) → {ctx.facts['endpoint']}"


def keyed_request(ctx: DemoContext) -> str:
    status, _ = _call(ctx, None)
    if status != 401:
        raise StepFailed(f"a request without a key answered {status}, not 401")
    version = ctx.facts["champion"].rsplit("/", 1)[1]
    _expect(ctx, version)
    return f"with a key: 200 from v{version} (through nginx); without one: 401"


def canary(ctx: DemoContext) -> str:
    from mlrig.core.deploy import endpoints

    retrained = ctx.facts["retrained"]
    ref = pushed(ctx, retrained.rsplit("/", 1)[1])
    endpoints.deploy(ref, endpoint=ENDPOINT, stack=ctx.stack, canary=CANARY, progress=ctx.log)
    seen: Counter[str] = Counter()
    for _ in range(CANARY_REQUESTS):
        status, served = _call(ctx, ctx.private[_KEY])
        if status != 200:
            raise StepFailed(f"a keyed request to the canary answered {status}")
        seen[served or "?"] += 1
    new, old = ref.rsplit("/", 1)[1], ctx.facts["champion"].rsplit("/", 1)[1]
    if not seen[new] or not seen[old]:
        raise StepFailed(f"{CANARY}% canary, but the answers came from {dict(seen)}")
    return (
        f"{ref} takes {CANARY}%: {CANARY_REQUESTS} keyed requests → 200 "
        f"(v{old}: {seen[old]}, v{new}: {seen[new]})"
    )


def promote(ctx: DemoContext) -> str:
    from mlrig.core.deploy import endpoints

    ep = endpoints.promote(ENDPOINT, stack=ctx.stack, progress=ctx.log)
    version = ep.backends[0].version
    _expect(ctx, version, 3)
    return f"v{version} takes all traffic; keyed requests → 200 from v{version}"


def rollback(ctx: DemoContext) -> str:
    from mlrig.core.deploy import endpoints

    ep = endpoints.rollback(ENDPOINT, stack=ctx.stack, progress=ctx.log)
    version = ep.backends[0].version
    _expect(ctx, version, 3)
    key_id = ctx.private.pop(_KEY).split(":", 1)[0]
    endpoints.revoke_key(ENDPOINT, key_id, stack=ctx.stack)  # the demo's key dies with it
    return (
        f"back to v{version} (its pushed image, no rebuild); keyed requests → 200 from "
        f"v{version}; the demo's key {key_id} revoked"
    )
