"""OIDC bearer tokens on the tracking server: config, the issuer's key set, token checks.

A GitHub Actions job sends its OIDC token as `Authorization: Bearer <JWT>` (MLflow's client
does when MLFLOW_TRACKING_TOKEN is set). The token is accepted when its signature verifies
against the issuer's published keys (RS256/ES256 only), its issuer, audience and times are
right, and its `repository` and `ref` claims match one of the stack's rules; the request then
acts as that rule's machine identity, so MLflow's own grants apply.

Where the config comes from (read by the server process):
- MLRIG_OIDC_CONFIG: the JSON document itself (the AWS task: Pulumi config -> task env);
- MLRIG_OIDC_CONFIG_FILE: a path to it (the local stack: `<stack>/mlflow/oidc.json`), re-read
  when its modification time changes, so a rule added by `mlrig init` works without restart.
The document: {"issuer": URL, "audience": "mlrig:<stack>", "rules": [{"repository":
"owner/name", "refs": ["refs/heads/*"], "identity": "repo-name"}]}.

Server-side and neutral: imports nothing from mlrig but its sibling tracking_* modules (the
server image copies them alone); PyJWT is imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlrig.tracking.config import ENV_OIDC_CONFIG, ENV_OIDC_CONFIG_FILE

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
DEFAULT_REFS = ("refs/heads/*",)
ENV_CONFIG = ENV_OIDC_CONFIG
ENV_CONFIG_FILE = ENV_OIDC_CONFIG_FILE
# Only asymmetric algorithms: `none` and HS256 (which a confused verifier would check with
# the public key as an HMAC secret) are refused before any key is looked at.
ALGORITHMS = ("RS256", "ES256")
# Clock skew tolerated on exp/nbf/iat: GitHub's tokens live 5-10 minutes.
LEEWAY_SECONDS = 30
# The key set is kept this long, then fetched again on the next token; a token naming a
# key id the cached set lacks triggers a fetch at most once per REFRESH_MIN_SECONDS (per
# server process), so a stream of made-up key ids cannot make the server hammer the issuer.
JWKS_MAX_AGE_SECONDS = 3600.0
REFRESH_MIN_SECONDS = 10.0
FETCH_TIMEOUT_SECONDS = 5.0
MAX_DOCUMENT_BYTES = 1 << 20
MAX_TOKEN_BYTES = 16 << 10
# A token that passed every check is remembered (by digest, never the token) for at most
# this long and never past its own expiry: a CI job sends the same token on every request,
# and checking its signature again costs ~0.3-1 ms of CPU. Rules are applied on every
# request, so a removed rule bites at once; a key withdrawn by the issuer stops a token it
# signed within this window.
VERIFIED_CACHE_SECONDS = 60.0
VERIFIED_CACHE_MAX_ENTRIES = 4096


def default_audience(stack: str) -> str:
    return f"mlrig:{stack}"


class TokenRejected(Exception):
    """A short, token-free reason the bearer token is not accepted (answered with 401)."""


@dataclass(frozen=True)
class Rule:
    repository: str
    identity: str
    refs: tuple[str, ...] = DEFAULT_REFS

    def matches(self, repository: str, ref: str) -> bool:
        return repository.casefold() == self.repository.casefold() and any(
            ref_glob(p).fullmatch(ref) for p in self.refs
        )

    def to_json(self) -> dict[str, Any]:
        return {"repository": self.repository, "refs": list(self.refs), "identity": self.identity}


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    rules: tuple[Rule, ...] = ()
    refresh_min_seconds: float = REFRESH_MIN_SECONDS

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "issuer": self.issuer,
            "audience": self.audience,
            "rules": [r.to_json() for r in self.rules],
        }
        if self.refresh_min_seconds != REFRESH_MIN_SECONDS:
            doc["jwks_refresh_min_seconds"] = self.refresh_min_seconds
        return doc

    def identity_for(self, repository: str, ref: str) -> str | None:
        return next((r.identity for r in self.rules if r.matches(repository, ref)), None)


_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def parse_config(doc: Any) -> OidcConfig:
    """The config from its JSON form; ValueError names the first thing wrong."""
    if not isinstance(doc, dict):
        raise ValueError("the OIDC config must be a JSON object")
    issuer, audience = doc.get("issuer"), doc.get("audience")
    if not isinstance(issuer, str) or not issuer.startswith(("https://", "http://127.0.0.1")):
        raise ValueError("'issuer' must be an https URL")
    if not isinstance(audience, str) or not audience:
        raise ValueError("'audience' must be a non-empty string")
    rules = []
    for raw in doc.get("rules") or []:
        if not isinstance(raw, dict):
            raise ValueError("each rule must be an object")
        repo, ident, refs = raw.get("repository"), raw.get("identity"), raw.get("refs")
        if not isinstance(repo, str) or not _REPOSITORY.fullmatch(repo):
            raise ValueError(f"rule repository {repo!r} is not 'owner/name'")
        if not isinstance(ident, str) or not ident:
            raise ValueError(f"rule for {repo} names no identity")
        refs = list(DEFAULT_REFS) if refs is None else refs
        if not isinstance(refs, list) or not all(isinstance(r, str) and r for r in refs):
            raise ValueError(f"rule for {repo}: 'refs' must be a list of ref globs")
        rules.append(Rule(repo, ident, tuple(refs)))
    refresh = doc.get("jwks_refresh_min_seconds", REFRESH_MIN_SECONDS)
    if not isinstance(refresh, int | float) or refresh < 0:
        raise ValueError("'jwks_refresh_min_seconds' must be a number >= 0")
    return OidcConfig(issuer.rstrip("/"), audience, tuple(rules), float(refresh))


def ref_glob(pattern: str) -> re.Pattern[str]:
    """GitHub's ref globs: `*` stays within one path segment, `**` crosses them, `?` is one
    character."""
    out = []
    for part in re.split(r"(\*\*|\*|\?)", pattern):
        out.append({"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part) or re.escape(part))
    return re.compile("".join(out))


class ConfigSource:
    """The server's current config: from the env JSON once, or from the file, re-read when
    its modification time changes. A broken file keeps nothing (bearer tokens get 401)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._inline = env.get(ENV_CONFIG)
        self._file = env.get(ENV_CONFIG_FILE)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = (-1, -1, -1)  # not read yet
        self._config: OidcConfig | None = None
        self._error = "this server accepts no bearer tokens (no OIDC issuer configured)"
        if self._inline:
            self._load(self._inline)

    def _load(self, text: str) -> None:
        try:
            self._config, self._error = parse_config(json.loads(text)), ""
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            self._config, self._error = None, f"the server's OIDC config is invalid: {exc}"

    def get(self) -> OidcConfig:
        """The config, or TokenRejected saying why there is none."""
        if self._file and not self._inline:
            try:
                st = os.stat(self._file)
                stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                stamp = None
            if stamp != self._stamp:
                with self._lock:
                    if stamp is None:
                        self._config, self._error = None, "this server has no OIDC config file"
                    else:
                        try:
                            with open(self._file, encoding="utf-8") as fh:
                                self._load(fh.read(MAX_DOCUMENT_BYTES))
                        except OSError as exc:
                            self._config = None
                            self._error = f"the OIDC config file is unreadable ({exc.strerror})"
                    self._stamp = stamp
        if self._config is None:
            raise TokenRejected(self._error)
        return self._config


def fetch_json(url: str) -> Any:
    """GET a JSON document (the discovery document or the key set), bounded in time and size."""
    import urllib.request

    if not url.startswith(("https://", "http://")):
        raise ValueError("only http(s) URLs are fetched")
    req = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT_SECONDS) as resp:  # noqa: S310
        return json.loads(resp.read(MAX_DOCUMENT_BYTES))


class KeySet:
    """The issuer's signing keys by key id, fetched through its discovery document."""

    def __init__(
        self,
        fetch: Callable[[str], Any] = fetch_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch, self._clock = fetch, clock
        self._lock = threading.Lock()
        self._issuer = ""
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None  # last attempt, successful or not
        self._loaded_at: float | None = None  # last success
        self.fetches = 0

    def key(self, issuer: str, kid: str, refresh_min: float = REFRESH_MIN_SECONDS) -> Any:
        """The PyJWK for `kid`; TokenRejected when the issuer does not publish it."""
        with self._lock:
            now = self._clock()
            if issuer != self._issuer:
                self._issuer, self._keys, self._fetched_at, self._loaded_at = issuer, {}, None, None
            stale = self._loaded_at is None or now - self._loaded_at >= JWKS_MAX_AGE_SECONDS
            may_fetch = self._fetched_at is None or now - self._fetched_at >= refresh_min
            if (stale or kid not in self._keys) and may_fetch:
                self._fetched_at = now
                self.fetches += 1
                try:
                    self._keys = self._load(issuer)
                    self._loaded_at = now
                except Exception as exc:  # noqa: BLE001 - any failure to fetch is the same 401
                    if not self._keys:
                        raise TokenRejected(
                            f"the issuer's keys could not be fetched ({type(exc).__name__})"
                        ) from None
            found = self._keys.get(kid)
        if found is None:
            raise TokenRejected("the token's key id is not among the issuer's keys")
        return found

    def _load(self, issuer: str) -> dict[str, Any]:
        from jwt import PyJWK, PyJWKError

        discovery = self._fetch(f"{issuer}/.well-known/openid-configuration")
        if not isinstance(discovery, dict) or discovery.get("issuer", "").rstrip("/") != issuer:
            raise ValueError("the discovery document names another issuer")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise ValueError("the discovery document has no jwks_uri")
        doc = self._fetch(jwks_uri)
        keys: dict[str, Any] = {}
        for raw in doc.get("keys", []) if isinstance(doc, dict) else []:
            if not isinstance(raw, dict) or not raw.get("kid") or raw.get("use", "sig") != "sig":
                continue
            try:
                jwk = PyJWK(raw)
            except (PyJWKError, ValueError, TypeError):
                continue  # a key type or algorithm we do not accept
            if jwk.algorithm_name in ALGORITHMS:
                keys[str(raw["kid"])] = jwk
        return keys


@dataclass(frozen=True)
class Verified:
    identity: str
    repository: str
    ref: str


class VerifiedTokens:
    """Claims of tokens that passed the checks, by digest; bounded, oldest dropped first."""

    def __init__(
        self,
        ttl: float = VERIFIED_CACHE_SECONDS,
        max_entries: int = VERIFIED_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl, self.max_entries, self._clock = ttl, max_entries, clock
        self._entries: OrderedDict[bytes, tuple[float, str, str]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(config: OidcConfig, token: str) -> bytes:
        raw = f"{config.issuer}\0{config.audience}\0{token}".encode("utf-8", "replace")
        return hashlib.blake2b(raw, digest_size=16).digest()

    def get(self, key: bytes) -> tuple[str, str] | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            if hit[0] <= self._clock():
                del self._entries[key]
                return None
            return hit[1], hit[2]

    def put(self, key: bytes, repository: str, ref: str, exp: float) -> None:
        with self._lock:
            self._entries[key] = (min(exp, self._clock() + self.ttl), repository, ref)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def verify(
    token: str, config: OidcConfig, keys: KeySet, cache: VerifiedTokens | None = None
) -> Verified:
    """The identity a token maps to; TokenRejected with a short reason otherwise."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected("the token is too large")
    key = VerifiedTokens.key(config, token) if cache is not None else b""
    hit = cache.get(key) if cache is not None else None
    if hit is None:
        repository, ref, exp = _check(token, config, keys)
        if cache is not None:
            cache.put(key, repository, ref, exp)
    else:
        repository, ref = hit
    identity = config.identity_for(repository, ref)
    if identity is None:
        raise TokenRejected("no rule admits this repository and ref")
    return Verified(identity, repository, ref)


def _check(token: str, config: OidcConfig, keys: KeySet) -> tuple[str, str, float]:
    """Signature and claims; the token's repository, ref and expiry."""
    import jwt

    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRejected("the token is not a JWT") from None
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise TokenRejected(f"algorithm {str(alg)[:16]!r} is not accepted (RS256, ES256 only)")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected("the token names no key id")
    jwk = keys.key(config.issuer, kid, config.refresh_min_seconds)
    if jwk.algorithm_name != alg:
        raise TokenRejected("the token's algorithm does not match its key")
    try:
        claims = jwt.decode(
            token,
            key=jwk,
            algorithms=[alg],
            audience=config.audience,
            issuer=config.issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenRejected("the token is not valid yet") from None
    except jwt.InvalidAudienceError:
        raise TokenRejected("the token is for another audience") from None
    except jwt.InvalidIssuerError:
        raise TokenRejected("the token is from another issuer") from None
    except jwt.InvalidSignatureError:
        raise TokenRejected("the token's signature does not verify") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"the token has no '{exc.claim}' claim") from None
    except jwt.PyJWTError:
        raise TokenRejected("the token is invalid") from None
    repository, ref = claims.get("repository"), claims.get("ref")
    if not isinstance(repository, str) or not isinstance(ref, str):
        raise TokenRejected("the token has no repository/ref claims")
    return repository, ref, float(claims["exp"])
