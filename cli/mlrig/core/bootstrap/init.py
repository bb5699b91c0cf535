"""`mlrig init` / `mlrig update`: render the pipeline/ template into a git+DVC repo wired to
a stack, and later re-apply newer template versions with copier's three-way merge.

This module holds `init` and names the parts (each in its own `bootstrap_*` module) that
commands, tests and the demo reach through it.

Contract with `mlrig image build` (which reads a generated repo):
- `.copier-answers.yml` holds at least `project_name` (a slug that is a valid Python package
  and ECR repository name) and `stack` (the mlrig stack name);
- the train stage registers its model in MLflow as the registered model named exactly
  `project_name`, logged with explicit `pip_requirements` and an `input_example`; the latest
  registered version is what `mlrig image build` uses by default inside the repo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlrig import contract
from mlrig.adapters import git
from mlrig.core.bootstrap import _pin as bootstrap_pin
from mlrig.core.bootstrap import _render as bootstrap_render
from mlrig.core.bootstrap import _staging as bootstrap_staging
from mlrig.core.bootstrap._identity import machine_identity
from mlrig.core.bootstrap._pin import Pin
from mlrig.core.bootstrap._render import stack_answers
from mlrig.core.bootstrap._template import packaged_template, template_repo
from mlrig.core.bootstrap._update import UpdateResult, read_answers, update
from mlrig.core.bootstrap.dataset import (
    RAW_DATA,
    TEMPORAL_RAW,
    write_dataset,
    write_temporal_example,
)
from mlrig.core.bootstrap.repo import configure_remote, remote_local_options, wire_and_commit
from mlrig.core.shared.names import (
    derive_project_name,
    validate_github_repo,
    validate_project_name,
)
from mlrig.core.shared.progress import Progress
from mlrig.core.stack.stacks import ANSWERS_FILE
from mlrig.version import __version__

__all__ = [
    "ANSWERS_FILE",
    "RAW_DATA",
    "InitResult",
    "Pin",
    "UpdateResult",
    "configure_remote",
    "derive_project_name",
    "init",
    "packaged_template",
    "read_answers",
    "remote_local_options",
    "stack_answers",
    "template_repo",
    "update",
    "validate_github_repo",
    "validate_project_name",
    "write_dataset",
]


@dataclass(frozen=True)
class InitResult:
    path: Path
    project_name: str
    stack: str
    commit: str
    template_version: str
    identity: str = ""  # the repository's machine identity, once it exists on the stack
    identity_problem: str = ""  # why it could not be made now (the repo is made all the same)
    taken_over: tuple[str, ...] = ()  # others' grants revoked by take_over
    # the mlrig CI installs, with the index's sha256 of its files (none: pin.why_none says why)
    pin: Pin | None = None


def init(
    path: Path,
    stack: str,
    *,
    name: str | None = None,
    github_repo: str = "",
    description: str | None = None,
    force: bool = False,
    template_dir: Path | None = None,
    progress: Progress = lambda _m: None,
    take_over: bool = False,
    temporal: bool = False,
    snapshots: str | None = None,
) -> InitResult:
    """Create a git+DVC repository at path wired to stack; nothing is left on failure.

    The repo is built in a sibling staging directory and moved into place at the end.
    With force, path may hold other files: none is overwritten, and they stay uncommitted.
    An experiment or model of the project's name managed by someone else stops init
    (identities.NameTaken) unless take_over revokes their grants. With temporal, the repo
    trains on time-stamped labels and features (the template's `temporal` answer) and starts
    from the template's generated temporal example instead of the bundled table. snapshots
    ("table" or "partitioned", default partitioned when temporal) is how ingest keeps the data.
    """
    target = path.expanduser().absolute()
    project = validate_project_name(name) if name is not None else derive_project_name(target.name)
    validate_github_repo(github_repo)
    git.require()
    outputs = contract.load(stack)
    bootstrap_staging.check_target(target, force)

    pin = bootstrap_pin.pin(__version__, progress=progress)
    with bootstrap_staging.staging_dir(target) as staging:
        src, ref = template_repo(template_dir)
        progress(f"rendering template {ref}")
        bootstrap_render.render(
            src,
            ref,
            staging,
            project=project,
            outputs=outputs,
            github_repo=github_repo,
            description=description,
            temporal=temporal,
            snapshots=snapshots,
            pin=pin,
        )
        if force:
            bootstrap_staging.refuse_collisions(staging, target)
        progress("writing the raw dataset")
        if temporal:
            write_temporal_example(staging, project)
        else:
            write_dataset(staging / RAW_DATA, template_dir)
        progress("git init, dvc init, remote, dvc add")
        commit = wire_and_commit(staging, outputs, TEMPORAL_RAW if temporal else RAW_DATA, ref)
        identity, problem, revoked = machine_identity(
            outputs, project, github_repo, progress, take_over=take_over
        )
        bootstrap_staging.place(staging, target)
    return InitResult(target, project, outputs.name, commit, ref, identity, problem, revoked, pin)
