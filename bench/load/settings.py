"""The load benchmark's settings: the goals it is held to, the mix one client loops over,
the timeouts and names, and its progress line."""

from __future__ import annotations

import os
import sys
import time

# The goals: the managed offering's smallest server, "up to 25 users", ~25 TPS.
GOAL_RPS = 25.0
GOAL_P99_S = 1.0
MANAGED_SMALL_USD_MONTH = 470.0
STATS = "docker stats of the container during the load (memory also from its cgroup, 0.1 s)"
OWN_CPU = "the load generator's own process CPU (psutil)"
HEALTH_TIMEOUT = 300.0
REQUEST_TIMEOUT = (5.0, 60.0)  # connect, read: a request slower than 60 s is an error
BLOB = os.urandom(1024 * 1024)  # 1 MB of incompressible bytes, uploaded once per iteration
CLIENTS_IN_BURST = 16  # concurrent wrong passwords sent after the load
MEMBER = "team-member"  # each run's names get a suffix: runs may share a database
EXPERIMENT = "load-bench"
MODEL = "load-bench-model"
# One iteration of a client's loop, in order; each op once per iteration (its weight).
OPS = (
    "create run",
    "log batch (10 params, 20 metrics)",
    "upload 1 MB artifact",
    "terminate run",
    "search runs (max 50)",
    "get model version",
)
WEIGHTS = dict.fromkeys(OPS, 1)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
