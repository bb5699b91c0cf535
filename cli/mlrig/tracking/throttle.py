"""In front of MLflow's password check, inside the server: wrong passwords are throttled
per user name and source address, and password checks run one at a time per process.
`authenticate_request_basic_auth` is MLflow's basic-auth check with both around it.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from typing import Any, NamedTuple

# --- Wrong passwords are throttled (inside the server, in front of MLflow's check) ---
# MLflow runs its slow password hash (~200 ms of CPU on 2 CPUs) for every wrong password:
# its cache holds only successes. A 16-thread flood of wrong passwords took a normal user's
# request from 28 ms to 1 s median. So after THROTTLE_MAX_FAILURES failures from one source
# address for one user name within THROTTLE_WINDOW_SECONDS, that pair is answered 401 with
# Retry-After, without a hash, for THROTTLE_BACKOFF_SECONDS; a success clears only its own pair.
# 401, not 429: the credentials were not verified, every client already treats 401 as "not
# let in" (a stale password keeps getting 401, never a new status), and the body and
# Retry-After say why and for how long; MLflow's client would instead retry a 429 for minutes.
# - 30 in 60 s: above what a legitimate client does before someone notices its password went
#   stale (a job polling every few seconds; tests/integration/test_tracking_auth.py makes 20
#   stale attempts, then expects the new password to work at once), while a guesser gets 30
#   tries a minute instead of ~5 a second per thread, and a flood at most 30 hashes a minute
#   per pair (~6 s of CPU a minute).
# - 60 s back-off: a client locked out by its own failures waits a minute; a flood spends all
#   but 30 requests a minute on an answer that costs no hash.
# - 10,000 pairs, least recently seen dropped first: ~2 MB at most, since keys are 16-byte
#   digests (a 10 kB user name costs what a short one does); a flood of distinct names can
#   only evict entries, never grow memory, and each name still costs the attacker 30 requests.
# Counts are per server process: with N workers a pair gets up to N x 30 tries per window.
THROTTLE_MAX_FAILURES = 30
THROTTLE_WINDOW_SECONDS = 60.0
THROTTLE_BACKOFF_SECONDS = 60.0
THROTTLE_MAX_ENTRIES = 10_000
# That answer is cheap but not free: through MLflow's middleware and Flask it still costs ~3 ms of
# CPU, so 16 connections looping on it kept a normal request at 6x its median. Holding each
# throttled answer back for a second turns such a loop into 16 requests a second. The wait
# holds one of the worker's threads (AnyIO lends Flask 40), so at most 20 wait at once;
# past that a throttled request is answered at once and the others keep their threads.
THROTTLE_TARPIT_SECONDS = 1.0
THROTTLE_TARPIT_MAX_WAITING = 20
# Proxies in front of the server that append the client's address to X-Forwarded-For (1
# behind a load balancer). 0, the default, uses the peer address: a client could otherwise
# name any source it likes and dodge the per-source count.
ENV_TRUSTED_PROXY_HOPS = "MLRIG_TRUSTED_PROXY_HOPS"


class Attempts(NamedTuple):
    """Failed logins of one (source, user) pair in its current window, and its back-off."""

    failures: int
    window_start: float
    blocked_until: float = 0.0


def after_failure(
    prev: Attempts | None,
    now: float,
    *,
    max_failures: int = THROTTLE_MAX_FAILURES,
    window: float = THROTTLE_WINDOW_SECONDS,
    backoff: float = THROTTLE_BACKOFF_SECONDS,
) -> Attempts:
    """The pair's record after one more failure at `now` (a monotonic clock)."""
    if prev is None or now - prev.window_start >= window:
        prev = Attempts(0, now)
    failures = prev.failures + 1
    if failures >= max_failures:
        return Attempts(0, now, now + backoff)  # counting starts over when the back-off ends
    return prev._replace(failures=failures)


def retry_after(record: Attempts | None, now: float) -> float:
    """Seconds the pair must still wait; 0 when it may try."""
    return 0.0 if record is None else max(0.0, record.blocked_until - now)


class LoginThrottle:
    """Attempts per (source, user), bounded: the least recently seen pair goes first."""

    def __init__(self, max_entries: int = THROTTLE_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._records: OrderedDict[bytes, Attempts] = OrderedDict()
        self._lock = threading.Lock()  # Flask handlers run on a thread pool

    @staticmethod
    def key(source: str, username: str) -> bytes:
        raw = f"{source}\0{username}".encode("utf-8", "backslashreplace")
        return hashlib.blake2b(raw, digest_size=16).digest()

    def retry_after(self, key: bytes, now: float) -> float:
        with self._lock:
            record = self._records.get(key)
            if record is not None:
                self._records.move_to_end(key)
        return retry_after(record, now)

    def failed(self, key: bytes, now: float) -> None:
        with self._lock:
            self._records[key] = after_failure(self._records.get(key), now)
            self._records.move_to_end(key)
            while len(self._records) > self.max_entries:
                self._records.popitem(last=False)

    def succeeded(self, key: bytes) -> None:
        with self._lock:
            self._records.pop(key, None)

    def __len__(self) -> int:
        return len(self._records)


_THROTTLE = LoginThrottle()
_TARPIT = threading.BoundedSemaphore(THROTTLE_TARPIT_MAX_WAITING)


def _hold_back_throttled_answer() -> None:
    import asyncio

    try:
        asyncio.get_running_loop()
        return  # MLflow's FastAPI routes call the guard on the event loop: never sleep there
    except RuntimeError:
        pass  # a Flask request on a worker thread
    if _TARPIT.acquire(blocking=False):
        try:
            time.sleep(THROTTLE_TARPIT_SECONDS)
        finally:
            _TARPIT.release()


# --- Password checks run one at a time per server process (single flight) ---
# MLflow checks a password with werkzeug's scrypt (n=2**15, r=8: 32 MiB and ~0.1 s of CPU a
# check, several times that under a quarter- or half-vCPU quota), and its credential cache
# holds a check only once it succeeded. So N requests that miss the cache at once each run a
# hash: 16 clients at a worker's start or when their entry's TTL ends, or 16 wrong passwords
# from anyone, took the small task (1 GiB, 2 workers, ~620 MiB idle) to its limit, and the
# kernel killed a worker with every request on it (bench/load_bench.py). Through this gate a
# process runs one check at a time (+32 MiB at most), and a request that waited while the
# same credentials were found good is let in on that check instead of hashing again: it
# arrived before that check ended, so it is treated as part of it. Failures are never shared.
# On the event loop (MLflow's ASGI routes) the check runs ungated: waiting for the gate there
# would stall every request of the worker, and the loop is one thread, so one more at most.
PASSWORD_CHECKS_MAX_REMEMBERED = 1024


class PasswordGate:
    """Wraps MLflow's `store.authenticate_user(username, password) -> bool`."""

    def __init__(self, check: Any) -> None:
        self.check = check
        self._lock = threading.Lock()
        self._key = os.urandom(32)  # per process: the digests are useless outside it
        self._passed: OrderedDict[bytes, float] = OrderedDict()  # digest -> when it passed

    def _digest(self, username: str, password: str) -> bytes:
        raw = f"{username}\0{password}".encode("utf-8", "surrogatepass")
        return hashlib.blake2b(raw, key=self._key, digest_size=16).digest()

    def __call__(self, username: str, password: str, *args: Any, **kwargs: Any) -> bool:
        import asyncio

        try:
            asyncio.get_running_loop()
            return bool(self.check(username, password, *args, **kwargs))
        except RuntimeError:
            pass  # a Flask request on a worker thread
        shared = not args and not kwargs  # MLflow's other uses (use_primary=...) never share
        arrived, digest = time.monotonic(), self._digest(username, password)
        with self._lock:
            passed = self._passed.get(digest)
            if shared and passed is not None and passed >= arrived:
                return True
            ok = bool(self.check(username, password, *args, **kwargs))
            if ok and shared:
                self._passed[digest] = time.monotonic()
                self._passed.move_to_end(digest)
                while len(self._passed) > PASSWORD_CHECKS_MAX_REMEMBERED:
                    self._passed.popitem(last=False)
            return ok


_GATE_LOCK = threading.Lock()


def gate_password_checks(store: Any) -> None:
    """Put the gate in front of MLflow's password check (once per store)."""
    if isinstance(store.authenticate_user, PasswordGate):
        return
    with _GATE_LOCK:
        if not isinstance(store.authenticate_user, PasswordGate):
            store.authenticate_user = PasswordGate(store.authenticate_user)


def request_source(remote_addr: str | None, forwarded_for: str | None, hops: int) -> str:
    """The client's address: the peer's, or the one `hops` trusted proxies recorded."""
    if hops > 0 and forwarded_for:
        chain = [a.strip() for a in forwarded_for.split(",") if a.strip()]
        if len(chain) >= hops:
            return chain[-hops]
    return remote_addr or "unknown"


def authenticate_request_basic_auth():  # type: ignore[no-untyped-def]
    """Runs inside the server: 401 for anything but Basic credentials, 401 with Retry-After
    for a (source, user) pair in back-off, else MLflow's check, whose failures are counted.

    Imports Flask and MLflow lazily: this module is also imported by `mlrig --help`. The
    server image gets the mlrig.tracking package alone, so it imports nothing else of mlrig.
    """
    from flask import Response, request
    from mlflow.server import auth

    credentials = request.authorization
    if (
        credentials is None
        or credentials.type != "basic"
        or credentials.username is None
        or credentials.password is None
    ):
        return auth.make_basic_auth_response()
    try:
        hops = int(os.environ.get(ENV_TRUSTED_PROXY_HOPS, "0"))
    except ValueError:
        hops = 0
    source = request_source(request.remote_addr, request.headers.get("X-Forwarded-For"), hops)
    key = _THROTTLE.key(source, credentials.username)
    wait = _THROTTLE.retry_after(key, time.monotonic())
    if wait > 0:
        _hold_back_throttled_answer()
        seconds = str(int(wait) + 1)
        return Response(
            f"Too many failed logins for this user from this address; retry in {seconds} s.",
            status=401,
            headers={"Retry-After": seconds, "WWW-Authenticate": 'Basic realm="mlflow"'},
            mimetype="text/plain",
        )
    gate_password_checks(auth.store)
    result = auth.authenticate_request_basic_auth()
    if isinstance(result, Response):
        _THROTTLE.failed(key, time.monotonic())
    else:
        _THROTTLE.succeeded(key)
    return result
