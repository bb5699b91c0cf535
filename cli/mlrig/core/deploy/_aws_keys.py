"""An AWS endpoint's keys: their `{SSHA}` hashes (the local deploy's records) as one JSON
document in a standard-tier SSM SecureString, read by the authorizer function.

SSM rather than Secrets Manager: a standard parameter costs nothing a month (a secret is
$0.40), its reads are free at the authorizer's rate (cached per container), and the hashes
it holds are not secrets that need rotation, only integrity and privacy.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ValidationError

from mlrig.adapters import aws
from mlrig.core.deploy.state import Key
from mlrig.errors import ConfigError


class KeysDocument(BaseModel):
    keys: list[Key] = []


def parameter_name(base_stack: str, endpoint: str) -> str:
    from mlrig.infra.endpoint.config import keys_parameter

    return keys_parameter(base_stack, endpoint)


def read(base_stack: str, endpoint: str, region: str) -> list[Key] | None:
    """The endpoint's key records, or None when it has no key parameter."""
    name = parameter_name(base_stack, endpoint)
    raw = aws.find_parameter(name, region=region)
    if raw is None:
        return None
    try:
        return KeysDocument.model_validate_json(raw).keys
    except ValidationError as exc:
        raise ConfigError(
            f"parameter {name} is not an mlrig key document ({exc.error_count()} problems)",
            hint=f"revoke and re-create the endpoint's keys, or delete {name} and redeploy",
        ) from None


def write(base_stack: str, endpoint: str, region: str, keys: list[Key]) -> None:
    doc = {
        "keys": [{"id": k.id, "hash": k.hash, "created_at": k.created_at.isoformat()} for k in keys]
    }
    aws.put_secure_parameter(
        parameter_name(base_stack, endpoint),
        json.dumps(doc),
        description=f"mlrig endpoint {endpoint}: key hashes (never secrets)",
        region=region,
    )


def delete(base_stack: str, endpoint: str, region: str) -> None:
    aws.delete_parameter(parameter_name(base_stack, endpoint), region=region)
