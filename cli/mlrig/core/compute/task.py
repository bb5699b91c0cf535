"""The entrypoint inside a remote retrain's task: `python -m mlrig.core.compute.task`.

It clones the submitted commit from the git bundle the caller uploaded beside the result
prefix (so the task needs no credentials for the repository), points DVC at the stack's
storage the repository already names, and runs the very retrain `mlrig retrain` runs
(`retrain.retrain` with `InTask`: the same stages, gate, commit message and run tags, the
caller's run id on every MLflow run). It publishes nothing but `dvc push` (content-addressed:
harmless while no commit names it); its result is a bundle of the one new commit on top of
the submitted sha and result.json (TaskResult), which the caller validates and applies.

MLflow is reached as the repository's machine identity: its password arrives as a secret
(on the local engine, a read-only file under SECRETS_DIR named after its variable, read into
the environment here; on ECS, the variable itself), never as a plain value or a label. A
failure is one line on stderr, result.json with `ok: false`, and a non-zero exit; the
retrain's own undo has by then put `champion` back.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlrig.core.compute import store as store_mod
from mlrig.errors import MlrigError, UsageError

ENV_PREFIX = "MLRIG_TASK_PREFIX"  # the store (folder, s3://) of the bundle and the result
ENV_SHA = "MLRIG_TASK_SHA"  # the submitted commit
ENV_BRANCH = "MLRIG_TASK_BRANCH"  # the branch the caller retrains (the commit is made on it)
ENV_RETRAIN_ID = "MLRIG_RETRAIN_ID"  # the caller's run id: its undo finds this run's versions
ENV_GIT_REMOTE = "MLRIG_TASK_GIT_REMOTE"  # origin's URL, as runs record it (no credentials)
ENV_GIT_NAME = "MLRIG_TASK_GIT_NAME"  # the caller's git identity: the commit's author
ENV_GIT_EMAIL = "MLRIG_TASK_GIT_EMAIL"
SECRETS_DIR = Path("/run/mlrig/secrets")  # local backend: one file per SecretRef
SOURCE_BUNDLE = "source.bundle"
RESULT_BUNDLE = "result.bundle"
RESULT = "result.json"
SCHEMA_VERSION: Literal[1] = 1

_SHA = r"^[0-9a-f]{40}([0-9a-f]{24})?$"
_ID = r"^[0-9a-f]{32}$"
# printable, no leading dash (a value handed to git as an argument), no line break
_TEXT = r"^[^\-\s][^\r\n\x00]{0,254}$"


class TaskEnv(BaseModel):
    """What the caller hands the task, read from its environment at one boundary."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prefix: str  # a store URL (`store.open_store` checks it)
    sha: str = Field(pattern=_SHA)
    branch: str = Field(pattern=r"^[A-Za-z0-9._/][A-Za-z0-9._/-]{0,254}$")
    retrain_id: str = Field(pattern=_ID)
    git_remote: str | None = Field(default=None, pattern=_TEXT)
    git_name: str | None = Field(default=None, pattern=_TEXT)
    git_email: str | None = Field(default=None, pattern=_TEXT)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TaskEnv:
        try:
            parsed = cls(
                prefix=env.get(ENV_PREFIX, ""),
                sha=env.get(ENV_SHA, ""),
                branch=env.get(ENV_BRANCH, ""),
                retrain_id=env.get(ENV_RETRAIN_ID, ""),
                git_remote=env.get(ENV_GIT_REMOTE) or None,
                git_name=env.get(ENV_GIT_NAME) or None,
                git_email=env.get(ENV_GIT_EMAIL) or None,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise UsageError(
                f"the task's environment is not valid: {first['loc'][0]}: {first['msg']}",
                hint="submit it with `mlrig retrain --remote`",
            ) from None
        try:
            parsed.store(env)  # an absolute folder or s3://bucket/prefix
        except UsageError as exc:
            raise UsageError(f"the task's {ENV_PREFIX}: {exc.message}") from None
        return parsed

    def store(self, env: Mapping[str, str]) -> store_mod.Store:
        return store_mod.open_store(
            self.prefix,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or None,
        )


class TaskResult(BaseModel):
    """result.json: what the task did. Written by the task, read back by the caller as
    input (validated here, once, before anything reaches git or MLflow)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = SCHEMA_VERSION
    retrain_id: str = Field(pattern=_ID)
    submitted: str = Field(pattern=_SHA)
    ok: bool
    error: str | None = Field(default=None, max_length=2000)
    changed: bool = False
    commit: str | None = Field(default=None, pattern=_SHA)  # the one new commit (bundled)
    snapshot: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    version: str | None = Field(default=None, pattern=r"^[0-9]{1,12}$")
    decision: Literal["promoted", "kept"] | None = None
    champion_moved: bool = False
    previous_champion: str | None = Field(default=None, pattern=r"^[0-9]{1,12}$")
    run_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    message: str = Field(default="", max_length=2000)
    started: float
    finished: float


def load_secret_files(directory: Path = SECRETS_DIR) -> None:
    """Each file under directory becomes the variable it is named after (the local backend's
    way to inject a SecretRef: nothing in the container's configuration holds the value)."""
    if not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name.isidentifier() and path.name.isupper():
            os.environ[path.name] = path.read_text().strip()


class _Out:
    """The task's standard output as it was at start: DVC points fds 1 and 2 at the
    retrain's log file while stages run, and what is copied from that file must not land in
    it again."""

    stream: TextIO | None = None

    @classmethod
    def write(cls, text: str) -> None:
        if cls.stream is None:
            cls.stream = os.fdopen(os.dup(1), "w", buffering=1, errors="replace")
        cls.stream.write(text)
        cls.stream.flush()


def _follow(log_file: Path, stop: threading.Event) -> None:
    """Print what the pipeline's stages write to the retrain's log, as they write it: the
    task's output is what `--follow` streams."""
    position = 0
    while True:
        done = stop.is_set()
        if log_file.is_file():
            with log_file.open("rb") as fh:
                fh.seek(position)
                chunk = fh.read()
                position += len(chunk)
            if chunk:
                _Out.write(chunk.decode(errors="replace"))
        if done:
            return
        stop.wait(0.5)


def _say(message: str) -> None:
    _Out.write(f"• {message}\n")


def run(env: Mapping[str, str]) -> TaskResult:
    """Clone, retrain, bundle; the result (also written to the prefix as result.json)."""
    from mlrig.adapters import dvc, git
    from mlrig.core.retrain import retrain as retrain_core
    from mlrig.core.retrain import state as retrain_state

    started = time.time()
    cfg = TaskEnv.from_env(env)
    base: dict[str, Any] = {"retrain_id": cfg.retrain_id, "submitted": cfg.sha, "started": started}
    store = cfg.store(env)
    try:
        scratch = Path(tempfile.mkdtemp(prefix="mlrig-task-"))
        work = scratch / "repo"
        _say(f"cloning {cfg.sha[:12]} ({cfg.branch}) from the submitted bundle")
        if not store.get_file(SOURCE_BUNDLE, scratch / SOURCE_BUNDLE):
            raise UsageError(f"{store.url} holds no {SOURCE_BUNDLE}: nothing to retrain")
        git.clone(str(scratch / SOURCE_BUNDLE), work)
        git.checkout_branch(work, cfg.branch, cfg.sha)
        git.set_remote_url(work, "origin", cfg.git_remote)  # what the runs record, as locally
        for key, value in (("user.name", cfg.git_name), ("user.email", cfg.git_email)):
            if value:
                git.set_config(work, key, value)
        fetched, missing = dvc.pull(work)
        _say(f"dvc pull: {fetched} files" + (f", {len(missing)} not stored yet" if missing else ""))
        stop = threading.Event()
        follower = threading.Thread(
            target=_follow, args=(work / retrain_state.LOG, stop), daemon=True
        )
        follower.start()
        try:
            result = retrain_core.retrain(
                work,
                push_image=False,
                log=_say,
                in_task=retrain_core.InTask(
                    {"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"},
                    cfg.retrain_id,
                ),
            )
        finally:
            stop.set()
            follower.join(timeout=5)
        if result.changed and result.commit:
            git.bundle_create(work, scratch / RESULT_BUNDLE, [f"{cfg.sha}..{cfg.branch}"])
            store.put_file(RESULT_BUNDLE, scratch / RESULT_BUNDLE)
        outcome = TaskResult(
            **base,
            ok=True,
            changed=result.changed,
            commit=result.commit,
            snapshot=result.snapshot,
            version=result.version,
            decision=result.decision,  # type: ignore[arg-type]
            champion_moved=result.champion_moved,
            previous_champion=result.previous_champion,
            run_id=result.run_id,
            message=result.message,
            finished=time.time(),
        )
    except MlrigError as exc:
        outcome = TaskResult(**base, ok=False, error=exc.one_line(), finished=time.time())
    store.put_text(RESULT, outcome.model_dump_json(indent=1) + "\n")
    return outcome


def main() -> int:
    _Out.write("")  # the output, saved before anything redirects it
    load_secret_files()
    try:
        outcome = run(os.environ)
    except MlrigError as exc:  # the environment itself is not valid: nowhere to write to
        print(exc.one_line(), file=sys.stderr, flush=True)
        return exc.exit_code
    if not outcome.ok:
        print(outcome.error, file=sys.stderr, flush=True)
        return 9
    _say(outcome.message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
