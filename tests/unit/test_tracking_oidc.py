"""OIDC token checks, the issuer key cache and its rate limit, the rules file, and the
server modules' independence from the rest of mlrig (the server image copies them alone)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from mlrig.errors import UsageError
from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container
from mlrig.tracking import oidc

ISSUER = "https://issuer.example"
AUD = "mlrig:dev"


class FakeIssuer:
    """The two documents an issuer publishes, served to KeySet by a plain function."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {"rsa-1": rsa.generate_private_key(65537, 2048)}
        self.calls: list[str] = []
        self.down = False

    def fetch(self, url: str) -> Any:
        self.calls.append(url)
        if self.down:
            raise OSError("unreachable")
        if url == f"{ISSUER}/.well-known/openid-configuration":
            return {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/keys"}
        assert url == f"{ISSUER}/keys"
        out = []
        for kid, key in self.keys.items():
            algo = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
            out.append({**json.loads(algo.to_jwk(key.public_key())), "kid": kid})
        return {"keys": out}

    @property
    def jwks_fetches(self) -> int:
        return sum(u.endswith("/keys") for u in self.calls)

    def token(self, kid: str = "rsa-1", alg: str = "RS256", **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUD,
            "iat": now,
            "exp": now + 300,
            "repository": "acme/demo",
            "ref": "refs/heads/main",
            **overrides,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.keys[kid], algorithm=alg, headers={"kid": kid})


CONFIG = oidc.OidcConfig(ISSUER, AUD, (oidc.Rule("acme/demo", "repo-demo", ("refs/heads/*",)),))


@pytest.fixture
def issuer() -> FakeIssuer:
    return FakeIssuer()


def test_a_good_token_maps_to_the_rules_identity(issuer: FakeIssuer) -> None:
    keys = oidc.KeySet(issuer.fetch)
    got = oidc.verify(issuer.token(), CONFIG, keys)
    assert got == oidc.Verified("repo-demo", "acme/demo", "refs/heads/main")
    assert oidc.verify(issuer.token(repository="ACME/Demo"), CONFIG, keys).identity == "repo-demo"
    issuer.keys["ec-1"] = ec.generate_private_key(ec.SECP256R1())
    fresh = oidc.KeySet(issuer.fetch)  # the first set was fetched before this key existed
    assert oidc.verify(issuer.token("ec-1", "ES256"), CONFIG, fresh).identity == "repo-demo"


# resolved when the test runs: a time computed at collection is stale by the time a long
# parallel run reaches the test
LATER = "<ten minutes from now>"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": 1000}, "expired"),
        ({"nbf": LATER}, "not valid yet"),
        ({"aud": "mlrig:prod"}, "another audience"),
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"repository": "acme/other"}, "no rule"),
        ({"ref": "refs/heads/a/b"}, "no rule"),  # `*` stays within one segment
        ({"ref": "refs/tags/v1"}, "no rule"),
        ({"repository": None}, "repository/ref"),
        ({"exp": None}, "'exp'"),
    ],
)
def test_bad_claims_are_rejected_with_a_reason(
    issuer: FakeIssuer, overrides: dict[str, Any], reason: str
) -> None:
    claims = {k: int(time.time()) + 600 if v == LATER else v for k, v in overrides.items()}
    with pytest.raises(oidc.TokenRejected, match=reason):
        oidc.verify(issuer.token(**claims), CONFIG, oidc.KeySet(issuer.fetch))


def test_only_asymmetric_algorithms_and_only_with_their_own_key(issuer: FakeIssuer) -> None:
    keys = oidc.KeySet(issuer.fetch)
    unsigned = jwt.encode({"iss": ISSUER}, None, algorithm="none", headers={"kid": "rsa-1"})
    with pytest.raises(oidc.TokenRejected, match="'none' is not accepted"):
        oidc.verify(unsigned, CONFIG, keys)
    hs = jwt.encode(
        {"iss": ISSUER},
        "secret-of-32-bytes-at-least-xxxxx",
        algorithm="HS256",
        headers={"kid": "rsa-1"},
    )
    with pytest.raises(oidc.TokenRejected, match="'HS256' is not accepted"):
        oidc.verify(hs, CONFIG, keys)
    issuer.keys["ec-1"] = ec.generate_private_key(ec.SECP256R1())
    forged = issuer.token("ec-1", "ES256").split(".")
    header = jwt.utils.base64url_encode(json.dumps({"alg": "RS256", "kid": "ec-1"}).encode())
    with pytest.raises(oidc.TokenRejected, match="does not match its key"):
        oidc.verify(".".join([header.decode(), *forged[1:]]), CONFIG, keys)
    with pytest.raises(oidc.TokenRejected, match="not a JWT"):
        oidc.verify("garbage", CONFIG, keys)
    with pytest.raises(oidc.TokenRejected, match="too large"):
        oidc.verify("a" * (oidc.MAX_TOKEN_BYTES + 1), CONFIG, keys)


def test_unknown_key_ids_refetch_at_most_once_per_interval(issuer: FakeIssuer) -> None:
    now = [0.0]
    keys = oidc.KeySet(issuer.fetch, clock=lambda: now[0])
    oidc.verify(issuer.token(), CONFIG, keys)
    assert issuer.jwks_fetches == 1
    stranger = rsa.generate_private_key(65537, 2048)
    for i in range(150):  # a flood of made-up key ids over 15 s
        bogus = jwt.encode({"iss": ISSUER}, stranger, algorithm="RS256", headers={"kid": f"k{i}"})
        with pytest.raises(oidc.TokenRejected, match="key id is not among"):
            oidc.verify(bogus, CONFIG, keys)
        now[0] += 0.1
    assert issuer.jwks_fetches == 1 + 1  # one look when the interval had passed, no more
    issuer.keys["rsa-2"] = rsa.generate_private_key(65537, 2048)  # rotation at the issuer
    now[0] += oidc.REFRESH_MIN_SECONDS
    assert oidc.verify(issuer.token("rsa-2"), CONFIG, keys).identity == "repo-demo"
    assert oidc.verify(issuer.token("rsa-1"), CONFIG, keys).identity == "repo-demo"
    assert issuer.jwks_fetches == 3
    for _ in range(20):  # known keys: served from the cache
        oidc.verify(issuer.token("rsa-2"), CONFIG, keys)
    assert issuer.jwks_fetches == 3


def test_the_key_set_is_refreshed_when_old_and_kept_when_the_issuer_is_down(
    issuer: FakeIssuer,
) -> None:
    now = [0.0]
    keys = oidc.KeySet(issuer.fetch, clock=lambda: now[0])
    oidc.verify(issuer.token(), CONFIG, keys)
    issuer.down = True
    now[0] += oidc.JWKS_MAX_AGE_SECONDS
    assert oidc.verify(issuer.token(), CONFIG, keys).identity == "repo-demo"  # stale but kept
    assert issuer.jwks_fetches == 1 and len(issuer.calls) == 3  # it tried
    fresh = oidc.KeySet(issuer.fetch, clock=lambda: now[0])
    with pytest.raises(oidc.TokenRejected, match="could not be fetched"):
        oidc.verify(issuer.token(), CONFIG, fresh)


def test_a_discovery_document_for_another_issuer_is_refused(issuer: FakeIssuer) -> None:
    def fetch(url: str) -> Any:
        doc = issuer.fetch(url)
        return {**doc, "issuer": "https://evil.example"} if "well-known" in url else doc

    with pytest.raises(oidc.TokenRejected, match="could not be fetched"):
        oidc.verify(issuer.token(), CONFIG, oidc.KeySet(fetch))


def test_ref_globs_follow_githubs_rules() -> None:
    assert oidc.ref_glob("refs/heads/*").fullmatch("refs/heads/main")
    assert not oidc.ref_glob("refs/heads/*").fullmatch("refs/heads/a/b")
    assert oidc.ref_glob("refs/heads/**").fullmatch("refs/heads/a/b")
    assert oidc.ref_glob("refs/tags/v?").fullmatch("refs/tags/v1")
    assert not oidc.ref_glob("refs/heads/main").fullmatch("refs/heads/main2")
    assert not oidc.ref_glob("refs/heads/ma.n").fullmatch("refs/heads/maXn")


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ([], "JSON object"),
        ({"issuer": "http://evil.example", "audience": AUD}, "https"),
        ({"issuer": ISSUER, "audience": ""}, "audience"),
        (
            {"issuer": ISSUER, "audience": AUD, "rules": [{"repository": "x", "identity": "i"}]},
            "owner/name",
        ),
        ({"issuer": ISSUER, "audience": AUD, "rules": [{"repository": "a/b"}]}, "no identity"),
        (
            {
                "issuer": ISSUER,
                "audience": AUD,
                "rules": [{"repository": "a/b", "identity": "i", "refs": "main"}],
            },
            "list",
        ),
    ],
)
def test_a_bad_config_names_what_is_wrong(doc: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        oidc.parse_config(doc)


def test_the_config_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "oidc.json"
    source = oidc.ConfigSource({oidc.ENV_CONFIG_FILE: str(path)})
    with pytest.raises(oidc.TokenRejected, match="no OIDC config file"):
        source.get()
    path.write_text(json.dumps(CONFIG.to_json()))
    assert source.get() == CONFIG
    path.write_text("{broken")
    with pytest.raises(oidc.TokenRejected, match="invalid"):
        source.get()
    assert oidc.ConfigSource({oidc.ENV_CONFIG: json.dumps(CONFIG.to_json())}).get() == CONFIG
    with pytest.raises(oidc.TokenRejected, match="no OIDC issuer"):
        oidc.ConfigSource({}).get()


def test_rules_are_added_replaced_and_removed(tmp_path: Path) -> None:
    from mlrig.core.stack import oidc_rules

    path = tmp_path / "oidc.json"
    assert oidc_rules.add_rule("dev", repository="acme/a", identity="repo-a", path=path)
    assert not oidc_rules.add_rule("dev", repository="acme/a", identity="repo-a", path=path)
    assert oidc_rules.add_rule("dev", repository="acme/b", identity="repo-b", path=path)
    assert oidc_rules.add_rule(
        "dev", repository="ACME/a", identity="repo-a2", path=path, refs=("refs/heads/main",)
    )
    config = oidc_rules.load(path, "dev")
    assert (config.issuer, config.audience) == (oidc.GITHUB_ISSUER, "mlrig:dev")
    assert [(r.repository, r.identity) for r in config.rules] == [
        ("acme/b", "repo-b"),
        ("ACME/a", "repo-a2"),
    ]
    assert path.stat().st_mode & 0o777 == 0o600
    assert oidc_rules.remove_rule("dev", "acme/b", path=path)
    assert not oidc_rules.remove_rule("dev", "acme/b", path=path)
    with pytest.raises(UsageError, match="owner/name"):
        oidc_rules.add_rule("dev", repository="no-owner", identity="x", path=path)


def test_runtimes_pass_the_config_to_the_server(tmp_path: Path) -> None:
    plan = ts.local_plan(
        data_dir=tmp_path,
        port=1,
        admin_password="a",
        flask_secret="f",
        auth_config_path=tmp_path / "a.ini",
        oidc_config_path=tmp_path / "o.json",
    )
    assert plan.env[oidc.ENV_CONFIG_FILE] == str(tmp_path / "o.json")
    spec = ts_container.container_spec(
        image="i",
        db_host="h",
        db_name="d",
        db_user="u",
        artifacts_destination="s3://b/a",
        profile="small",
        oidc=CONFIG.to_json(),
    )
    assert oidc.ConfigSource(spec.env).get() == CONFIG
    assert oidc.ENV_CONFIG not in spec.secret_env_names


def test_audit_lines_name_the_object_and_only_writes_count() -> None:
    from mlrig.core.access._log import parse_line
    from mlrig.tracking import audit

    assert audit.is_write("POST", "/api/2.0/mlflow/runs/create")
    assert audit.is_write("DELETE", "/api/2.0/mlflow/registered-models/delete")
    assert not audit.is_write("POST", "/api/2.0/mlflow/runs/search")
    assert not audit.is_write("GET", "/api/2.0/mlflow/runs/get")
    assert not audit.is_write("POST", "/graphql")
    mv = audit.object_of("/api/2.0/mlflow/model-versions/create", {"name": "m", "version": 3})
    assert mv == {"model": "m", "version": "3"}
    assert audit.object_of("/graphql", {"operationName": "Q", "query": "{...}"}) == {
        "graphql_operation": "Q"
    }
    assert audit.object_of("/x", {"password": "secret", "value": "v"}) == {}
    long = audit.object_of("/x", {"run_id": "r" * 1000})["run_id"]
    assert len(long) == audit.MAX_FIELD_CHARS + 3
    text = audit.line(
        user="u", auth="basic", method="POST", path="/p", obj={}, status=200, source="s"
    )
    entry = parse_line(text)
    assert entry is not None and (entry.user, entry.status, entry.failed) == ("u", 200, False)
    assert parse_line("2026/01/01 INFO uvicorn: started") is None


def test_a_verified_token_is_remembered_briefly_but_rules_apply_every_time(
    issuer: FakeIssuer,
) -> None:
    now = [time.time()]
    cache = oidc.VerifiedTokens(ttl=60.0, max_entries=2, clock=lambda: now[0])
    keys = oidc.KeySet(issuer.fetch)
    token = issuer.token(exp=int(now[0]) + 30)
    assert oidc.verify(token, CONFIG, keys, cache).identity == "repo-demo"
    assert len(cache) == 1
    issuer.down = True
    issuer.keys.clear()  # a cached token is not checked against the issuer again ...
    assert oidc.verify(token, CONFIG, keys, cache).identity == "repo-demo"
    no_rules = oidc.OidcConfig(ISSUER, AUD, ())
    with pytest.raises(oidc.TokenRejected, match="no rule"):  # ... but the rules always are
        oidc.verify(token, no_rules, keys, cache)
    other_aud = oidc.OidcConfig(ISSUER, "mlrig:prod", CONFIG.rules)
    with pytest.raises(oidc.TokenRejected):  # another audience: not the same cache entry
        oidc.verify(token, other_aud, keys, cache)
    key = oidc.VerifiedTokens.key(CONFIG, token)
    assert cache.get(key) == ("acme/demo", "refs/heads/main")
    now[0] += 31  # past the token's own exp: forgotten, so checked in full again
    assert cache.get(key) is None
    for i in range(5):
        cache.put(bytes([i]), "a/b", "r", now[0] + 100)
    assert len(cache) == 2


def test_mlflows_graphql_mutations_only_read() -> None:
    """/graphql is left out of the audit trail as a read: true while every mutation searches."""
    from mlflow.server.graphql.graphql_schema_extensions import schema

    fields = set(schema.graphql_schema.mutation_type.fields)
    assert fields == {"mlflowSearchDatasets", "mlflowSearchRuns", "testMutation"}, fields


def test_an_aws_stacks_rules_become_pulumi_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.core.stack import oidc_rules

    monkeypatch.setenv("MLRIG_HOME", str(tmp_path))
    assert oidc_rules.pulumi_config("prod") == {}  # never had a rule: no config at all
    from mlrig import paths

    # no local state: an AWS stack's file, beside its outputs
    assert oidc_rules.config_path("prod") == paths.stack_dir("prod") / "oidc.json"
    assert oidc_rules.add_rule("prod", repository="acme/a", identity="repo-a")
    conf = oidc_rules.pulumi_config("prod")
    assert json.loads(conf["mlrig:oidcRules"]) == [
        {"repository": "acme/a", "refs": ["refs/heads/*"], "identity": "repo-a"}
    ]
    assert set(conf) == {"mlrig:oidcRules"}  # GitHub's issuer, the default audience
    assert oidc_rules.remove_rule("prod", "acme/a")
    assert oidc_rules.pulumi_config("prod") == {"mlrig:oidcRules": "[]"}
