"""`mlrig trainer serve`: the Trainer, its monitor schedule (the repository's `monitor:`
policy) and its credentials behind the HTTP adapter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrig.core.stack.stacks import STACK_ENV
from mlrig.core.trainer._jobs import Trainer, state_dir
from mlrig.core.trainer._loop import Watcher
from mlrig.core.trainer._store import JobStore
from mlrig.core.trainer.token import Credentials, token_path


class Service:
    """The HTTP adapter's Backend: requests in, job views (plain JSON data) out."""

    def __init__(
        self, trainer: Trainer, credentials: Credentials, watcher: Watcher | None = None
    ) -> None:
        self.trainer = trainer
        self.credentials = credentials
        self.watcher = watcher

    def stop(self) -> None:
        if self.watcher is not None:  # first: no check may enqueue into a stopping queue
            self.watcher.stop()
        self.trainer.stop()

    def authorized(self, authorization: str | None) -> bool:
        return self.credentials.allows(authorization)

    def submit(self, push_image: bool | None, compute: dict[str, Any] | None = None) -> str:
        return self.trainer.submit(push_image, compute=compute).id

    def job(self, job_id: str) -> dict[str, Any] | None:
        job = self.trainer.store.get(job_id)
        return self.trainer.view(job) if job else None

    def jobs(self, limit: int) -> list[dict[str, Any]]:
        views = [self.trainer.view(job) for job in self.trainer.store.recent(limit)]
        for view in views:
            view.pop("log_tail")  # the list stays short; GET /train/{id} has the tail
        return views


@dataclass(frozen=True)
class Started:
    url: str
    stack: str
    token_file: Path
    state_dir: Path
    interrupted: list[str]
    schedule: str = "off"  # what the repository's monitor: policy makes the service do
    resumed: tuple[str, ...] = ()  # remote jobs whose task start-up attaches to again


def check_repo(repo: Path) -> Path:
    from mlrig.errors import UsageError

    repo = repo.expanduser().resolve()
    if not (repo / "dvc.yaml").is_file() or not (repo / ".git").exists():
        raise UsageError(
            f"{repo} is not a repository made by `mlrig init` (no dvc.yaml or .git there)",
            hint="pass --repo with the path of a generated repository",
        )
    return repo


def watcher(repo: Path, stack: str) -> Watcher:
    """The service's schedule and queue for `repo` on `stack`, as `serve` builds them (same
    state folder, same lock), for a caller that ticks it itself: `trainer.start()` first,
    `trainer.stop()` at the end."""
    repo = check_repo(repo)
    root = state_dir(stack, repo)
    # each job's `mlrig retrain` child trains on this stack, not only on the repo's own
    jobs = Trainer(repo, JobStore(root), env={STACK_ENV: stack})
    return Watcher(repo, jobs, root, stack=stack)


def serve(
    repo: Path,
    *,
    stack: str | None,
    host: str,
    port: int,
    on_ready: Callable[[Started], None],
) -> None:
    """Recover, start the worker, then serve until SIGINT/SIGTERM (which interrupts the
    running job and recovers the repo again before returning)."""
    from mlrig.adapters import trainer_http
    from mlrig.core.stack import stacks
    from mlrig.core.trainer import token as trainer_auth

    repo = check_repo(repo)
    name = stacks.resolve_name(stack, repo=repo)
    credentials = trainer_auth.load(name)
    sock = trainer_http.bind(host, port)
    try:
        schedule = watcher(repo, name)
        trainer, root = schedule.trainer, schedule.root
        interrupted = trainer.start()
        schedule.start()
        bound_port = sock.getsockname()[1]
        started = Started(
            url=f"http://{host if ':' not in host else f'[{host}]'}:{bound_port}",
            stack=name,
            token_file=token_path(name),
            state_dir=root,
            interrupted=interrupted,
            schedule=schedule.describe(),
            resumed=trainer.resumed,
        )
        app = trainer_http.create_app(
            Service(trainer, credentials, schedule), lambda: on_ready(started)
        )
        trainer_http.serve(app, sock)
    finally:
        sock.close()
