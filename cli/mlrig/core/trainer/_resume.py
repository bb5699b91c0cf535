"""A remote job a stopped service left running: the task start-up recovery attaches to.

A job run as `mlrig retrain --remote` follows a task that outlives the service. While the
job runs, the task its child submitted is recorded on the job (read from the caller's
record, `.dvc/tmp/mlrig-remote.json`, once one written after the job started appears). When
the service is killed or stopped before the job ends, the job stays `running`; the next
start-up attaches to the task (`retrain --remote --attach`, the job's own child again), which
follows it if it still runs and then applies or undoes its result as the job would have.

It does so only when every fact says the run is still this job's and still unapplied: the
job was remote, its task is recorded, the repository's record names that very task, no
apply of that run was under way when the service stopped (the local undo has put the
repository and `champion` back and tagged the run's versions undone, as for a local run
killed while publishing: applying it again would publish versions tagged undone under the
old champion), and the repository is on the branch and commit the task was submitted from
(a result applied, or a branch moved by hand, is never applied or undone again). Otherwise
the job ends as a local job interrupted by a stop does, and the reason is logged.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlrig.core.compute.remote import RemoteState
from mlrig.core.retrain.state import SavedState
from mlrig.core.trainer._store import Job

UNREADABLE = "unreadable"  # a retrain marker that names no run id, or cannot be read


@dataclass(frozen=True)
class Resume:
    task: str | None  # the task to attach to; None: the job ends interrupted
    why: str


def decide(
    job: Job,
    state: RemoteState | None,
    *,
    applying: str | None,
    branch: str | None,
    head: str | None,
) -> Resume:
    """Whether the interrupted `job` is picked up, given the repository's record of a remote
    retrain (`state`), the run id of a local apply the stop interrupted (`applying`, the
    retrain marker's), and where the repository is now (after the local undo ran)."""
    if job.compute is None:
        return Resume(None, "a local retrain: its run is undone")
    if job.task is None:
        return Resume(None, "its task was never recorded (the service stopped while submitting)")
    if state is None:
        return Resume(None, f"the repository has no record of task {job.task[:12]} any more")
    if state.task != job.task:
        return Resume(None, f"the repository's record names another task ({state.task[:12]})")
    if applying in (state.retrain_id, UNREADABLE):
        return Resume(
            None,
            f"the service stopped while applying task {job.task[:12]}'s result: undone, as a "
            "local run's publish is",
        )
    if branch != state.branch or head != state.head:
        return Resume(
            None,
            f"the repository is no longer at {state.head[:12]} on {state.branch}, where task "
            f"{job.task[:12]} started (its result was applied, or the branch moved)",
        )
    return Resume(job.task, f"attaching to task {job.task[:12]} again")


def submitted_by(job: Job, state: RemoteState | None) -> str | None:
    """The task the running remote `job`'s child submitted: the record's task, when the
    record was written after the job started (an older one is an earlier run's)."""
    if job.compute is None or state is None or job.started_at is None:
        return None
    if state.submitted < job.started_at.timestamp():
        return None
    return state.task


def applying(marker: SavedState | None) -> str | None:
    """The run id of the local apply (or run) a retrain marker says was under way."""
    return None if marker is None else (marker.retrain_id or UNREADABLE)
