"""The AWS compute backend: a TaskSpec as a one-off Fargate task on the stack's cluster.

Everything it needs is in the stack's outputs (`StackOutputs.compute`, schema 2), or, where
outputs.json has none (CI writes its own from the repository's answers), in the same values
the stack publishes as the SSM parameter `/mlrig/STACK/remote-training`: no Pulumi state, so
CI runs it with its OIDC role alone (`policies.ci_training` lists what that takes).

- **submit**: the spec is checked first (digest-pinned image in the stack's repository and
  present there, a size Fargate offers, secrets only the stack's machine identities, no
  project already running); then a task definition per (project, image digest, size,
  secrets), whose family carries a hash of its content, so the same retrain reuses it
  (RunTask by family; registered only when ECS has none). Secrets are `valueFrom` there,
  never plain values; the command and the non-secret environment are RunTask overrides.
  The task runs on FARGATE or FARGATE_SPOT in the subnets the tracking server's tasks use,
  with the training security group, tagged `mlrig.project`. Two submitters racing past the
  check both run: each then lists again, and the later one stops itself (Conflict).
- **status**: DescribeTasks; exit code and a one-line reason (OOM, Spot reclaimed, stopped
  from outside, failed to start).
- **stop**: StopTask with the reason, prefixed `mlrig:` (how status tells it from outside).
- **lines**: GetLogEvents on the task's stream with the forward token, each event through
  `cloud_logs.LogLine` (cleaned, credentials redacted), until the task has stopped and the
  stream is drained.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from mlrig.contract import AwsCompute, StackOutputs
from mlrig.core.compute import price
from mlrig.core.compute.spec import SecretRef, TaskHandle, TaskSpec, TaskStatus
from mlrig.core.shared import cloud_logs
from mlrig.errors import ConfigError, Conflict, RemoteError, UsageError

CONTAINER = "trainer"
STREAM_PREFIX = "train"  # awslogs streams: train/trainer/TASK_ID
PROJECT_TAG = "mlrig.project"
STARTED_BY = "mlrig-retrain"
STOP_PREFIX = "mlrig: "  # StopTask reasons mlrig gives; any other stop came from outside
_DIGEST = re.compile(r"^(?P<repo>[a-z0-9.-]+(?::[0-9]+)?/[a-z0-9._/-]+)@sha256:[0-9a-f]{64}$")
_TASK_ARN = re.compile(
    r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:task/[A-Za-z0-9_-]+/"
    r"(?P<id>[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
_TASK_ID = re.compile(
    r"^([0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
_TAG_KEY = re.compile(r"^(?!aws:)[A-Za-z0-9 _.:/=+@-]{1,128}$")
_TAG_VALUE = re.compile(r"^[A-Za-z0-9 _.:/=+@-]{0,256}$")
_PENDING = {"PROVISIONING", "PENDING", "ACTIVATING"}
FORGOTTEN = "ECS no longer lists it (it stopped over an hour ago)"


def _client(service: str, region: str | None) -> Any:
    from mlrig.adapters import aws

    return aws.client(service, region=region)


def _translate(exc: Exception, action: str) -> Exception:
    from mlrig.adapters import aws

    return aws.translate(exc, action)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str((response or {}).get("Error", {}).get("Code", "")) if response else ""


class AwsBackend:
    """The Backend protocol on the stack's ECS cluster (`outputs.compute`)."""

    def __init__(
        self,
        outputs: StackOutputs,
        *,
        poll_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if outputs.kind != "aws":
            raise UsageError(f"stack '{outputs.name}' is a {outputs.kind} stack, not an AWS one")
        self.outputs = outputs
        self.compute: AwsCompute = outputs.compute or _published_compute(outputs)
        self.region = outputs.region
        self.poll_s = poll_s
        self.sleep = sleep

    # -- submit -----------------------------------------------------------------------------
    def submit(self, spec: TaskSpec) -> TaskHandle:
        definition = self.task_definition(spec)
        self._check_image(spec.image)
        running = self.running(spec.project)
        if running:
            raise _already_running(spec.project, running[0])
        family = definition["family"]
        ecs = _client("ecs", self.region)
        try:
            task = self._run(ecs, spec, family)
        except Exception as exc:
            if not _no_such_definition(exc):
                raise _translate(exc, f"running the training task of {spec.project}") from exc
            self._register(ecs, definition, spec.project)
            try:
                task = self._run(ecs, spec, family)
            except Exception as again:
                raise _translate(again, f"running the training task of {spec.project}") from again
        handle = TaskHandle(backend="aws", id=str(task["taskArn"]), project=spec.project)
        self._lose_races(handle)
        return handle

    def task_definition(self, spec: TaskSpec) -> dict[str, Any]:
        """The RegisterTaskDefinition request for `spec`, checked; its family names the
        project and a hash of everything else in it."""
        from mlrig.infra.config import training_family_prefix

        size = price.fargate_size(spec.cpu, spec.memory_mib)
        if not _DIGEST.fullmatch(spec.image):
            raise UsageError(
                f"trainer image {spec.image!r} is not pinned by digest (REPOSITORY@sha256:…)",
                hint="push the trainer image and pass its digest, never a tag",
            )
        overlap = {s.name for s in spec.secrets} & set(spec.environment)
        if overlap:
            raise UsageError(
                f"{', '.join(sorted(overlap))} is both a secret and a plain value of the task",
                hint="a secret reaches the task only through `secrets`",
            )
        container: dict[str, Any] = {
            "name": CONTAINER,
            "image": spec.image,
            "essential": True,
            "memory": size.memory_mib,  # the hard limit ECS reports an OOM kill against
            "secrets": [
                {"name": s.name, "valueFrom": self._secret_source(s)} for s in spec.secrets
            ],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": self.compute.log_group,
                    "awslogs-region": self.region or "us-east-1",
                    "awslogs-stream-prefix": STREAM_PREFIX,
                },
            },
        }
        body: dict[str, Any] = {
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "runtimePlatform": {"operatingSystemFamily": "LINUX", "cpuArchitecture": "X86_64"},
            "cpu": str(size.cpu_units),
            "memory": str(size.memory_mib),
            "taskRoleArn": self.compute.task_role_arn,
            "executionRoleArn": self.compute.execution_role_arn,
            "containerDefinitions": [container],
        }
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
        project = re.sub(r"[^A-Za-z0-9_-]", "-", spec.project)[:100]
        family = f"{training_family_prefix(self.outputs.name)}{project}-{digest}"
        return {"family": family, **body, "tags": [{"key": PROJECT_TAG, "value": spec.project}]}

    def _secret_source(self, secret: SecretRef) -> str:
        """The Secrets Manager ARN or name, if it is one of the stack's machine identities'
        (the only secrets the execution role may read); else one UsageError."""
        from mlrig.infra.config import machine_secret_prefix

        prefix = machine_secret_prefix(self.outputs.name)
        name = secret.source
        arn = re.fullmatch(
            r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:(?P<name>[^:]+)"
            r"(?::[A-Za-z0-9_.-]*:[A-Za-z0-9_-]*:[A-Za-z0-9_-]*)?",
            secret.source,
        )
        if arn:
            name = arn.group("name")
        if not (name.startswith(prefix) and re.fullmatch(r"[A-Za-z0-9/_+=.@-]+", name)):
            raise UsageError(
                f"secret {secret.name} comes from {secret.source!r}, which is not a machine "
                f"identity's secret of stack '{self.outputs.name}'",
                hint=f"a training task reads only Secrets Manager secrets named {prefix}*",
            )
        return secret.source

    def _check_image(self, image: str) -> None:
        """The image is in the stack's repository (the execution role pulls from no other)
        and ECR has its digest."""
        from mlrig.adapters import aws

        repo, _, digest = image.partition("@")
        if repo != self.outputs.registry_url:
            raise UsageError(
                f"trainer image {image} is not in stack '{self.outputs.name}''s repository "
                f"{self.outputs.registry_url}",
                hint="push the trainer image to the stack's registry first",
            )
        path = self.outputs.registry.repository
        if aws.ecr_image_digest(path, digest, region=self.region) != digest:
            raise UsageError(
                f"trainer image {digest} is not in {self.outputs.registry_url}",
                hint="push the trainer image again: its digest is missing from the registry",
            )

    def _register(self, ecs: Any, definition: dict[str, Any], project: str) -> None:
        try:
            ecs.register_task_definition(**definition)
        except Exception as exc:
            raise _translate(exc, f"registering the training task of {project}") from exc

    def _run(self, ecs: Any, spec: TaskSpec, family: str) -> dict[str, Any]:
        tags = [{"key": PROJECT_TAG, "value": spec.project}]
        for key, value in sorted(spec.labels.items()):
            if key == PROJECT_TAG:
                continue
            if not (_TAG_KEY.fullmatch(key) and _TAG_VALUE.fullmatch(value)):
                raise UsageError(
                    f"label {key}={value!r} cannot be an ECS tag",
                    hint="use letters, digits, spaces and _ . : / = + - @ (key <= 128, "
                    "value <= 256 characters)",
                )
            tags.append({"key": key, "value": value})
        response = ecs.run_task(
            cluster=self.compute.cluster_arn,
            taskDefinition=family,
            count=1,
            capacityProviderStrategy=[
                {"capacityProvider": "FARGATE_SPOT" if spec.spot else "FARGATE", "weight": 1}
            ],
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": self.compute.subnet_ids,
                    "securityGroups": [self.compute.security_group_id],
                    "assignPublicIp": "ENABLED" if self.compute.assign_public_ip else "DISABLED",
                }
            },
            overrides={
                "containerOverrides": [
                    {
                        "name": CONTAINER,
                        "command": list(spec.command),
                        "environment": [
                            {"name": k, "value": v} for k, v in sorted(spec.environment.items())
                        ],
                    }
                ]
            },
            tags=tags,
            startedBy=STARTED_BY,
            enableExecuteCommand=False,
        )
        failures = response.get("failures") or []
        if failures or not response.get("tasks"):
            why = "; ".join(
                f"{f.get('reason', '?')}{': ' + f['detail'] if f.get('detail') else ''}"
                for f in failures
            )
            raise RemoteError(
                f"ECS did not start the training task of {spec.project} ({why or 'no task'})",
                hint="run it again later, or without --spot when Spot capacity is short",
            )
        return dict(response["tasks"][0])

    def running(self, project: str) -> list[dict[str, Any]]:
        """The project's training tasks that have not stopped, oldest first."""
        ecs = _client("ecs", self.region)
        try:
            arns: list[str] = []
            pages = ecs.get_paginator("list_tasks").paginate(
                cluster=self.compute.cluster_arn, startedBy=STARTED_BY, desiredStatus="RUNNING"
            )
            for page in pages:
                arns += page.get("taskArns", [])
            tasks: list[dict[str, Any]] = []
            for i in range(0, len(arns), 100):
                found = ecs.describe_tasks(
                    cluster=self.compute.cluster_arn, tasks=arns[i : i + 100], include=["TAGS"]
                )
                tasks += found.get("tasks", [])
        except Exception as exc:
            raise _translate(exc, f"listing the training tasks of {project}") from exc
        mine = [
            t
            for t in tasks
            if t.get("lastStatus") != "STOPPED"
            and {"key": PROJECT_TAG, "value": project} in (t.get("tags") or [])
        ]
        return sorted(mine, key=lambda t: (str(t.get("createdAt", "")), str(t["taskArn"])))

    def active(self, project: str) -> list[str]:
        """ARNs of the project's training tasks that have not stopped, oldest first."""
        return [str(t["taskArn"]) for t in self.running(project)]

    def remove(self, handle: TaskHandle) -> None:
        """Nothing: ECS forgets a stopped task by itself (its log stays in the log group)."""
        self._check_handle(handle)

    def _lose_races(self, handle: TaskHandle) -> None:
        """Another submitter may have passed the check at the same moment: the older task
        wins, this one stops itself."""
        running = self.running(handle.project)
        first = running[0] if running else None
        if first is not None and first["taskArn"] != handle.id:
            self.stop(handle, "another remote retrain of this project started first")
            raise _already_running(handle.project, first)

    # -- status, stop -------------------------------------------------------------------------
    def _find(self, handle: TaskHandle) -> dict[str, Any] | None:
        """DescribeTasks' answer for this cluster's task, None when ECS lists it no more."""
        self._check_handle(handle)
        ecs = _client("ecs", self.region)
        try:
            found = ecs.describe_tasks(cluster=self.compute.cluster_arn, tasks=[handle.id])
        except Exception as exc:
            raise _translate(exc, f"reading training task {task_id(handle)}") from exc
        tasks = found.get("tasks") or []
        return dict(tasks[0]) if tasks else None

    def describe(self, handle: TaskHandle) -> dict[str, Any]:
        task = self._find(handle)
        if task is None:
            raise UsageError(
                f"no training task {task_id(handle)} on stack '{self.outputs.name}''s cluster "
                "(ECS forgets stopped tasks after about an hour)",
                hint="its result, if it finished, is applied with `mlrig retrain --remote "
                f"--attach {task_id(handle)}`",
            )
        return task

    def status(self, handle: TaskHandle) -> TaskStatus:
        """Its state; a task of this cluster ECS no longer lists has stopped (ECS forgets a
        stopped task after about an hour, a running one never), its exit code unknown: its
        result, when it left one, is what says how it ended."""
        task = self._find(handle)
        if task is None:
            return TaskStatus(state="stopped", exit_code=None, reason=FORGOTTEN)
        return task_status(task)

    def stop(self, handle: TaskHandle, reason: str) -> None:
        self._check_handle(handle)
        ecs = _client("ecs", self.region)
        try:
            ecs.stop_task(
                cluster=self.compute.cluster_arn,
                task=handle.id,
                reason=(STOP_PREFIX + cloud_logs.clean(reason))[:255],
            )
        except Exception as exc:
            if _code(exc) == "InvalidParameterException":  # already gone
                return
            raise _translate(exc, f"stopping training task {task_id(handle)}") from exc

    def _check_handle(self, handle: TaskHandle) -> None:
        cluster = self.compute.cluster_arn.rsplit("/", 1)[-1]
        m = _TASK_ARN.fullmatch(handle.id)
        if handle.backend != "aws" or not m or f"task/{cluster}/" not in handle.id:
            raise UsageError(
                f"{handle.id!r} is not a training task of stack '{self.outputs.name}'",
                hint="pass the task ID `mlrig retrain --remote` printed",
            )

    def handle(self, task: str, project: str) -> TaskHandle:
        """A handle from what a user typed (`--attach TASK_ID`): a task ID or ARN of this
        stack's cluster, checked."""
        cluster_arn = self.compute.cluster_arn
        arn = task
        if _TASK_ID.fullmatch(task):
            head, _, cluster = cluster_arn.partition(":cluster/")
            arn = f"{head}:task/{cluster}/{task}"
        result = TaskHandle(backend="aws", id=arn, project=project)
        self._check_handle(result)
        return result

    # -- lines --------------------------------------------------------------------------------
    def lines(self, handle: TaskHandle) -> Iterator[str]:
        """The task's log lines as they come, until it has stopped and its stream is
        drained. A broken connection is one RemoteError saying how to reattach."""
        self._check_handle(handle)
        logs = _client("logs", self.region)
        stream = f"{STREAM_PREFIX}/{CONTAINER}/{task_id(handle)}"
        token: str | None = None
        while True:
            stopped = self.status(handle).state == "stopped"  # read before draining
            while True:
                request: dict[str, Any] = {
                    "logGroupName": self.compute.log_group,
                    "logStreamName": stream,
                    "startFromHead": True,
                }
                if token:
                    request["nextToken"] = token
                try:
                    page = logs.get_log_events(**request)
                except Exception as exc:
                    if _code(exc) == "ResourceNotFoundException":
                        break  # no stream until the container starts
                    raise _following_broke(handle, exc) from exc
                for raw in page.get("events", []):
                    event = cloud_logs.parse({**raw, "logStreamName": stream})
                    if event is not None:
                        yield from event.lines()
                following = page.get("nextForwardToken")
                if not page.get("events") or following == token:
                    token = following or token
                    break
                token = following
            if stopped:
                return
            self.sleep(self.poll_s)


def _published_compute(outputs: StackOutputs) -> AwsCompute:
    """The stack's `remote_training` outputs from its SSM parameter: where CI, whose
    outputs.json is written from the repository's answers, finds them."""
    from pydantic import ValidationError

    from mlrig.adapters import aws
    from mlrig.infra.config import training_parameter

    name = training_parameter(outputs.name)
    fix = f"run `mlrig stack up --aws --stack {outputs.name}` to add them ($0 idle)"
    text = aws.find_parameter(name, region=outputs.region)
    if text is None:
        raise ConfigError(
            f"stack '{outputs.name}' has no remote training resources (no {name}: it was "
            "last brought up by an mlrig without `retrain --remote`)",
            hint=fix,
        )
    try:
        return AwsCompute.model_validate_json(text)
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "<root>"
        raise ConfigError(f"parameter {name} is invalid at {where}", hint=fix) from None


def task_id(handle: TaskHandle) -> str:
    return handle.id.rsplit("/", 1)[-1]


def task_status(task: dict[str, Any]) -> TaskStatus:
    """A DescribeTasks task as a TaskStatus, its reason in one line."""
    last = str(task.get("lastStatus", ""))
    if last in _PENDING:
        return TaskStatus(state="pending")
    if last != "STOPPED":
        return TaskStatus(state="running")
    container: dict[str, Any] = next(
        (c for c in task.get("containers", []) if c.get("name") == CONTAINER), {}
    )
    code = container.get("exitCode")
    said = str(container.get("reason") or "")
    stopped = str(task.get("stoppedReason") or "")
    stop_code = str(task.get("stopCode") or "")
    reason: str | None = None
    if "OutOfMemoryError" in said:
        reason = f"OOM-killed (memory limit {task.get('memory') or container.get('memory')} MiB)"
    elif stop_code == "SpotInterruption":
        reason = "Fargate Spot took its capacity back: run it again, or without --spot"
    elif stop_code == "TaskFailedToStart":
        reason = f"did not start: {stopped or said}"
    elif stop_code == "UserInitiated" or (stopped and stop_code != "EssentialContainerExited"):
        if stopped.startswith(STOP_PREFIX):
            reason = f"stopped by mlrig: {stopped.removeprefix(STOP_PREFIX)}"
        else:
            reason = f"stopped from outside ({stopped or 'no reason given'})"
    elif code not in (None, 0):
        reason = f"exited with code {code}"
    return TaskStatus(
        state="stopped",
        exit_code=int(code) if isinstance(code, int) else None,
        reason=cloud_logs.clean(reason) if reason else None,
    )


def _already_running(project: str, task: dict[str, Any]) -> Conflict:
    tid = str(task["taskArn"]).rsplit("/", 1)[-1]
    return Conflict(
        f"a remote retrain of {project} is already running (task {tid})",
        hint=f"follow it with `mlrig retrain --remote --attach {tid}`, or wait for it to end",
    )


def _no_such_definition(exc: Exception) -> bool:
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
    return _code(exc) == "ClientException" and (
        "task definition" in message.lower() or "taskdefinition" in message.lower()
    )


def _following_broke(handle: TaskHandle, exc: Exception) -> RemoteError:
    translated = _translate(exc, f"following training task {task_id(handle)}")
    return RemoteError(
        str(getattr(translated, "message", translated)),
        hint=f"reattach with `mlrig retrain --remote --attach {task_id(handle)}`",
    )
