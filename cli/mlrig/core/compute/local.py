"""The local stack's compute backend: a TaskSpec run as a container on the local engine, the
way ECS runs it as a Fargate task (same image by digest, command, environment, secret names,
CPU and memory), so the local stack rehearses the AWS contract.

- Host networking, as every local service: the stack's MLflow and registry listen on
  loopback only, and so does nothing the task starts.
- Labels `mlrig.task=retrain`, `mlrig.stack`, `mlrig.project` (plus the spec's `mlrig.*`):
  only containers carrying them are ever stopped or removed here. The container's name is
  `mlrig-task-<stack>-<project>`: the engine refuses a second one while it exists, which is
  the one-remote-retrain-per-project lock (a stopped one left over is removed first).
- Secrets: each SecretRef's source is a file under the stack's folder, mounted read-only at
  /run/mlrig/secrets/<NAME>, which the entrypoint reads into the variable. `docker inspect`
  shows the mount's host path, never the value; no label and no plain variable holds it.
- Storage: the stack's DVC remote folder (where `dvc push` writes and the result prefix
  lives) is mounted read-write at its own path, so the repository's DVC config and the
  task's environment name the same paths inside and out.
- Limits: memory = memory_mib (swap included: beyond it the kernel OOM-kills, as Fargate
  does), CPU quota = cpu/1024 CPUs. The task runs as the caller's uid:gid (the files it
  writes in the DVC remote are the caller's).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from mlrig import paths
from mlrig.contract import StackOutputs
from mlrig.core.compute.spec import TaskHandle, TaskSpec, TaskStatus
from mlrig.core.compute.task import SECRETS_DIR
from mlrig.errors import Conflict, CredentialsError, UsageError

LABEL_TASK = "mlrig.task"
LABEL_STACK = "mlrig.stack"
LABEL_PROJECT = "mlrig.project"
TASK_KIND = "retrain"
_DIGEST_REF = re.compile(r"^[a-z0-9][a-z0-9.:/_-]*@sha256:[0-9a-f]{64}$")
_ID = re.compile(r"^[0-9a-f]{12,64}$")


def check_size(cpu: int, memory_mib: int) -> None:
    """A size Fargate offers, else one line naming the sizes that exist (the table
    `--server-size` checks against)."""
    from mlrig.tracking.container import parse_size

    try:
        parse_size(f"{cpu}:{memory_mib}")
    except ValueError as exc:
        text = str(exc).replace("server size", "task size")
        raise UsageError(text, hint="pass --cpu and --memory Fargate offers") from None


class LocalBackend:
    """Backend (see spec) over the local engine, for one stack."""

    def __init__(self, outputs: StackOutputs) -> None:
        if outputs.kind != "local":
            raise UsageError(f"stack '{outputs.name}' is not a local stack")
        self.outputs = outputs
        self._stopped: dict[str, str] = {}  # container id -> the reason we stopped it

    def name(self, project: str) -> str:
        return f"mlrig-task-{self.outputs.name}-{project}".replace("_", "-")

    def _labels(self, project: str) -> dict[str, str]:
        return {LABEL_TASK: TASK_KIND, LABEL_STACK: self.outputs.name, LABEL_PROJECT: project}

    def _mounts(self, spec: TaskSpec) -> list[tuple[str, str, bool]]:
        stack_dir = paths.stack_dir(self.outputs.name).resolve()
        mounts = []
        for secret in spec.secrets:
            source = Path(secret.source).resolve()
            if not source.is_relative_to(stack_dir) or not source.is_file():
                raise CredentialsError(
                    f"the secret {secret.name} is not a file under stack "
                    f"'{self.outputs.name}''s folder",
                    hint="the local backend mounts only the stack's own secrets",
                )
            mounts.append((str(source), str(SECRETS_DIR / secret.name), True))
        storage = Path(self.outputs.dvc_remote_url)
        if not storage.is_absolute() or not storage.is_dir():
            raise UsageError(
                f"stack '{self.outputs.name}''s DVC remote {storage} is not a local folder",
                hint="`mlrig stack up --local` again",
            )
        mounts.append((str(storage), str(storage), False))
        return mounts

    def submit(self, spec: TaskSpec) -> TaskHandle:
        from mlrig.adapters import docker as docker_adapter

        check_size(spec.cpu, spec.memory_mib)
        if not _DIGEST_REF.fullmatch(spec.image):
            raise UsageError(
                f"the task's image {spec.image!r} is not named by digest",
                hint="a task runs registry/name@sha256:<digest>, never a tag",
            )
        bad = [k for k in spec.labels if not k.startswith("mlrig.")]
        if bad:
            raise UsageError(f"the task's label {bad[0]!r} is not an mlrig.* label")
        mounts = self._mounts(spec)
        self._pull(spec.image)
        name = self.name(spec.project)
        labels = {**spec.labels, **self._labels(spec.project)}
        if spec.spot:
            labels["mlrig.spot"] = "requested"  # the local engine has no spare capacity to bid
        running = docker_adapter.containers_labelled(self._labels(spec.project), running=True)
        if running:
            raise _busy(spec.project, running[0])
        self._remove_leftover(name)
        try:
            container = docker_adapter.run_task(
                spec.image,
                name=name,
                command=list(spec.command),
                user=f"{os.getuid()}:{os.getgid()}",
                environment=dict(spec.environment),
                memory_mib=spec.memory_mib,
                cpu_units=spec.cpu,
                labels=labels,
                init=True,  # SIGTERM ends the task (python as PID 1 would ignore it)
                mounts=mounts,
            )
        except Conflict:  # another submit won the name meanwhile
            raise _busy(spec.project, name) from None
        return TaskHandle(backend="local", id=container, project=spec.project)

    def _pull(self, image: str) -> None:
        """The image by digest: on the engine already (it pushed it), else pulled from the
        stack's registry; a digest the registry does not hold is one line."""
        from mlrig.adapters import docker as docker_adapter
        from mlrig.core.shared import secrets

        if docker_adapter.image_exists(image):
            return
        auth = self.outputs.registry.auth
        creds = (auth.username, secrets.resolve(auth.password)) if auth else None
        if not docker_adapter.pull(image, creds):
            raise UsageError(
                f"the trainer image {image} is neither on the engine nor in stack "
                f"'{self.outputs.name}''s registry",
                hint="run `mlrig retrain --remote` again: it builds and pushes the image",
            )

    def _remove_leftover(self, name: str) -> None:
        """A stopped task container of this name (its result is in the store, its log was
        followed or is gone with it): removed, but only when it is mlrig's own."""
        from mlrig.adapters import docker as docker_adapter

        labels = docker_adapter.container_labels(name)
        if labels is None:
            return
        if labels.get(LABEL_TASK) != TASK_KIND or labels.get(LABEL_STACK) != self.outputs.name:
            raise Conflict(
                f"a container named {name} exists and is not an mlrig task",
                hint=f"remove it (`docker rm -f {name}`) if it is not yours to keep",
            )
        if docker_adapter.container_state(name).status in ("running", "created", "restarting"):
            raise _busy(labels.get(LABEL_PROJECT, "?"), name)
        docker_adapter.remove_container(name)

    def _own(self, handle: TaskHandle) -> str:
        """The handle's container id, once its labels say it is this stack's task."""
        from mlrig.adapters import docker as docker_adapter

        if handle.backend != "local" or not _ID.fullmatch(handle.id):
            raise UsageError(f"{handle.id!r} is not a local task's container id")
        labels = docker_adapter.container_labels(handle.id)
        if labels is None:
            raise UsageError(
                f"no task {handle.id[:12]} on the engine (removed, or never this engine's)"
            )
        if labels != {**labels, **self._labels(handle.project)}:
            raise UsageError(
                f"container {handle.id[:12]} is not a retrain task of {handle.project} on "
                f"stack '{self.outputs.name}'"
            )
        return handle.id

    def lines(self, handle: TaskHandle) -> Iterator[str]:
        from mlrig.adapters import docker as docker_adapter

        yield from docker_adapter.follow_log(self._own(handle))

    def status(self, handle: TaskHandle) -> TaskStatus:
        from mlrig.adapters import docker as docker_adapter

        state = docker_adapter.container_state(self._own(handle))
        if state.status == "created":
            return TaskStatus(state="pending")
        if state.status in ("running", "restarting", "paused"):
            return TaskStatus(state="running")
        code = state.exit_code
        reason = None
        if state.oom_killed:
            mib = state.memory_bytes // (1024 * 1024)
            reason = f"OOM-killed (memory limit {mib} MiB)"
        elif handle.id in self._stopped:
            reason = self._stopped[handle.id]
        elif code in (137, 143):  # SIGKILL / SIGTERM, and nobody here asked for it
            reason = "stopped from outside"
        return TaskStatus(state="stopped", exit_code=code, reason=reason)

    def stop(self, handle: TaskHandle, reason: str) -> None:
        from mlrig.adapters import docker as docker_adapter

        container = self._own(handle)
        self._stopped[container] = reason
        docker_adapter.stop_container(container, timeout=10)

    def remove(self, handle: TaskHandle) -> None:
        """The stopped task's container (its result was applied, or undone)."""
        from mlrig.adapters import docker as docker_adapter

        docker_adapter.remove_container(self._own(handle))

    def active(self, project: str) -> list[str]:
        """Container ids of this project's tasks still running."""
        from mlrig.adapters import docker as docker_adapter

        return docker_adapter.containers_labelled(self._labels(project), running=True)


def _busy(project: str, container: str) -> Conflict:
    return Conflict(
        f"a remote retrain of {project} is already running (task {container[:12]})",
        hint=f"follow it: `mlrig retrain --remote --attach {container[:12]}`, or wait",
    )
