"""What one request may cost the server: the body cap (lowered to what the container's
memory holds), how many requests are scored at once, how long a body may take to arrive, how
wide and how deep an input may be; the 400/413 a request past them gets."""

from __future__ import annotations

import os
from typing import NamedTuple


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status, self.code = status, code


# Peak memory of one request over its body's size, measured in-process (peak RSS growth while
# `Model.invocations` scores 16 MiB bodies, all-double schema): dataframe_split 5.4-23x (30
# columns of floats .. one column of 0s), dataframe_records 12.7-29x, inputs as columns
# 11.7-22x, inputs as rows 11.7-31x, CSV 9.9-14x, empty rows/records 20x. The worst, a one-
# column batch of small ints as rows, sets the factor, with margin for the allocator. Any
# other flavor is parsed by MLflow's scoring server, measured the same way (8 MiB bodies):
# dataframe_split 17-52x, dataframe_records 17-41x, inputs as rows 17-84x, CSV 13-16x.
EXPANSION = 40
PYFUNC_EXPANSION = 100
PARQUET_EXPANSION = 7  # peak over the decoded size, measured 4.2-5.6x (one column .. 30)
HEADROOM = 32 * 2**20  # the event loop, uvicorn's buffers, the answer being written
MIN_BODY_BYTES = 16 * 2**10
MAX_JSON_DEPTH = 64  # the envelope, its format key and a tensor of numpy's 32 dimensions
MAX_COLUMNS = 10_000  # MLRIG_MAX_COLUMNS: the input of a model without a signature
EXTRA_COLUMNS = 1000  # columns beyond the signature's (MLflow ignores them): ids and the like


class Limits(NamedTuple):  # not a dataclass: tests load this file without registering it
    """What one request may cost the server.

    The body cap is the smaller of MLRIG_MAX_BODY_BYTES and what the container's memory
    holds: each of the concurrent scorings may use EXPANSION times its body (`fit_memory`)."""

    max_body_bytes: int = 64 * 2**20
    max_concurrent_scoring: int = 2
    body_timeout_seconds: float = 60.0
    max_columns: int = MAX_COLUMNS  # for a model without a signature
    memory_bound: bool = False  # max_body_bytes was lowered to fit the memory limit

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Limits:
        env = dict(os.environ if env is None else env)
        default = cls()
        try:
            limits = cls(
                max_body_bytes=int(env.get("MLRIG_MAX_BODY_BYTES", default.max_body_bytes)),
                max_concurrent_scoring=int(
                    env.get("MLRIG_MAX_CONCURRENT_SCORING", default.max_concurrent_scoring)
                ),
                body_timeout_seconds=float(
                    env.get("MLRIG_BODY_TIMEOUT_SECONDS", default.body_timeout_seconds)
                ),
                max_columns=int(env.get("MLRIG_MAX_COLUMNS", default.max_columns)),
            )
        except ValueError as exc:
            raise SystemExit(
                f"mlrig-serve: a limit in the environment is not a number: {exc}"
            ) from exc
        if (
            min(limits.max_body_bytes, limits.max_concurrent_scoring, limits.max_columns) < 1
            or limits.body_timeout_seconds <= 0
        ):
            raise SystemExit(f"mlrig-serve: limits must be positive, got {limits}")
        return limits

    def fit_memory(
        self, memory_limit: int | None, in_use: int, expansion: int = EXPANSION
    ) -> Limits:
        """The body cap lowered so that every concurrent scoring fits the memory the
        container has left (`memory_limit` minus `in_use`, the loaded model's resident size)."""
        if memory_limit is None:
            return self
        spare = memory_limit - in_use - HEADROOM
        fits = max(MIN_BODY_BYTES, spare // (expansion * self.max_concurrent_scoring))
        if fits >= self.max_body_bytes:
            return self
        return self._replace(max_body_bytes=fits, memory_bound=True)


def memory_limit(root: str = "/sys/fs/cgroup") -> int | None:
    """This container's memory limit in bytes (cgroup v2, else v1), or None when unlimited."""
    for path in (f"{root}/memory.max", f"{root}/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # v1 writes ~2**63 for "no limit"
            return int(text)
        return None
    return None


def resident_bytes() -> int:
    """This process's resident memory now (Linux)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _too_large(limits: Limits) -> BadRequest:
    return BadRequest(
        f"The request body is larger than this server accepts ({limits.max_body_bytes} bytes). "
        + (
            "Send smaller batches, or give the container more memory "
            "(`mlrig image run --memory`): the cap is what its memory limit holds."
            if limits.memory_bound
            else "Send smaller batches, or start the server with a larger MLRIG_MAX_BODY_BYTES."
        ),
        status=413,
        code="RESOURCE_LIMIT_EXCEEDED",
    )
