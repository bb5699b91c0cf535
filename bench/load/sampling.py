"""What the server used meanwhile: docker stats and the container's cgroup sampled every
0.1 s, OOM kills, worker count, process-tree CPU and PostgreSQL sessions."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import psutil

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters import postgres, processes
from mlrig.core.stack.rehearse import Services

CGROUP_MEMORY = Path("/sys/fs/cgroup/memory/docker")  # cgroup v1 with docker's cgroupfs driver


class StatsSampler(threading.Thread):
    """docker stats, streamed (~1 s apart): memory as the CLI shows it (usage minus inactive
    page cache), the cgroup's CPU time and its CFS throttling counters. Where the cgroup's
    files are readable (cgroup v1), memory is also read every 0.1 s, the same way, so a
    short spike between two docker stats samples is not missed."""

    def __init__(self, container: str) -> None:
        super().__init__(daemon=True)
        self.container = container
        self.samples: list[dict[str, float]] = []
        self.fast: list[tuple[float, float]] = []  # (perf_counter, bytes) every 0.1 s
        self._done = threading.Event()
        self._fast = threading.Thread(target=self._poll_memory, daemon=True)

    def start(self) -> None:
        super().start()
        self._fast.start()

    def _poll_memory(self) -> None:
        base = CGROUP_MEMORY / self.container
        if not (base / "memory.usage_in_bytes").exists():
            return
        while not self._done.is_set():
            with contextlib.suppress(OSError, ValueError, StopIteration):
                usage = int((base / "memory.usage_in_bytes").read_text())
                stat = (base / "memory.stat").read_text().splitlines()
                inactive = next(
                    int(ln.split()[1]) for ln in stat if ln.startswith("total_inactive_file ")
                )
                self.fast.append((time.perf_counter(), float(usage - inactive)))
            time.sleep(0.1)

    def run(self) -> None:
        with contextlib.suppress(Exception):
            for stat in docker_adapter.client().api.stats(self.container, stream=True, decode=True):
                mem = stat.get("memory_stats") or {}
                extra = mem.get("stats") or {}
                cpu = stat.get("cpu_stats") or {}
                thr = cpu.get("throttling_data") or {}
                if "usage" in mem:
                    cache = extra.get("total_inactive_file", extra.get("inactive_file", 0))
                    self.samples.append(
                        {
                            "t": time.perf_counter(),
                            "mem": float(int(mem["usage"]) - int(cache)),
                            "cpu_ns": float((cpu.get("cpu_usage") or {}).get("total_usage", 0)),
                            "periods": float(thr.get("periods", 0)),
                            "throttled": float(thr.get("throttled_periods", 0)),
                            "throttled_ns": float(thr.get("throttled_time", 0)),
                        }
                    )
                if self._done.is_set():
                    return

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)
        self._fast.join(timeout=5)

    def between(self, a: float, b: float) -> list[dict[str, float]]:
        return [x for x in self.samples if a <= x["t"] <= b]

    def peak(self, a: float, b: float) -> float:
        """Highest memory seen between a and b by either reading."""
        slow = [x["mem"] for x in self.between(a, b)]
        fast = [m for t, m in self.fast if a <= t <= b]
        return max([*slow, *fast], default=0.0)


def oom_kills(container: str) -> int | None:
    """Processes the kernel killed in the container's memory cgroup (v1's memory.oom_control;
    docker's OOMKilled flag is set only when the main process dies, not a worker)."""
    path = Path(f"/sys/fs/cgroup/memory/docker/{container}/memory.oom_control")
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    return None


def workers_started(container: str) -> int:
    """Worker start lines, one per worker plus one per replacement: gunicorn's 'Booting
    worker' (mlrig's containers), uvicorn's 'Started server process' (stock MLflow)."""
    logs = docker_adapter.container_logs(container, tail=1_000_000)
    marks = ("Started server process", "Booting worker with pid")
    return sum(1 for line in logs.splitlines() if any(m in line for m in marks))


def tree_cpu(pid_file: Path) -> dict[int, float]:
    """CPU seconds of each process of a supervised tree (PostgreSQL's backends, moto)."""
    out: dict[int, float] = {}
    for pid in processes.tree(pid_file) if pid_file.exists() else []:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


def pg_sessions(s: Services, database: str) -> int | None:
    """Sessions PostgreSQL has opened on the database so far (15+): a pool that keeps its
    connections opens none under a steady load; each new one costs a TLS and SCRAM handshake."""
    try:
        out = postgres.psql(
            s.cluster,
            "SELECT sessions FROM pg_stat_database WHERE datname = :'db';",
            variables={"db": database},
        )
        return int(out)
    except Exception:  # noqa: BLE001 - older PostgreSQL: no such column
        return None


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())
