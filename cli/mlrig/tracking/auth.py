"""The tracking server's auth hook (MLflow's `authorization_function`): Basic or Bearer.

- `Authorization: Basic`: mlrig's throttled front of MLflow's own password check
  (tracking.throttle.authenticate_request_basic_auth), unchanged.
- `Authorization: Bearer <JWT>`: an OIDC token (`oidc`) mapped to a machine identity
  that must exist in MLflow's user store; the hook returns that user name, so MLflow's own
  grants decide what the request may do (403 beyond them).
- Anything else, and every failure: 401 with a one-line reason; never a 500, and nothing of
  a token or password is logged.
Every write request and every auth failure gets one audit line (`audit`).

MLflow calls the hook several times per request (its permission checks ask again who the
sender is), so the decision is kept in the request's `flask.g`. On the routes MLflow's ASGI
app serves itself (artifact upload/download), MLflow calls the hook inside a synthetic
Flask request on the event loop: no response passes through Flask there, so such a write is
recorded when it is admitted (status null) and a failure when it is refused (401).

Server-side and neutral: imports nothing from mlrig but the other modules of mlrig.tracking
(the server image copies that package alone); Flask and MLflow are imported lazily.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from mlrig.tracking import audit as tracking_audit
from mlrig.tracking import guard as tracking_guard
from mlrig.tracking import oidc as tracking_oidc
from mlrig.tracking.config import AUTH_CACHE_TTL_SECONDS
from mlrig.tracking.throttle import (
    ENV_TRUSTED_PROXY_HOPS,
    authenticate_request_basic_auth,
    request_source,
)

MAX_AUDITED_BODY_BYTES = 1 << 20  # larger JSON bodies are not parsed for object names
_G_KEY = "_mlrig_auth"
_CONFIG: tracking_oidc.ConfigSource | None = None
_KEYS = tracking_oidc.KeySet()
_VERIFIED = tracking_oidc.VerifiedTokens()
# Machine identities found in MLflow's user store, remembered as long as MLflow's own
# credential cache keeps a password check (a database query per request otherwise). An
# identity deleted within that window still passes this check, but MLflow's own checks read
# the user again and refuse the request.
_IDENTITIES: dict[str, float] = {}
_IDENTITIES_MAX = 1024
_log = logging.getLogger("mlrig.auth")

# MLflow's authorization reads the signed-in user from its store on every request
# (`sender_is_admin` -> `store.get_user`: a session and a query, ~2 ms, the largest part of
# what an authenticated request costs over an anonymous one). The user record (id, name,
# password hash, admin flag; no grants) is remembered exactly as MLflow's own credential
# cache remembers it, which already holds the same record for the same user: for its TTL
# (auth.ini's auth_cache_ttl_seconds, AUTH_CACHE_TTL_SECONDS), dropped at once on the worker
# that serves a password change, admin-flag change or deletion (MLflow's
# `_invalidate_user_auth_cache`, which those routes call). Other workers, and changes made
# outside the server, catch up within the TTL. Grants and roles are not cached.
_USERS_LOCK = threading.Lock()
_USERS_STATE: dict[str, Any] = {}  # "cache", "generation", "installed"


def remember_users(auth: Any) -> None:
    """Put the TTL cache in front of MLflow's `store.get_user` (once per process)."""
    from cachetools import TTLCache

    with _USERS_LOCK:
        ttl = auth.auth_config.auth_cache_ttl_seconds
        if _USERS_STATE.get("installed") or ttl <= 0:
            return
        cache: Any = TTLCache(maxsize=auth.auth_config.auth_cache_max_size, ttl=ttl)
        _USERS_STATE.update(cache=cache, generation=0, installed=True)
        lookup, invalidate = auth.store.get_user, auth._invalidate_user_auth_cache

    def get_user(username: str) -> Any:
        with _USERS_LOCK:
            user = cache.get(username)
            generation = _USERS_STATE["generation"]
        if user is not None:
            return user
        user = lookup(username)  # an unknown user raises: nothing is remembered
        with _USERS_LOCK:
            if _USERS_STATE["generation"] == generation:  # no change was served meanwhile
                cache[username] = user
        return user

    def forget_user(username: str) -> None:
        with _USERS_LOCK:
            cache.pop(username, None)
            _USERS_STATE["generation"] += 1
        invalidate(username)

    auth.store.get_user = get_user
    auth._invalidate_user_auth_cache = forget_user


def _config() -> tracking_oidc.ConfigSource:
    global _CONFIG
    if _CONFIG is None:
        _CONFIG = tracking_oidc.ConfigSource()
    return _CONFIG


def _on_event_loop() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _unauthorized(reason: str, scheme: str):  # type: ignore[no-untyped-def]
    from flask import Response

    return Response(
        f"Not authenticated: {reason}.",
        status=401,
        headers={"WWW-Authenticate": f'{scheme} realm="mlflow"'},
        mimetype="text/plain",
    )


def _bearer(token: str) -> tuple[Any, str | None, str | None]:
    """(Authorization or 401 response, user, failure reason) for a bearer token."""
    from mlflow.server import auth
    from werkzeug.datastructures import Authorization

    try:
        verified = tracking_oidc.verify(token, _config().get(), _KEYS, _VERIFIED)
        if not _identity_exists(auth.store, verified.identity):
            raise tracking_oidc.TokenRejected(
                f"the identity {verified.identity!r} this repository maps to does not exist"
            )
    except tracking_oidc.TokenRejected as exc:
        return _unauthorized(str(exc), "Bearer"), None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a bad token must never turn into a 500
        _log.warning("bearer token check failed unexpectedly: %s", type(exc).__name__)
        reason = "the token could not be checked"
        return _unauthorized(reason, "Bearer"), None, reason
    return Authorization("bearer", {"username": verified.identity}), verified.identity, None


def _identity_exists(store: Any, name: str) -> bool:
    now = time.monotonic()
    if _IDENTITIES.get(name, 0.0) > now:
        return True
    if not store.has_user(name):
        return False
    if len(_IDENTITIES) >= _IDENTITIES_MAX:
        _IDENTITIES.clear()
    _IDENTITIES[name] = now + AUTH_CACHE_TTL_SECONDS
    return True


def _basic(request: Any) -> tuple[Any, str, str | None, str | None]:
    """(Authorization or 401 response, auth kind, user, failure reason) for anything else."""
    from flask import Response

    creds = request.authorization
    basic = creds is not None and creds.type == "basic" and creds.username is not None
    kind, user = ("basic", creds.username) if basic else ("none", None)
    result = authenticate_request_basic_auth()
    if not isinstance(result, Response):
        return result, kind, user, None
    if not basic:
        reason = "no credentials (send Basic credentials or an OIDC bearer token)"
    elif "Retry-After" in result.headers:
        reason = "too many failed logins from this address"
    else:
        reason = "wrong user name or password"
    return result, kind, user, reason


def _request_object(request: Any) -> dict[str, str]:
    body = None
    length = request.content_length
    if request.is_json and length is not None and length <= MAX_AUDITED_BODY_BYTES:
        body = request.get_json(silent=True)  # cached: the handler reads the same parse
    return tracking_audit.object_of(request.path, body, request.args.to_dict())


def _audit(request: Any, kind: str, user: str | None, reason: str | None) -> None:
    """Record a write or a failure: after Flask answers, or now on MLflow's ASGI routes."""
    from flask import after_this_request

    if reason is None and not tracking_audit.is_write(request.method, request.path):
        return
    try:
        hops = int(os.environ.get(ENV_TRUSTED_PROXY_HOPS, "0"))
    except ValueError:
        hops = 0
    fields: dict[str, Any] = {
        "user": user,
        "auth": kind,
        "method": request.method,
        "path": request.path,
        "source": request_source(request.remote_addr, request.headers.get("X-Forwarded-For"), hops),
        "reason": reason,
    }
    if _on_event_loop():
        obj = tracking_audit.object_of(request.path, request.args.to_dict())
        tracking_audit.emit(obj=obj, status=401 if reason else None, **fields)
        return

    @after_this_request
    def record(response):  # type: ignore[no-untyped-def]
        try:
            obj = _request_object(request)
        except Exception:  # noqa: BLE001 - an unparsable body names nothing
            obj = tracking_audit.object_of(request.path)
        tracking_audit.emit(obj=obj, status=response.status_code, **fields)
        return response


def authenticate():  # type: ignore[no-untyped-def]
    """MLflow's `authorization_function`: a werkzeug Authorization naming the user, or a
    401 response."""
    from flask import g, request

    decided = getattr(g, _G_KEY, None)
    if decided is not None:
        return decided
    if not _USERS_STATE.get("installed"):
        from mlflow.server import auth

        remember_users(auth)
    tracking_guard.drop_malformed_credentials()  # a non-ASCII header: 401, not werkzeug's 500
    scheme, _, rest = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer":
        result, user, reason = _bearer(rest.strip())
        kind = "oidc"
    else:
        result, kind, user, reason = _basic(request)
    result = tracking_guard.screen(result)  # deny-by-default beyond MLflow's own checks
    setattr(g, _G_KEY, result)
    _audit(request, kind, user, reason)
    return result
