"""OIDC bearer tokens on a real `mlflow server` of a local stack, issued by a local issuer:
a good token acts as its repository's machine identity with exactly that identity's grants;
every kind of bad token is a 401 (never a 5xx); key rotation at the issuer is picked up; a
rule added to the stack's file works without a restart; Basic auth is unchanged."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

GET_BY_NAME = "/api/2.0/mlflow/experiments/get-by-name"
CREATE_RUN = "/api/2.0/mlflow/runs/create"


def _call(stack: dict[str, Any], token: str | None, method: str, path: str, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.request(method, f"{stack['url']}{path}", headers=headers, timeout=30, **kw)


def _get(stack: dict[str, Any], token: str, name: str = "demo") -> int:
    return _call(stack, token, "GET", GET_BY_NAME, params={"experiment_name": name}).status_code


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _hs256(claims: dict[str, Any], kid: str, secret: bytes) -> str:
    """The key-confusion forgery: HMAC-signed with the issuer's public key as the secret."""
    import hashlib
    import hmac

    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_a_valid_token_acts_as_the_identity_with_exactly_its_grants(
    oidc_stack: dict[str, Any], oidc_issuer: Any
) -> None:
    token = oidc_issuer.token(oidc_stack["audience"])
    assert _get(oidc_stack, token) == 200
    resp = _call(
        oidc_stack,
        token,
        "POST",
        CREATE_RUN,
        json={"experiment_id": oidc_stack["experiments"]["demo"]},
    )
    assert resp.status_code == 200, resp.text[:200]
    assert _get(oidc_stack, token, "other") == 403  # no grant there: NO_PERMISSIONS
    other_run = _call(
        oidc_stack,
        token,
        "POST",
        CREATE_RUN,
        json={"experiment_id": oidc_stack["experiments"]["other"]},
    )
    assert other_run.status_code == 403
    users = _call(
        oidc_stack,
        token,
        "POST",
        "/api/2.0/mlflow/users/create",
        json={"username": "mallory", "password": "m" * 24},
    )
    assert users.status_code == 403  # a machine identity is no admin
    me = _call(oidc_stack, token, "GET", "/api/2.0/mlflow/users/current")
    assert me.status_code == 200 and me.json()["user"]["username"] == "repo-demo"


def test_mlflows_own_client_sends_the_token_from_mlflow_tracking_token(
    oidc_stack: dict[str, Any], oidc_issuer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", oidc_issuer.token(oidc_stack["audience"]))
    client = MlflowClient(tracking_uri=oidc_stack["url"])
    run = client.create_run(oidc_stack["experiments"]["demo"])
    client.log_param(run.info.run_id, "alpha", "0.5")
    assert client.get_run(run.info.run_id).data.params == {"alpha": "0.5"}


def test_bad_tokens_are_all_401_and_never_5xx(oidc_stack: dict[str, Any], oidc_issuer: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    aud = oidc_stack["audience"]
    good = oidc_issuer.token(aud)
    head, payload, sig = good.split(".")
    claims = oidc_issuer.claims(aud)
    public_pem = (
        oidc_issuer.keys[oidc_issuer.kid]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = {
        "expired": oidc_issuer.token(aud, iat=1_000_000, nbf=1_000_000, exp=1_000_300),
        "not yet valid": oidc_issuer.token(aud, nbf=int(claims["iat"]) + 3600),
        "wrong audience": oidc_issuer.token("mlrig:another-stack"),
        "wrong issuer": oidc_issuer.token(aud, iss="https://token.actions.githubusercontent.com"),
        "wrong repository": oidc_issuer.token(aud, repository="acme/other"),
        "wrong ref": oidc_issuer.token(aud, ref="refs/heads/feature"),
        "no repository": oidc_issuer.token(aud, repository=None),
        "no exp": oidc_issuer.token(aud, exp=None),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': oidc_issuer.kid})}.{payload}.",
        "HS256 with the public key": _hs256(claims, oidc_issuer.kid, public_pem),
        "tampered payload": f"{head}.{_b64({**claims, 'repository': 'acme/demo2'})}.{sig}",
        "signed by another key": oidc_issuer.token(aud, key=stranger),
        "unknown kid": oidc_issuer.token(aud, kid="key-999", key=stranger),
        "garbage": "not-a-jwt",
        "empty": "",
    }
    fetches = oidc_issuer.fetches
    for what, token in bad.items():
        for method, path, kw in (
            ("GET", GET_BY_NAME, {"params": {"experiment_name": "demo"}}),
            ("POST", CREATE_RUN, {"json": {"experiment_id": oidc_stack["experiments"]["demo"]}}),
            ("GET", "/ajax-api/3.0/jobs/search", {}),  # an ASGI route: MLflow's own middleware
        ):
            resp = _call(oidc_stack, token, method, path, **kw)
            assert resp.status_code == 401, f"{what} {method} {path}: {resp.status_code}"
            assert "Not authenticated" in resp.text
            assert token[:40] not in resp.text or not token
    assert oidc_issuer.fetches > fetches  # the unknown key id made the server look again
    assert _get(oidc_stack, good) == 200


def test_a_rotated_key_is_picked_up_and_the_old_one_still_works_while_published(
    oidc_stack: dict[str, Any], oidc_issuer: Any
) -> None:
    old = oidc_issuer.token(oidc_stack["audience"])
    assert _get(oidc_stack, old) == 200
    new_kid = oidc_issuer.rotate()
    new = oidc_issuer.token(oidc_stack["audience"], kid=new_kid)
    assert _get(oidc_stack, new) == 200
    assert _get(oidc_stack, old) == 200


def test_a_rule_added_to_the_file_works_without_restart_and_needs_the_identity(
    oidc_stack: dict[str, Any], oidc_issuer: Any
) -> None:
    from mlrig.core.stack import oidc_rules

    path = oidc_stack["config_path"]
    token = oidc_issuer.token(oidc_stack["audience"], repository="acme/late")
    assert _get(oidc_stack, token) == 401
    assert oidc_rules.add_rule("oidctest", repository="acme/late", identity="repo-late", path=path)
    resp = _call(oidc_stack, token, "GET", GET_BY_NAME, params={"experiment_name": "demo"})
    assert resp.status_code == 401 and "does not exist" in resp.text  # no such user yet
    requests.post(
        f"{oidc_stack['url']}/api/2.0/mlflow/users/create",
        json={"username": "repo-late", "password": "y" * 24},
        auth=oidc_stack["admin"],
        timeout=30,
    ).raise_for_status()
    assert _get(oidc_stack, token) == 403  # authenticated; no grant on 'demo'
    assert not oidc_rules.add_rule(
        "oidctest", repository="acme/late", identity="repo-late", path=path
    )  # already there: nothing written
    assert oidc_rules.remove_rule("oidctest", "acme/late", path=path)
    assert _get(oidc_stack, token) == 401


def test_basic_auth_is_unchanged(oidc_stack: dict[str, Any]) -> None:
    url = f"{oidc_stack['url']}{GET_BY_NAME}"
    params = {"experiment_name": "demo"}
    assert requests.get(url, params=params, auth=oidc_stack["admin"], timeout=30).status_code == 200
    assert requests.get(url, params=params, auth=("admin", "wrong"), timeout=30).status_code == 401
    assert requests.get(url, params=params, timeout=30).status_code == 401
    resp = requests.get(url, params=params, auth=("repo-demo", "x" * 24), timeout=30)
    assert resp.status_code == 200  # the identity's password works too, with the same grants


def test_add_machine_with_a_github_repo_lets_that_repos_tokens_act_as_its_identity(
    oidc_stack: dict[str, Any], oidc_issuer: Any
) -> None:
    """What `mlrig init --github-repo` and `mlrig access add-machine --github-repo` do: the
    identity, EDIT on its own experiment only, and the rule that maps the repo's tokens to it."""
    from mlrig import contract
    from mlrig.core.access import accounts as access

    token = oidc_issuer.token(oidc_stack["audience"], repository="acme/keyless")
    assert _get(oidc_stack, token, "keyless") == 401  # no rule yet
    result = access.add_machine(contract.load("oidctest"), "keyless", "acme/keyless")
    assert (result.user, result.oidc_repository) == ("repo-keyless", "acme/keyless")
    assert _get(oidc_stack, token, "keyless") == 200  # the rule is read without a restart
    assert _get(oidc_stack, token, "other") == 403  # and only its own grants apply
    resp = _call(oidc_stack, token, "POST", CREATE_RUN, json={"experiment_id": "0"})
    assert resp.status_code == 403
    pr_token = oidc_issuer.token(
        oidc_stack["audience"], repository="acme/keyless", ref="refs/pull/7/merge"
    )
    assert _get(oidc_stack, pr_token, "keyless") == 401  # default refs: branches only
