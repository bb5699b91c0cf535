"""`mlrig deploy` on an AWS stack: each endpoint is its own Pulumi stack (project
`mlrig-endpoint`, program `mlrig.infra.endpoint.program`) that reads the base stack through
a StackReference, so deploying or deleting an endpoint never touches the tracking server,
the database or the bucket.

Every verb writes the endpoint stack's config (`_aws_state`) and runs `pulumi up` through
the Automation API: deploy publishes a Lambda version from the image by digest; canary,
promote, abort and rollback re-point the alias `live` (no rebuild). Keys live hashed in SSM
(`_aws_keys`). `--dry-run` runs the same program offline under mocks and prices it.
Auto-abort: `watch` reads the canary's CloudWatch alarms and aborts on ALARM (while it runs).
A warm endpoint (ECS) has no canary; each of its changes is proven after `up` by the task
definition ECS runs (a rolled-back service is steady too), and undone in the state if not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlrig.adapters import aws as aws_adapter
from mlrig.adapters import pulumi as pulumi_adapter
from mlrig.contract import StackOutputs
from mlrig.core.deploy import _audit, _aws_keys, _aws_state, _keys
from mlrig.core.deploy._aws_state import Desired
from mlrig.core.deploy.state import check_canary, check_name, default_name
from mlrig.core.provenance import record as p
from mlrig.core.shared.progress import Progress
from mlrig.core.stack import stacks
from mlrig.errors import DependencyMissing, MlrigError, ServiceError, UsageError

_OUT_SERVED = "served_version"
_OUT_PUBLISHED = "published_version"
_OUT_URL = "url"
_OUT_ALARMS = "alarm_names"
_OUT_CLUSTER = "cluster_arn"
_OUT_SERVICE = "service_name"
_OUT_TASK_DEFINITION = "task_definition_arn"


def _no_progress(_m: str) -> None:
    return None


# -- the stack and the endpoint's Pulumi stack -------------------------------------------------
def aws_outputs(stack: str | None) -> StackOutputs:
    outputs = stacks.outputs(stacks.resolve_name(stack))
    if outputs.kind != "aws":
        raise UsageError(f"stack '{outputs.name}' is not an AWS stack")
    return outputs


def is_aws(stack: str | None) -> bool:
    """The seam: does this command act on an AWS stack (else the local stack's nginx)?"""
    return stacks.outputs(stacks.resolve_name(stack)).kind == "aws"


def _region(outputs: StackOutputs) -> str:
    return outputs.region or "us-east-1"


def _open(outputs: StackOutputs, endpoint: str) -> Any:
    """The endpoint's Pulumi stack; the Pulumi CLI missing is one line before anything."""
    from mlrig.core.stack.aws import stack as aws_stack
    from mlrig.infra.endpoint import program
    from mlrig.infra.endpoint.refs import ENDPOINT_PROJECT, endpoint_stack_name

    pulumi_adapter.cli_path()
    profile = outputs.dvc_remote.profile
    stack = pulumi_adapter.select_stack(
        endpoint_stack_name(outputs.name, endpoint),
        program.main,
        backend_url=aws_stack.backend_url(outputs.name, None),
        passphrase=aws_stack.passphrase(outputs.name),
        env={"AWS_PROFILE": profile} if profile else {},
        project=ENDPOINT_PROJECT,
    )
    pulumi_adapter.set_config(
        stack,
        {
            "aws:region": _region(outputs),
            "mlrig:baseStack": outputs.name,
            "mlrig:endpoint": endpoint,
        },
        {},
    )
    return stack


def _current(stack: Any) -> tuple[Desired | None, dict[str, Any]]:
    config = {
        key: value
        for key in _aws_state.KEYS.values()
        if (value := pulumi_adapter.get_config(stack, key)) is not None
    }
    return Desired.from_config(config), pulumi_adapter.outputs(stack)


def _up(stack: Any, desired: Desired, *, stamp: bool = True) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    stamped = replace(desired, since=now) if stamp else desired
    settings, removed = stamped.to_config()
    pulumi_adapter.set_config(stack, settings, {})
    pulumi_adapter.remove_config(stack, removed)
    return pulumi_adapter.up(stack, on_output=lambda _line: None)


def endpoint_config(outputs: StackOutputs, name: str, desired: Desired) -> Any:
    """The program's EndpointConfig for this state: bad values are one line, not a trace."""
    from mlrig.infra.endpoint.config import EndpointConfig

    try:
        return EndpointConfig(
            base_stack=outputs.name,
            endpoint=name,
            region=_region(outputs),
            image=desired.image,
            stable_version=desired.stable_version,
            canary_percent=desired.canary_percent,
            warm=desired.warm,
            public=desired.public,
            model=desired.model,
            model_version=desired.model_version,
            run_id=desired.run_id,
            capture_percent=desired.capture,
        )
    except ValueError as exc:
        raise UsageError(f"endpoint {name!r}: {exc}") from None


# -- what to deploy ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    model: str
    version: str
    digest: str
    image: str  # ECR repository URL@digest
    run_id: str = ""  # the version's run (what its captured records name)


def resolve(outputs: StackOutputs, ref: str) -> Target:
    """The version REF names and its pushed image, verified by digest in this stack's ECR."""
    from mlrig.adapters.mlflow_rest import MlflowRest
    from mlrig.core.deploy import endpoints
    from mlrig.core.stack import env as stack_env

    match = endpoints._REF.fullmatch(ref)
    if not match:
        raise UsageError(
            f"REF {ref!r} is not models:/NAME/VERSION or models:/NAME@ALIAS",
            hint="for example models:/NAME@champion",
        )
    rest = MlflowRest.from_env(stack_env.client_env(outputs))
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
            "`mlrig image push` first",
        )
    target = verify_image(outputs, name, mv.version, repository, digest)
    return replace(target, run_id=mv.run_id or "")


def verify_image(
    outputs: StackOutputs, model: str, version: str, repository: str, digest: str
) -> Target:
    """The image, if it is this stack's ECR repository's and ECR holds that digest."""
    if repository != outputs.registry_url:
        raise UsageError(
            f"model version {version} of {model} was pushed to {repository}, not to stack "
            f"'{outputs.name}''s registry {outputs.registry_url}",
            hint="push it to this stack with `mlrig image push --stack " + outputs.name + "`",
        )
    repo_path = repository.split("/", 1)[1]
    if aws_adapter.ecr_image_digest(repo_path, digest, region=_region(outputs)) != digest:
        raise UsageError(
            f"image {repository}@{digest} of model version {version} is not in ECR",
            hint="push it again with `mlrig image push`",
        )
    return Target(model, version, digest, f"{repository}@{digest}")


# -- the verbs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Serving:
    """One version the alias serves (the shape the deploy command renders)."""

    model: str
    version: str  # the model version
    digest: str
    weight: int
    since: datetime
    lambda_version: str = ""


@dataclass(frozen=True)
class AwsEndpoint:
    name: str
    backends: list[Serving]
    public: bool = False

    @property
    def canary(self) -> Serving | None:
        return self.backends[1] if len(self.backends) > 1 else None


@dataclass(frozen=True)
class Deployed:
    endpoint: AwsEndpoint
    url: str
    key: str | None


@dataclass(frozen=True)
class DryRun:
    endpoint: str
    resources: list[tuple[str, str]]
    cost: dict[str, Any]
    reads: list[str] = field(default_factory=list)  # stacks it reads, never changes


def _view(name: str, desired: Desired, out: dict[str, Any]) -> AwsEndpoint:
    from dataclasses import replace

    digest = desired.image.rsplit("@", 1)[-1]
    since = datetime.fromisoformat(desired.since) if desired.since else datetime.now(UTC)
    published = str(out.get(_OUT_PUBLISHED, ""))
    new = Serving(desired.model, desired.model_version, digest, 100, since, published)
    older = desired.stable_version
    if older is not None:
        # a canary's stable share, or after a rollback or abort: an older published version
        # of the function (named by its model version when the state kept it)
        known = desired.stable_serves
        stable = (
            Serving(known.model, known.version, known.digest, 100, since, older)
            if known is not None
            else Serving("", f"lambda:{older}", "", 100, since, older)
        )
        if desired.canary_percent is None:
            return AwsEndpoint(name, [stable], desired.public)
        share = desired.canary_percent
        return AwsEndpoint(
            name,
            [replace(stable, weight=100 - share), replace(new, weight=share)],
            desired.public,
        )
    return AwsEndpoint(name, [new], desired.public)


def dry_run(
    outputs: StackOutputs, name: str, image: str, *, canary: int | None, warm: bool, public: bool
) -> DryRun:
    """The endpoint's resources and price, offline (no Pulumi CLI, no AWS call)."""
    from mlrig.core.stack import endpoint_costs, endpoint_plan

    desired = Desired(
        image,
        stable_version="1" if canary is not None else None,  # the version serving now
        canary_percent=canary,
        warm=warm,
        public=public,
    )
    cfg = endpoint_config(outputs, name, desired)
    planned, reads = endpoint_plan.run_endpoint_program(cfg)
    return DryRun(
        name,
        [(r.type, r.name) for r in planned.resources],
        endpoint_costs.estimate(planned).as_dict(),
        [str(inputs.get("name", rname)) for _t, rname, inputs in reads],
    )


def _target(outputs: StackOutputs, ref: str | None) -> Target:
    from mlrig.core.deploy import endpoints

    return resolve(outputs, ref or endpoints.default_ref(Path.cwd()))


def preview_deploy(
    ref: str | None,
    *,
    endpoint: str | None = None,
    stack: str | None = None,
    canary: int | None = None,
    public: bool = False,
    warm: bool = False,
) -> DryRun:
    """`deploy --dry-run`: REF resolved and verified, the endpoint planned offline."""
    outputs = aws_outputs(stack)
    check_canary(canary)
    _aws_state.check_warm_canary(warm, canary)
    target = _target(outputs, ref)
    name = check_name(endpoint or default_name(target.model))
    return dry_run(outputs, name, target.image, canary=canary, warm=warm, public=public)


def deploy(
    ref: str | None,
    *,
    endpoint: str | None = None,
    stack: str | None = None,
    canary: int | None = None,
    public: bool = False,
    warm: bool = False,
    capture: int | None = None,
    bake_minutes: float = 0,
    progress: Progress = _no_progress,
) -> Deployed:
    """capture: the share of predictions the new version's function writes to
    s3://BUCKET/captures/NAME/ (None keeps the endpoint's; off for a new one)."""
    outputs = aws_outputs(stack)
    check_canary(canary)
    _aws_state.check_warm_canary(warm, canary)
    pulumi_adapter.cli_path()  # one line, before anything is read or written
    target = _target(outputs, ref)
    name = check_name(endpoint or default_name(target.model))
    region = _region(outputs)
    stack_ = _open(outputs, name)
    current, out = _current(stack_)
    desired = _aws_state.deploy(
        name,
        current,
        out.get(_OUT_SERVED),
        image=target.image,
        model=target.model,
        version=target.version,
        run_id=target.run_id,
        canary=canary,
        warm=warm,
        public=public,
        capture=capture,
    )
    endpoint_config(outputs, name, desired)  # checked before anything is written
    key = None
    fresh_keys = current is None and not desired.public
    if fresh_keys:
        record, key = _keys.new_key()
        progress("storing the endpoint's first key (its hash) in SSM")
        _aws_keys.write(outputs.name, name, region, [record])
    progress(f"pulumi up of endpoint {name} (stack {outputs.name}.{name})")
    try:
        out = _up(stack_, desired)
        if desired.warm:
            _prove_rollout(outputs, name, out, current, progress)
    except NotRolledOut:
        if current is None:
            _undo_first_deploy(stack_, outputs, name, fresh_keys, progress)
        else:
            _restore(stack_, current, progress)
        raise
    except BaseException:
        if current is None:  # a new endpoint: nothing half-made stays behind
            _undo_first_deploy(stack_, outputs, name, fresh_keys, progress)
        raise
    desired = _current(stack_)[0] or desired
    ep = _view(name, desired, out)
    _audit.log(
        outputs.name,
        "canary" if canary is not None else "deploy",
        name,
        ep.backends[-1],
        key_id=key.split(":", 1)[0] if key else None,
    )
    if canary is None:
        _record(outputs, name, target.model, target.version, "deployed")
    elif bake_minutes > 0:
        _bake_or_abort(
            outputs, name, [str(n) for n in out.get(_OUT_ALARMS, [])], bake_minutes, progress
        )
    return Deployed(ep, str(out.get(_OUT_URL, "")), key)


def _bake_or_abort(
    outputs: StackOutputs, name: str, alarms: list[str], minutes: float, progress: Progress
) -> None:
    def abort_now(alarm: str) -> None:
        progress(f"{alarm} is in ALARM: aborting the canary")
        abort(name, stack=outputs.name, progress=progress)

    tripped = bake(alarms, _region(outputs), minutes, on_alarm=abort_now, progress=progress)
    if tripped is not None:
        raise ServiceError(
            f"the canary of {name} was aborted: alarm {tripped} went to ALARM; the stable "
            "version serves all traffic again",
            hint=f"its logs: `aws logs tail /aws/lambda/mlrig-{outputs.name}-ep-{name}`",
        )


class NotRolledOut(ServiceError):
    """ECS does not run what `up` asked for: the circuit breaker rolled the service back."""


def _prove_rollout(
    outputs: StackOutputs,
    name: str,
    out: dict[str, Any],
    before: Desired | None,
    progress: Progress,
) -> None:
    """The warm service's PRIMARY deployment runs the task definition `up` made, rolled out
    (COMPLETED): `up` waits for a steady service, and a rolled-back one is steady too."""
    wanted = str(out.get(_OUT_TASK_DEFINITION, ""))
    progress(f"checking that ECS runs {wanted.rsplit('/', 1)[-1]}")
    found = aws_adapter.ecs_primary_deployment(
        str(out.get(_OUT_CLUSTER, "")), str(out.get(_OUT_SERVICE, "")), region=_region(outputs)
    )
    if found is not None and (found.task_definition, found.rollout_state) == (
        wanted,
        "COMPLETED",
    ):
        return
    if found is None:
        why = "ECS has no such service"
    elif found.task_definition != wanted:
        # ARNs ECS returned: only the revision is shown, and only when it looks like one
        revision = found.task_definition.rsplit("/", 1)[-1]
        went_back = revision if len(revision) <= 80 and revision.isprintable() else "another"
        why = (
            f"ECS runs {went_back} again: the new task never passed its /ping health check "
            "and the deployment circuit breaker rolled the service back"
        )
    else:
        why = f"its rollout is {found.rollout_state or 'in an unknown state'}"
    still = before.serving if before is not None else None
    serving = (
        f"; {still.model} v{still.version} ({still.digest[:19]}) still serves" if still else ""
    )
    raise NotRolledOut(
        f"the new version of warm endpoint {name} did not roll out ({why}){serving}",
        hint=f"its logs: `aws logs tail /mlrig/{outputs.name}/endpoints/{name}`",
    )


def _restore(stack: Any, before: Desired, progress: Progress) -> None:
    """The state back to what ECS serves after its rollback (best effort: the rollout's own
    error is what the user sees; the next deploy re-applies the state either way)."""
    import contextlib

    progress("putting the endpoint's state back to the version ECS kept")
    with contextlib.suppress(MlrigError):
        _up(stack, before, stamp=False)


def _undo_first_deploy(
    stack: Any, outputs: StackOutputs, name: str, keys: bool, progress: Progress
) -> None:
    """Remove what a failed first deploy made (best effort: the deploy's own error is what
    the user sees; a later `mlrig deploy delete` finishes what this could not)."""
    import contextlib

    progress(f"the first deploy of {name} failed: removing what it made")
    with contextlib.suppress(MlrigError):
        pulumi_adapter.destroy(stack, on_output=lambda _line: None)
    if keys:
        with contextlib.suppress(MlrigError):
            _aws_keys.delete(outputs.name, name, _region(outputs))


def _change(
    name: str,
    stack: str | None,
    step: Callable[[Desired | None, dict[str, Any]], Desired],
    progress: Progress,
) -> AwsEndpoint:
    outputs = aws_outputs(stack)
    check_name(name)
    stack_ = _open(outputs, name)
    current, out = _current(stack_)
    desired = step(current, out)
    endpoint_config(outputs, name, desired)
    if desired.warm:
        progress(f"pulumi up of warm endpoint {name}: ECS rolls out {desired.image[-71:]}")
        out = _up(stack_, desired)
        try:
            _prove_rollout(outputs, name, out, current, progress)
        except NotRolledOut:
            assert current is not None  # every step refuses an endpoint with no state
            _restore(stack_, current, progress)
            raise
    else:
        progress(f"pulumi up of endpoint {name}: re-pointing alias live")
        out = _up(stack_, desired)
    after, _ = _current(stack_)
    return _view(name, after or desired, out)


def promote(
    name: str, *, stack: str | None = None, progress: Progress = _no_progress
) -> AwsEndpoint:
    ep = _change(
        name,
        stack,
        lambda cur, out: _aws_state.promote(name, cur, stable=out.get(_OUT_SERVED)),
        progress,
    )
    serving = ep.backends[0]
    outputs = aws_outputs(stack)
    _record(outputs, name, serving.model, serving.version, "promoted")
    _audit.log(outputs.name, "promote", name, serving)
    return ep


def abort(name: str, *, stack: str | None = None, progress: Progress = _no_progress) -> AwsEndpoint:
    aborted: list[Serving] = []

    def step(cur: Desired | None, out: dict[str, Any]) -> Desired:
        nxt = _aws_state.abort(name, cur)
        assert cur is not None  # abort refused otherwise
        canary = _view(name, cur, out).canary
        aborted.extend([canary] if canary else [])
        return nxt

    ep = _change(name, stack, step, progress)
    # the line names the canary that stopped serving, as the local stack's does
    _audit.log(aws_outputs(stack).name, "abort", name, aborted[0] if aborted else None)
    return ep


def rollback(
    name: str,
    *,
    to: str | None = None,
    stack: str | None = None,
    progress: Progress = _no_progress,
) -> AwsEndpoint:
    target = resolve(aws_outputs(stack), to) if to is not None else None

    def step(cur: Desired | None, out: dict[str, Any]) -> Desired:
        if target is None:
            back = _aws_state.rollback(name, cur, out.get(_OUT_SERVED))
            if back.warm:  # its previous image by digest: still in ECR (lifecycle rules)?
                repository, digest = back.image.rsplit("@", 1)
                verify_image(aws_outputs(stack), back.model, back.model_version, repository, digest)
            return back
        return _aws_state.rollback(
            name,
            cur,
            out.get(_OUT_SERVED),
            image=target.image,
            model=target.model,
            version=target.version,
            run_id=target.run_id,
        )

    ep = _change(name, stack, step, progress)
    outputs = aws_outputs(stack)
    back = ep.backends[0]
    # a plain rollback names the model version when the state kept what the Lambda version
    # serves (endpoints deployed before it was kept show lambda:N and record no version)
    if not back.version.startswith("lambda:"):
        _record(outputs, name, back.model, back.version, "rolled back")
    _audit.log(outputs.name, "rollback", name, back)
    return ep


def delete(name: str, *, stack: str | None = None, progress: Progress = _no_progress) -> None:
    outputs = aws_outputs(stack)
    stack_ = _open(outputs, check_name(name))
    current, _out = _current(stack_)
    progress(f"pulumi destroy of endpoint {name} (its own stack only)")
    pulumi_adapter.destroy(stack_, on_output=lambda _line: None)
    _aws_keys.delete(outputs.name, name, _region(outputs))
    pulumi_adapter.remove_stack(stack_)  # `deploy list` no longer finds it
    _forget_alias(outputs, name, current)
    _audit.log(outputs.name, "delete", name)


def endpoint_names(outputs: StackOutputs) -> list[str]:
    """The endpoints of this base stack: its endpoint stacks on the stack's Pulumi backend
    (named BASE.ENDPOINT, project mlrig-endpoint), sorted."""
    from mlrig.core.stack.aws import stack as aws_stack
    from mlrig.infra.endpoint.refs import ENDPOINT_PROJECT, endpoint_stack_name

    pulumi_adapter.cli_path()  # one line without it, before the backend is touched
    profile = outputs.dvc_remote.profile
    found = pulumi_adapter.list_stack_names(
        backend_url=aws_stack.backend_url(outputs.name, None),
        passphrase=aws_stack.passphrase(outputs.name),
        env={"AWS_PROFILE": profile} if profile else {},
        project=ENDPOINT_PROJECT,
    )
    prefix = endpoint_stack_name(outputs.name, "")
    names = set()
    for stack_name in found:
        rest = stack_name.removeprefix(prefix)
        if rest != stack_name and _is_name(rest):
            names.add(rest)
    return sorted(names)


def _is_name(text: str) -> bool:
    try:
        check_name(text)
    except UsageError:
        return False
    return True


def status(name: str | None = None, *, stack: str | None = None) -> list[dict[str, object]]:
    """One row per endpoint (the local stack's shape; `proxy` is the HTTP API): `name`'s, or
    every endpoint stack's that serves something (a stack whose first deploy never finished
    holds no image and is left out)."""
    outputs = aws_outputs(stack)
    if name is not None:
        row = _row(outputs, check_name(name))
        if row is None:
            raise UsageError(
                f"no endpoint {name!r} on stack '{outputs.name}'",
                hint="see the stack's endpoints with `mlrig deploy list`",
            )
        return [row]
    return [row for n in endpoint_names(outputs) if (row := _row(outputs, n)) is not None]


def describe(name: str, *, stack: str | None = None) -> tuple[StackOutputs, AwsEndpoint, str]:
    """What endpoint `name` serves (as `status`), with its stack's outputs and its URL."""
    outputs = aws_outputs(stack)
    stack_ = _open(outputs, check_name(name))
    current, out = _current(stack_)
    if current is None:
        raise UsageError(
            f"no endpoint {name!r} on stack '{outputs.name}'",
            hint="see the stack's endpoints with `mlrig deploy list`",
        )
    return outputs, _view(name, current, out), f"{out.get(_OUT_URL, '')}/invocations"


def _row(outputs: StackOutputs, name: str) -> dict[str, object] | None:
    stack_ = _open(outputs, name)
    current, out = _current(stack_)
    if current is None:
        return None
    ep = _view(name, current, out)
    keys = [] if current.public else _aws_keys.read(outputs.name, name, _region(outputs)) or []
    previous = current.previous_serves
    return {
        "endpoint": name,
        "url": f"{out.get(_OUT_URL, '')}/invocations",
        "public": current.public,
        "proxy": "api-gateway",
        "keys": [k.id for k in keys],
        "key_count": len(keys),
        "serving": [
            {
                "model": b.model,
                "version": b.version,
                "digest": b.digest,
                "since": b.since.isoformat(timespec="seconds"),
                "traffic": b.weight,
                "lambda_version": b.lambda_version,
                # a Lambda version has no counters to ask (its writes: the bucket, its logs);
                # the endpoint's share is the row's
                "capture": None,
                "captured": None,
            }
            for b in ep.backends
        ],
        "previous": previous.version if previous else current.previous_version,
        "previous_digest": previous.digest if previous else None,
        "previous_lambda_version": current.previous_version,
        "capture": current.capture,
        "captures": captures_uri(outputs, name),
    }


def captures_uri(outputs: StackOutputs, name: str) -> str:
    """s3://BUCKET/captures/NAME: the stack's bucket (its DVC remote's)."""
    bucket = outputs.dvc_remote.url.removeprefix("s3://").split("/", 1)[0]
    return f"s3://{bucket}/captures/{name}"


# -- keys (SSM only: no Pulumi run) ------------------------------------------------------------
def create_key(name: str, *, stack: str | None = None) -> str:
    outputs = aws_outputs(stack)
    region = _region(outputs)
    existing = _aws_keys.read(outputs.name, check_name(name), region)
    if existing is None:
        raise UsageError(f"no keyed endpoint {name!r} on stack '{outputs.name}'")
    record, shown = _keys.new_key()
    _aws_keys.write(outputs.name, name, region, [*existing, record])
    _audit.log(outputs.name, "key-create", name, key_id=record.id)
    return shown


def list_keys(name: str, *, stack: str | None = None) -> list[dict[str, str]]:
    outputs = aws_outputs(stack)
    keys = _aws_keys.read(outputs.name, check_name(name), _region(outputs)) or []
    return [{"id": k.id, "created_at": k.created_at.isoformat(timespec="seconds")} for k in keys]


def revoke_key(name: str, key_id: str, *, stack: str | None = None) -> None:
    outputs = aws_outputs(stack)
    region = _region(outputs)
    keys = _aws_keys.read(outputs.name, check_name(name), region) or []
    if key_id not in {k.id for k in keys}:
        raise UsageError(
            f"endpoint {name!r} has no key {key_id!r}",
            hint=f"see its keys with `mlrig deploy keys list {name}`",
        )
    _aws_keys.write(outputs.name, name, region, [k for k in keys if k.id != key_id])
    _audit.log(outputs.name, "key-revoke", name, key_id=key_id)


# -- auto-abort --------------------------------------------------------------------------------
def canary_verdict(alarm_names: list[str], region: str) -> str | None:
    """The first alarm in ALARM (the canary must be aborted), else None."""
    states = aws_adapter.alarm_states(alarm_names, region=region)
    missing = sorted(set(alarm_names) - set(states))
    if missing:
        raise DependencyMissing(
            f"the canary's alarms {missing} do not exist", hint="redeploy the canary"
        )
    return next((n for n in alarm_names if states[n] == "ALARM"), None)


def bake(
    alarm_names: list[str],
    region: str,
    minutes: float,
    *,
    on_alarm: Callable[[str], object],
    progress: Progress = _no_progress,
    interval: float = 15.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Watch the canary's alarms for `minutes`; on the first ALARM call `on_alarm` (the
    abort) and return that alarm's name; None when the canary stayed healthy. This, not
    AWS CodeDeploy, is what aborts: the alias stays owned by the endpoint's Pulumi stack
    (CodeDeploy would move it behind the stack's back), at the price that the abort happens
    only while this command runs."""
    deadline = clock() + minutes * 60
    progress(f"watching {', '.join(alarm_names)} for {minutes:g} min")
    while True:
        tripped = canary_verdict(alarm_names, region)
        if tripped is not None:
            on_alarm(tripped)
            return tripped
        if clock() >= deadline:
            return None
        sleep(interval)


def _record(outputs: StackOutputs, name: str, model: str, version: str, what: str) -> None:
    """The version serves this endpoint: an alias per endpoint and a tag (best effort)."""
    import contextlib

    from mlrig.adapters.mlflow_rest import MlflowRest
    from mlrig.core.stack import env as stack_env

    if not model or not version:
        return
    with contextlib.suppress(MlrigError):
        rest = MlflowRest.from_env(stack_env.client_env(outputs))
        rest.set_alias(model, f"endpoint-{name}", version)
        stamp = f"{what} on {outputs.name} {datetime.now(UTC).isoformat(timespec='seconds')}"
        rest.set_model_version_tag(model, version, f"mlrig.endpoint.{name}", stamp)


def _forget_alias(outputs: StackOutputs, name: str, current: Desired | None) -> None:
    """The deleted endpoint's alias `endpoint-NAME` leaves its model (best effort, as the
    local stack's delete)."""
    import contextlib

    from mlrig.adapters.mlflow_rest import MlflowRest
    from mlrig.core.stack import env as stack_env

    if current is None or not current.model:
        return
    with contextlib.suppress(MlrigError):
        rest = MlflowRest.from_env(stack_env.client_env(outputs))
        rest.delete_alias(current.model, f"endpoint-{name}")
