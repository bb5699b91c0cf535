"""`mlrig stack rehearse`: the AWS tracking server's image and task contract run on loopback.

Real PostgreSQL (TLS, scram, a non-superuser owner) and an S3 API stand in for RDS and S3; the
container gets the contract's command, user, env, secrets, memory and CPU, then is checked.
This module checks the request and runs the parts in order: _rehearse.env starts what is
needed, _rehearse.checks checks it, _rehearse.model holds the report.
"""

from __future__ import annotations

import contextlib

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters import postgres
from mlrig.core.shared import aws_inputs
from mlrig.core.shared.progress import Progress
from mlrig.core.stack._rehearse.checks import run_all
from mlrig.core.stack._rehearse.contract import RunConfig, artifacts_prefix, run_config
from mlrig.core.stack._rehearse.env import Services, moto_binary, stop_kept
from mlrig.core.stack._rehearse.model import (
    FAULT_WAIT_SECONDS,
    FAULTS,
    MEMORY_LIMIT_SHARE,
    Check,
    Report,
    Request,
)
from mlrig.core.stack._rehearse.session import Session, Stop, exit_reason
from mlrig.core.stack.local.stack import port_is_free
from mlrig.errors import PortInUse, UsageError
from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container

# What callers (the command, tests, bench) use, whichever module defines it. The load
# benchmark (bench/load) runs its servers through the rehearsal's own parts: Services,
# moto_binary, artifacts_prefix and exit_reason.
__all__ = [
    "FAULTS",
    "FAULT_WAIT_SECONDS",
    "MEMORY_LIMIT_SHARE",
    "Check",
    "Report",
    "Request",
    "RunConfig",
    "Services",
    "artifacts_prefix",
    "exit_reason",
    "moto_binary",
    "rehearse",
    "run_config",
    "stop_kept",
]


def _validate(req: Request) -> None:
    if req.profile not in ts_container.CONTAINER_SIZES:
        raise UsageError(
            f"unknown profile {req.profile!r}",
            hint=f"use one of: {', '.join(sorted(ts_container.CONTAINER_SIZES))}",
        )
    aws_inputs.check_server_size(req.server_size)
    if req.fault not in (None, *FAULTS):
        raise UsageError(f"unknown fault {req.fault!r}", hint=f"use one of: {', '.join(FAULTS)}")
    if req.runs < 1:
        raise UsageError("--runs must be at least 1")
    if req.s3_endpoint is not None and not req.s3_endpoint.startswith(("http://", "https://")):
        raise UsageError(
            f"--s3-endpoint {req.s3_endpoint!r} is not a URL", hint="give it as http(s)://host:port"
        )


def rehearse(req: Request, progress: Progress = lambda _m: None) -> Report:
    """Run every check; services are stopped (unless keep) whatever happens."""
    _validate(req)
    # Both missing dependencies are reported before anything is built or started.
    docker_adapter.client()
    postgres.bin_dir()
    if req.s3_endpoint is None:
        moto_binary()
    contract_port = req.port or ts.CONTAINER_PORT
    if not port_is_free(contract_port):
        raise PortInUse(
            f"port {contract_port} (the tracking server's port) is in use here",
            hint="stop what listens on it, or pass --port",
        )
    report = Report(profile=req.profile)
    with Services(req, progress) as services:
        report.image = services.image
        report.image_size_mb = services.image_size_mb
        report.directory, report.kept = str(services.root), req.keep
        report.url = services.url
        report.run_config = services.config().public()
        with contextlib.suppress(Stop):
            run_all(Session(req, services, report, progress))
    return report
