"""The rehearsal's check-taking: record a check's row, guard it against surprises, and start
the tracking-server container until /health answers (or it fails, naming why)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters import http
from mlrig.core.shared.progress import Progress
from mlrig.core.stack._rehearse.env import Services
from mlrig.core.stack._rehearse.model import HEALTH_TIMEOUT, Check, Report, Request
from mlrig.tracking import config as ts
from mlrig.wait import Abandoned, WaitTimeout, wait_until

T = TypeVar("T")


class Stop(Exception):
    """A check failed in a way that makes the later ones meaningless."""


def last_log_line(container: str) -> str:
    """The container's last meaningful line: the entrypoint's own message when it gave up."""
    try:
        lines = docker_adapter.container_logs(container, tail=40).splitlines()
    except Exception:  # noqa: BLE001 - the container may be gone already
        return "no logs"
    lines = [ln.strip() for ln in lines if ln.strip()]
    own = [ln for ln in lines if ln.startswith("mlflow-server:")]
    return (own or lines or ["no logs"])[-1]


def exit_reason(container: str) -> str | None:
    """Why a container that should be serving has stopped, or None while it runs."""
    state = docker_adapter.container_state(container)
    if state.status in ("exited", "dead"):
        return f"container exited (code {state.exit_code}): {last_log_line(container)}"
    return None


class Session:
    """One rehearsal's checks against its services, appended to its report as they run."""

    sampler: docker_adapter.MemorySampler  # of the container started last

    def __init__(
        self, req: Request, services: Services, report: Report, progress: Progress
    ) -> None:
        self.req, self.s, self.report, self.progress = req, services, report, progress
        self.admin = (ts.ADMIN_USERNAME, services.admin_password)

    def add(self, name: str, ok: bool, detail: str, value: float | None = None) -> Check:
        check = Check(name, ok, detail, value)
        self.report.checks.append(check)
        self.progress(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        return check

    def guard(self, name: str, check: Callable[..., T], *args: Any) -> T:
        """Run a check; an error it did not expect (server gone mid-check...) fails it."""
        try:
            return check(*args)
        except Stop:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as the check's failure
            text = str(exc).strip().splitlines()
            self.add(name, False, f"{type(exc).__name__}: {text[0] if text else ''}")
            raise Stop from exc

    def start(self, name: str) -> str:
        """Run a container and wait for /health; a failure stops the rehearsal."""
        started = time.monotonic()
        container = self.s.run_container()
        self.sampler = docker_adapter.MemorySampler(container)  # start-up counts too
        self.sampler.start()
        url = self.s.url + self.s.config().health_path

        try:
            wait_until(
                lambda: http.status(url, timeout=2) == 200,
                timeout=HEALTH_TIMEOUT - (time.monotonic() - started),
                what="/health 200",
                interval=0.5,
                give_up=lambda: exit_reason(container),
            )
        except Abandoned as exc:
            self.add(name, False, str(exc))
            raise Stop from exc
        except WaitTimeout as exc:
            detail = f"no /health 200 within {HEALTH_TIMEOUT:.0f} s: {last_log_line(container)}"
            self.add(name, False, detail)
            raise Stop from exc
        took = time.monotonic() - started
        self.add(name, True, f"/health 200 after {took:.1f} s", round(took, 1))
        return container
