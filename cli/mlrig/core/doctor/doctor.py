"""`mlrig doctor`: check every link of the chain and say how to fix what is broken."""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mlrig.contract import StackOutputs
from mlrig.errors import MlrigError

OK, FAIL, WARN, SKIP = "ok", "fail", "warn", "skip"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""
    needed: bool = True

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _guard(name: str, fn: Callable[[], Check]) -> Check:
    """A check that raises is a failed check with the error's own one-line fix."""
    try:
        return fn()
    except MlrigError as exc:
        return Check(name, FAIL, exc.message, exc.hint or "")
    except Exception as exc:  # noqa: BLE001 - doctor must always finish its table
        return Check(name, FAIL, f"{type(exc).__name__}: {exc}", "rerun with --debug")


def machine_checks() -> list[Check]:
    checks = [_guard("python", _python)]
    checks.append(_guard("packages", _packages))
    checks.append(_guard("docker engine", _engine))
    checks.append(_guard("serving containers", _serving_containers))
    checks.append(_guard("base image", _base_image))
    checks.append(_guard("registry binary", _registry_binary))
    checks.append(_guard("pulumi cli", _pulumi_cli))
    return checks


def _python() -> Check:
    ok = sys.version_info[:2] == (3, 11)
    version = ".".join(map(str, sys.version_info[:3]))
    return Check("python", OK if ok else FAIL, version, "" if ok else "use Python 3.11")


def _packages() -> Check:
    names = ["mlflow", "dvc", "docker", "boto3", "pulumi", "pulumi-aws", "copier"]
    found, missing = [], []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return Check(
            "packages",
            FAIL,
            f"missing: {', '.join(missing)}",
            "run scripts/setup.sh (or `pip install -e .`)",
        )
    return Check("packages", OK, ", ".join(found))


def _engine() -> Check:
    from mlrig.adapters import docker as docker_adapter

    docker_adapter.client.cache_clear()
    version = docker_adapter.engine_version()
    if not version:
        return Check("docker engine", FAIL, "no Docker engine answers", docker_adapter.ENGINE_HINT)
    return Check("docker engine", OK, f"engine {version}")


def _serving_containers() -> Check:
    """The model servers `mlrig image run` left running: a memory kill is one warning line."""
    from mlrig.core.image import run as image_run
    from mlrig.errors import ServiceError

    try:
        found = image_run.status()
    except ServiceError:  # no engine: the engine check already says so
        return Check("serving containers", SKIP, "no Docker engine answers", needed=False)
    except Exception as exc:  # noqa: BLE001 - optional: never fails the doctor's run
        return Check("serving containers", WARN, f"not listed: {type(exc).__name__}", needed=False)
    if not found:
        return Check("serving containers", SKIP, "none", needed=False)
    bad = [(n, s) for n, s in found if s.oom_killed or s.status != "running"]
    if bad:
        fix = "send smaller batches, or rerun `mlrig image run` with a larger --memory"
        if not any(s.oom_killed for _, s in bad):
            fix = f"read `docker logs {bad[0][0]}`, then rerun `mlrig image run`"
        detail = "; ".join(image_run.describe(n, s) for n, s in bad)
        return Check("serving containers", WARN, detail, fix, needed=False)
    return Check("serving containers", OK, "; ".join(image_run.describe(n, s) for n, s in found))


def _base_image() -> Check:
    from mlrig import settings
    from mlrig.core.setup import engine

    ref = engine.find_base_image()
    if ref:
        return Check("base image", OK, ref)
    return Check(
        "base image",
        FAIL,
        f"neither {settings.load().base_image} nor {settings.OFFLINE_BASE_IMAGE} is in the engine",
        "run `mlrig setup engine` to pull or build it",
    )


def _registry_binary() -> Check:
    from mlrig.adapters import registry
    from mlrig.errors import DependencyMissing

    try:
        return Check("registry binary", OK, registry.binary())
    except DependencyMissing as exc:
        image = registry.fallback_image()
        if image is None:
            raise
        return Check(
            "registry binary",
            WARN,
            f"missing; the local stack runs {image} instead",
            exc.hint or "",
            needed=False,
        )


def _pulumi_cli() -> Check:
    path = shutil.which("pulumi")
    if path:
        return Check("pulumi cli", OK, path, needed=False)
    return Check(
        "pulumi cli",
        WARN,
        "not installed (needed only for AWS stacks)",
        "install it: https://www.pulumi.com/docs/install/",
        needed=False,
    )


def stack_checks(name: str) -> list[Check]:
    from mlrig import contract

    try:
        outputs = contract.load(name)
    except MlrigError as exc:
        return [Check("stack outputs", FAIL, exc.message, exc.hint or "")]
    checks = [
        Check(
            "stack outputs",
            OK,
            f"'{outputs.name}' ({outputs.kind}, schema {outputs.schema_version})",
        )
    ]
    checks.append(_guard("mlflow health", lambda: _mlflow_health(outputs)))
    checks.append(_guard("mlflow auth", lambda: _mlflow_auth(outputs)))
    checks.append(_guard("registry auth", lambda: _registry_auth(outputs)))
    checks.append(_guard("dvc remote", lambda: _dvc_remote(outputs)))
    if outputs.kind == "aws":
        checks.append(_guard("aws identity", lambda: _aws_identity(outputs)))
        checks.append(_guard("ecr token", lambda: _ecr_token(outputs)))
    else:
        checks.append(_guard("stack processes", lambda: _local_processes(outputs)))
        checks.append(_guard("file modes", lambda: _file_modes(outputs)))
    checks.append(_guard("endpoints", lambda: _endpoints(outputs)))
    return checks


def _endpoints(outputs: StackOutputs) -> Check:
    """A --public endpoint answers anyone: a warning naming each, with the way to key it.
    On AWS the endpoints are the base stack's endpoint stacks (`deploy list`, which needs
    the Pulumi CLI: without it the check is skipped, saying so)."""
    from mlrig.core.deploy.state import Store
    from mlrig.core.stack.local.state import Layout
    from mlrig.errors import DependencyMissing

    eps: list[tuple[str, bool, int]]  # name, public, key count
    if outputs.kind == "aws":
        from mlrig.core.deploy import aws

        try:
            rows = aws.status(None, stack=outputs.name)
        except DependencyMissing as exc:
            return Check("endpoints", SKIP, f"not checked: {exc.message}", exc.hint or "", False)
        eps = [(str(r["endpoint"]), r["public"] is True, int(str(r["key_count"]))) for r in rows]
    else:
        eps = [(ep.name, ep.public, len(ep.keys)) for ep in Store(Layout(outputs.name).root).all()]
    if not eps:
        return Check("endpoints", SKIP, "none deployed", needed=False)
    public = [name for name, is_public, _keys in eps if is_public]
    if public:
        return Check(
            "endpoints",
            WARN,
            f"public (no key needed): {', '.join(public)}",
            "; ".join(f"`mlrig deploy keys create {n} --stack {outputs.name}`" for n in public)
            + " (its first key ends --public: requests then need a key)",
            needed=False,
        )
    return Check("endpoints", OK, ", ".join(f"{name} ({keys} keys)" for name, _p, keys in eps))


def _reset_fix(outputs: StackOutputs, ref: str) -> str:
    """The fix for a password a service refuses: mlrig owns the local stores, so `up`
    sets a new one there; elsewhere the user has to look where the password comes from."""
    if outputs.kind != "local":
        return "check the password source in `mlrig stack outputs`"
    return (
        f"if you changed it on purpose, write the new one into {ref}; otherwise delete that "
        f"file and run `mlrig stack up --stack {outputs.name}`, which sets a new one"
    )


def _local_processes(outputs: StackOutputs) -> Check:
    from mlrig.core.stack.local.stack import LocalStack

    rows = LocalStack(outputs.name).status()
    bad = [r for r in rows if r.state not in ("running", "stopped", "unhealthy")]
    if bad:
        return Check(
            "stack processes",
            FAIL,
            "; ".join(f"{r.name} {r.state}: {r.detail}".strip(": ") for r in bad),
            _start_fix(outputs),
        )
    return Check("stack processes", OK, ", ".join(f"{r.name} {r.state}" for r in rows))


def _file_modes(outputs: StackOutputs) -> Check:
    from mlrig import paths
    from mlrig.core.shared.files import loose_modes

    root = paths.stack_dir(outputs.name)
    count, examples = loose_modes(root, guarded=("dvc-remote",))
    if count:
        return Check(
            "file modes",
            FAIL,
            f"{count} path(s) other users can read, e.g. {', '.join(map(str, examples[:2]))}",
            f"run `chmod -R go-rwx {root}`",
        )
    return Check("file modes", OK, f"{root}: 0700 folders, 0600 files")


def _start_fix(outputs: StackOutputs) -> str:
    if outputs.kind == "local":
        return f"run `mlrig stack up --stack {outputs.name}`"
    return "check the tracking service in the AWS console (`mlrig stack outputs`)"


def _mlflow_health(outputs: StackOutputs) -> Check:
    from mlrig.adapters import http

    url = f"{outputs.mlflow_tracking_uri}/health"
    try:
        code = http.status(url, timeout=5)
    except OSError as exc:  # requests' connection errors and time-outs alike
        return Check(
            "mlflow health", FAIL, f"{url} unreachable ({type(exc).__name__})", _start_fix(outputs)
        )
    if code != 200:
        return Check("mlflow health", FAIL, f"{url} answered {code}", _start_fix(outputs))
    return Check("mlflow health", OK, url)


def _mlflow_auth(outputs: StackOutputs) -> Check:
    from mlrig.adapters import http
    from mlrig.core.shared import secrets

    if not outputs.mlflow.auth:
        return Check(
            "mlflow auth",
            WARN,
            "the stack declares no authentication",
            "recreate the stack: mlrig always turns MLflow auth on",
            needed=False,
        )
    auth = (outputs.mlflow.auth.username, secrets.resolve(outputs.mlflow.auth.password))
    url = f"{outputs.mlflow_tracking_uri}/api/2.0/mlflow/experiments/search"
    try:
        resp = http.send_json("GET", url, params={"max_results": "1"}, auth=auth, timeout=10)
    except OSError as exc:
        return Check(
            "mlflow auth", FAIL, f"unreachable ({type(exc).__name__})", _start_fix(outputs)
        )
    if resp.status in (401, 403):
        return Check(
            "mlflow auth",
            FAIL,
            f"credentials rejected ({resp.status})",
            _reset_fix(outputs, outputs.mlflow.auth.password.ref),
        )
    if resp.status != 200:
        return Check("mlflow auth", FAIL, f"answered {resp.status}", _start_fix(outputs))
    return Check("mlflow auth", OK, f"user '{outputs.mlflow.auth.username}' accepted")


def _registry_auth(outputs: StackOutputs) -> Check:
    if outputs.registry.kind == "ecr":
        return Check("registry auth", SKIP, "ECR: see the 'ecr token' check", needed=False)
    from mlrig.adapters.registry import RegistryClient
    from mlrig.core.shared import secrets

    auth = outputs.registry.auth
    client = RegistryClient(
        f"http://{outputs.registry.host}",
        auth.username if auth else None,
        secrets.resolve(auth.password) if auth else None,
        timeout=5,
    )
    try:
        client.ping()
    except MlrigError as exc:
        return Check(
            "registry auth",
            FAIL,
            exc.message,
            (_reset_fix(outputs, auth.password.ref) if auth else exc.hint or "")
            if "credentials" in exc.message
            else _start_fix(outputs),
        )
    return Check("registry auth", OK, outputs.registry.url)


def _dvc_remote(outputs: StackOutputs) -> Check:
    url = outputs.dvc_remote_url
    if url.startswith("s3://"):
        from mlrig.adapters import aws

        bucket, _, prefix = url[5:].partition("/")
        s3 = aws.client(
            "s3",
            region=outputs.dvc_remote.region or outputs.region,
            profile=outputs.dvc_remote.profile,
            endpoint_url=outputs.dvc_remote.endpoint_url,
        )
        try:
            s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except Exception as exc:
            raise aws.translate(exc, f"listing {url}") from exc
        return Check("dvc remote", OK, f"{url} (list permission)")
    path = Path(url)
    if not path.is_dir():
        return Check("dvc remote", FAIL, f"{path} does not exist", _start_fix(outputs))
    probe = path / ".mlrig-doctor"
    try:  # a full round trip: write, read back, delete
        probe.write_text("ok")
        if probe.read_text() != "ok":
            raise OSError(0, "what was written does not read back")
        probe.unlink()
    except OSError as exc:
        return Check(
            "dvc remote",
            FAIL,
            f"{path} is not writable ({exc.strerror})",
            "fix the directory's permissions",
        )
    return Check("dvc remote", OK, str(path))


def _aws_identity(outputs: StackOutputs) -> Check:
    from mlrig.adapters import aws

    ident = aws.caller_identity(region=outputs.region)
    return Check("aws identity", OK, ident["arn"])


def _ecr_token(outputs: StackOutputs) -> Check:
    from mlrig.adapters import aws

    ecr = aws.client("ecr", region=outputs.region, endpoint_url=outputs.registry.endpoint_url)
    try:
        token = ecr.get_authorization_token()["authorizationData"][0]
    except Exception as exc:
        raise aws.translate(exc, "getting an ECR token") from exc
    return Check("ecr token", OK, f"valid until {token['expiresAt']}")


@dataclass(frozen=True)
class Report:
    stack: str | None  # the stack checked; None when none was named and none resolves
    checks: list[Check]


def run(flag: str | None) -> Report:
    """The machine's checks, then those of the stack `flag` or the resolver names.

    When no stack resolves (none yet, or several and none chosen) that is one row that
    does not fail the run: the machine can be checked before any stack exists.
    """
    from mlrig.core.stack import stacks
    from mlrig.errors import UsageError

    checks = machine_checks()
    try:
        name: str | None = stacks.resolve_name(flag)
    except UsageError as exc:
        name = None
        checks.append(Check("stack", SKIP, exc.message, exc.hint or "", needed=False))
    if name:
        checks += stack_checks(name)
    return Report(name, checks)


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL and c.needed]
