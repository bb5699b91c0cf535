"""The record of a run mlrig's tags do not describe (a plain MLflow script's, a team's own
pipeline before `mlrig.api.log_provenance()`): everything that can still be established, and
each missing link with what would supply it.

What can be established: the commit (MLflow's own `mlflow.source.git.commit`, else the
image's `io.mlrig.git.commit` label), the script (`mlflow.source.name`), the origin
(`mlrig.git.remote`, else MLflow's `mlflow.source.git.repoURL`, both checked like every
remote), the model version and images, and the data the commit's dvc.lock records, when a
repository here holds that commit. Nothing says the run read that data, used those params
or ran on a clean tree: those links are listed as missing, and the run is never restorable
bit for bit. A run with no commit at all links to no code: one line says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from mlrig.adapters import git
from mlrig.core.provenance import _inputs as provenance_input
from mlrig.core.provenance import record as p
from mlrig.core.provenance import resolve
from mlrig.core.provenance._inputs import Refused
from mlrig.core.provenance.record import (
    CodeRecord,
    DataRecord,
    ImageRecord,
    MissingLink,
    ModelRecord,
    ProvenanceRecord,
    RestorePoint,
    RunRecord,
)
from mlrig.errors import UsageError

ROLE_KEYS: tuple[tuple[Literal["dep", "out"], str], ...] = (("out", "outs"), ("dep", "deps"))
COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
LOG_PROVENANCE = "call mlrig.api.log_provenance() in the training run (or train with the template)"


def commit_of(tags: dict[str, str], labels: dict[str, str]) -> str | None:
    """The commit the run's own git tag, else its image's label, names (a full SHA only)."""
    for value in (tags.get(p.TAG_GIT_COMMIT), labels.get(p.LABEL_GIT_COMMIT)):
        if value and COMMIT.fullmatch(value):
            return value
    return None


def remote_of(tags: dict[str, str]) -> str | None:
    """mlrig's remote tag (already checked), else MLflow's repoURL when it passes the same
    rule (it may hold a token: such a URL is refused, not shown)."""
    if tags.get(p.TAG_GIT_REMOTE):
        return tags[p.TAG_GIT_REMOTE]
    url = tags.get(p.TAG_MLFLOW_REPO_URL)
    return url if url and provenance_input.remote_problem(url) is None else None


def lock_data(repo: Path, sha: str) -> list[DataRecord]:
    """Every stage output of the commit's dvc.lock, and every input no stage makes (the
    raw data), with the hash the lock records; paths that leave the workspace are left out."""
    import yaml

    text = git.show_files(repo, [f"{sha}:{p.LOCK_FILE}"])[f"{sha}:{p.LOCK_FILE}"]
    try:
        stages = (yaml.safe_load(text or b"") or {}).get("stages") or {}
        entries: list[tuple[Literal["dep", "out"], str, str]] = [
            (role, str(item["path"]), str(item.get("md5")))
            for spec in stages.values()
            for role, key in ROLE_KEYS
            for item in spec.get(key) or ()
            if isinstance(item, dict) and item.get("md5")
        ]
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        return []
    made = {path for role, path, _ in entries if role == "out"}
    remote, in_dvc = resolve.storage(repo, sha)
    seen: dict[str, DataRecord] = {}
    for role, path, md5 in entries:
        if path in seen or (role == "dep" and path in made) or provenance_input.path_problem(path):
            continue
        held = remote if in_dvc is None or path in in_dvc or role == "dep" else None
        seen[path] = DataRecord(path=path, md5=md5, role=role, remote=held, source="dvc.lock")
    return sorted(seen.values(), key=lambda d: (d.role, d.path))


def record(
    ref: str,
    run: RunRecord,
    model: ModelRecord | None,
    images: list[ImageRecord],
    repo: Path | None,
    refused_labels: list[Refused],
    labels: dict[str, str],
) -> ProvenanceRecord:
    """What can be said of a run without mlrig's provenance tags (see the module doc)."""
    tags, refused = provenance_input.checked(run.tags)
    refused = [*refused_labels, *refused]
    what = f"model version {model.version} of {model.name}" if model else f"run {run.id}"
    commit = commit_of(tags, labels)
    if commit is None:
        raise UsageError(
            f"{what} has no git tag at all (no mlflow.source.git.commit, no image label): "
            "nothing links it to code",
            hint="log it from a git checkout (MLflow then records the commit), or "
            + LOG_PROVENANCE,
        )
    remote = remote_of(tags)
    held = repo is not None and git.commit_of(repo, commit) == commit
    missing = [
        MissingLink(link="data the run read", how=f"dvc.dep.*/dvc.out.* tags: {LOG_PROVENANCE}"),
        MissingLink(link="stage and params", how=f"dvc.stage, mlrig.params.md5: {LOG_PROVENANCE}"),
        MissingLink(
            link="clean workspace",
            how=f"mlrig.git.dirty (nothing says the run's files equal the commit's): "
            f"{LOG_PROVENANCE}",
        ),
    ]
    if remote is None:
        missing.append(
            MissingLink(
                link="git remote",
                how="mlrig.git.remote or MLflow's mlflow.source.git.repoURL: train in a clone "
                "with an `origin` (log_provenance records it)",
            )
        )
    if not held:
        missing.append(
            MissingLink(
                link=f"commit {commit[:12]} here",
                how="run this inside a clone that holds it, or pass --repo DIR",
            )
        )
    if model is None:
        missing.append(
            MissingLink(
                link="model version",
                how="register the run's model (registered_model_name= in log_model)",
            )
        )
    data = lock_data(repo, commit) if held and repo is not None else []
    point = RestorePoint(sha=commit, found_by="commit-tag") if held else None
    reason = (
        f"{what} has no mlrig provenance tags: its commit and the data that commit's dvc.lock "
        "records can be restored, but nothing proves the run used them"
    )
    if refused:
        reason = provenance_input.refused_reason(run.id, refused)
    return ProvenanceRecord(
        ref=ref,
        images=images,
        model=model,
        run=run,
        code=CodeRecord(
            commit=commit,
            remote=remote,
            restore_point=point,
            restorable=False,
            reason=reason,
            source_name=provenance_input.printable(tags.get(p.TAG_SOURCE_NAME)),
        ),
        data=data,
        refused=[r.line() for r in refused],
        missing=missing,
    )
