"""The Stack façade over the local stack (`mlrig.core.stack.local.stack.LocalStack`)."""

from __future__ import annotations

from mlrig.core.stack.facade import (
    Confirmation,
    DownReport,
    Progress,
    ServiceRow,
    Stack,
    UpOptions,
    UpReport,
    no_progress,
)
from mlrig.core.stack.local._services import Probe
from mlrig.core.stack.local.stack import LocalStack
from mlrig.errors import ServiceError


class LocalFacade(Stack):
    kind = "local"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.local = LocalStack(name)

    def confirm_up(self, options: UpOptions) -> Confirmation | None:
        return None  # nothing on this machine costs money or deletes data

    def up(self, options: UpOptions, progress: Progress = no_progress) -> UpReport:
        outputs = self.local.up(
            mlflow_port=options.mlflow_port,
            registry_port=options.registry_port,
            progress=progress,
        )
        rows = self._rows(self.local.proved)  # its processes now; its round trips just made
        bad = [row for row in rows if not row.ok]
        if bad:  # never "up" beside a table that shows a service down
            raise ServiceError(
                f"stack '{self.name}' is not healthy after up: "
                + "; ".join(f"{r.name} {r.state} {r.detail}".strip() for r in bad),
                hint=f"see `mlrig stack status --stack {self.name}` and `mlrig doctor`",
            )
        return UpReport(
            outputs,
            f"stack '{self.name}' is up",
            f'`eval "$(mlrig stack env --stack {self.name})"` configures a shell',
            rows,
        )

    def confirm_down(self, purge: bool) -> Confirmation | None:
        if not purge:
            return None
        return Confirmation(
            f"Delete all data of stack '{self.name}' (runs, images, DVC objects) "
            f"in {self.local.root}?",
            "nothing was deleted",
        )

    def down(self, *, purge: bool = False, progress: Progress = no_progress) -> DownReport:
        stuck = self.local.down(purge=purge)
        if stuck:
            raise ServiceError(
                "some processes would not stop: " + "; ".join(stuck),
                hint="kill them by PID, then run `mlrig stack down` again",
            )
        what = "stopped and deleted" if purge else "stopped (data kept)"
        return DownReport(f"stack '{self.name}' {what}")

    def status(self) -> list[ServiceRow]:
        return self._rows(None)

    def _rows(self, proved: list[Probe] | None) -> list[ServiceRow]:
        rows = [
            ServiceRow(s.name, s.state, s.url, s.state == "running", s.pid, s.log, s.detail)
            for s in self.local.status(proved)
        ]
        probe = self.local.remote_probe(proved)
        remote = str(self.local.dvc_remote_dir)
        state = (
            "ready"
            if probe.ok
            else "missing"
            if not self.local.dvc_remote_dir.is_dir()
            else "unwritable"
        )
        rows.append(
            ServiceRow(
                "dvc remote", state, remote, probe.ok, detail="" if probe.ok else probe.detail
            )
        )
        return rows
