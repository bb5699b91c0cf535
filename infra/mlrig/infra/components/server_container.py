"""The tracking server's ECS container definition, built from the shared container contract.

`mlrig.tracking.container.container_spec` is the same description the local stack runs the
server from, so the AWS task and the local server cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

from mlrig.tracking import container as ts_container

CONTAINER_NAME = "mlflow"  # the service's load balancer and registry name it


def container_definitions(
    image: str,
    *,
    db_host: str,
    bucket: str,
    artifacts_prefix: str,
    profile: str,
    log_group: str,
    region: str,
    secret_arns: dict[str, str],
    allowed_hosts: list[str],
    oidc: dict[str, Any] | None = None,
    size: str | None = None,
) -> str:
    """The ECS container definition JSON, built from the shared container contract."""
    spec = ts_container.container_spec(
        image=image,
        db_host=db_host,
        db_name=ts_container.DB_NAME,
        db_user=ts_container.DB_USER,
        artifacts_destination=f"s3://{bucket}/{artifacts_prefix}",
        profile=profile,
        allowed_hosts=tuple(allowed_hosts),
        oidc=oidc,
        size=size,
    )
    if set(secret_arns) != set(spec.secret_env_names):
        raise ValueError(f"secrets {sorted(secret_arns)} != {sorted(spec.secret_env_names)}")
    return json.dumps(
        [
            {
                "name": CONTAINER_NAME,
                "image": spec.image,
                "essential": True,
                "user": spec.user,
                "command": list(spec.command),
                "portMappings": [{"containerPort": spec.port, "protocol": "tcp"}],
                "environment": [{"name": k, "value": v} for k, v in sorted(spec.env.items())],
                "secrets": [
                    {"name": k, "valueFrom": secret_arns[k]} for k in spec.secret_env_names
                ],
                "readonlyRootFilesystem": False,  # MLflow writes its auth ini and temp files
                "healthCheck": {
                    "command": [
                        "CMD",
                        "python3",
                        "-c",
                        "import urllib.request; urllib.request.urlopen("
                        f"'http://127.0.0.1:{spec.port}{spec.health_path}', timeout=4)",
                    ],
                    "interval": 30,
                    "timeout": 5,
                    "retries": 3,
                    "startPeriod": 60,
                },
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": log_group,
                        "awslogs-region": region,
                        "awslogs-stream-prefix": "mlflow",
                    },
                },
            }
        ]
    )
