"""A run's restore point: the git commit (or experiment ref) whose dvc.lock records exactly
that run, and whether it restores the run's workspace bit for bit (dirty files included)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlrig import paths
from mlrig.adapters import git
from mlrig.core.provenance import _inputs as provenance_input
from mlrig.core.provenance import record as p
from mlrig.core.provenance._inputs import Refused
from mlrig.core.provenance.record import DvcRemoteRecord, FoundBy, RestorePoint

EXEC_REFS = f"{p.EXP_REFS}/exec/"
NOT_RECORDED = (
    "no commit or experiment records this run's outputs: commit dvc.lock after `dvc repro`, "
    "or push the experiment with `dvc exp push`"
)


@dataclass(frozen=True)
class Resolution:
    restore_point: RestorePoint | None
    restorable: bool
    reason: str | None = None
    refused: tuple[Refused, ...] = ()  # tags not acted on (then nothing was searched)


def has_provenance(tags: Mapping[str, str]) -> bool:
    """True when the run was made by a pipeline stage that recorded its hashes."""
    return p.TAG_STAGE in tags or any(k.startswith(p.TAG_OUT_PREFIX) for k in tags)


def hashes(tags: Mapping[str, str], prefix: str) -> dict[str, str]:
    """{path: md5} of the run's dvc.dep.* or dvc.out.* tags."""
    return {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}


def dirty_files(tags: Mapping[str, str]) -> dict[str, str]:
    """The run's {path: md5 | "deleted"}; an unreadable tag counts as "too many" (unknown)."""
    raw = tags.get(p.TAG_DIRTY_FILES)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {p.DIRTY_TOO_MANY: "unreadable"}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def stage_hashes(lock_text: bytes | None, stage: str) -> tuple[dict[str, str], dict[str, str]]:
    """({dep path: md5}, {out path: md5}) of one stage in a dvc.lock's bytes."""
    import yaml

    if not lock_text:
        return {}, {}
    try:
        doc = yaml.safe_load(lock_text) or {}
        entry = (doc.get("stages") or {}).get(stage) or {}
    except (yaml.YAMLError, AttributeError):
        return {}, {}

    def table(key: str) -> dict[str, str]:
        items = entry.get(key) or []
        return {str(i["path"]): str(i.get("md5")) for i in items if isinstance(i, dict)}

    return table("deps"), table("outs")


def uncached_outputs(dvc_yaml: bytes | None) -> set[str]:
    """The outputs dvc.yaml marks `cache: false` (git holds them: metrics, the data record);
    dvc.lock does not say which they are."""
    import yaml

    found: set[str] = set()
    try:
        stages = (yaml.safe_load(dvc_yaml or b"") or {}).get("stages") or {}
        for spec in stages.values():
            for kind in ("outs", "metrics", "plots"):
                for entry in spec.get(kind) or ():
                    if isinstance(entry, dict):
                        for path, options in entry.items():
                            if isinstance(options, dict) and options.get("cache") is False:
                                found.add(str(path))
    except (yaml.YAMLError, AttributeError, TypeError):
        return set()
    return found


def dvc_outputs(lock_text: bytes | None, dvc_yaml: bytes | None = None) -> set[str] | None:
    """Every path some stage of a dvc.lock outputs that DVC, not git, stores (outputs
    dvc.yaml marks `cache: false` left out); None when the lock cannot be read."""
    import yaml

    try:
        stages = (yaml.safe_load(lock_text or b"") or {}).get("stages") or {}
        outs = {str(o["path"]) for s in stages.values() for o in s.get("outs") or ()}
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        return None
    return outs - uncached_outputs(dvc_yaml)


def storage(repo: Path | None, sha: str | None) -> tuple[DvcRemoteRecord | None, set[str] | None]:
    """The DVC remote holding the data (the default remote of .dvc/config at the commit,
    else in the working tree) and the paths DVC stores (stage outputs; the rest is in git)."""
    from mlrig.adapters import dvc

    if repo is None:
        return None, None
    files = (".dvc/config", p.LOCK_FILE, p.PIPELINE_FILE)
    if sha:
        found = git.show_files(repo, [f"{sha}:{f}" for f in files])
        config, lock, stages = (found[f"{sha}:{f}"] for f in files)
    else:
        config, lock, stages = (
            (repo / f).read_bytes() if (repo / f).is_file() else None for f in files
        )
    default, urls = dvc.config_remotes(config.decode(errors="replace") if config else "")
    remote = DvcRemoteRecord(name=default, url=urls[default]) if default in urls else None
    return remote, dvc_outputs(lock, stages)


def match(lock_text: bytes | None, tags: Mapping[str, str]) -> FoundBy | None:
    """How a dvc.lock records this run: its mlflow_run.json (the exact link), or the same
    model bytes from the same inputs; None when it records another run."""
    stage = tags.get(p.TAG_STAGE, p.TRAIN_STAGE)
    deps, outs = stage_hashes(lock_text, stage)
    want_outs, want_deps = hashes(tags, p.TAG_OUT_PREFIX), hashes(tags, p.TAG_DEP_PREFIX)
    run_file = want_outs.get(p.RUN_FILE)
    if run_file and outs.get(p.RUN_FILE) == run_file:
        return "run-file"
    model = want_outs.get(p.MODEL_FILE)
    same_inputs = all(deps.get(path) == md5 for path, md5 in want_deps.items())
    if model and outs.get(p.MODEL_FILE) == model and want_deps and same_inputs:
        return "model-and-deps"
    # a team's own stage (mlrig.api.log_provenance): every output and input it recorded
    same_outputs = all(outs.get(path) == md5 for path, md5 in want_outs.items())
    if not model and not run_file and want_outs and want_deps and same_outputs and same_inputs:
        return "outs-and-deps"
    return None


def find_restore_point(repo: Path, tags: Mapping[str, str]) -> RestorePoint | None:
    """The experiment ref the run names, else the newest commit of any ref (experiments
    included) whose dvc.lock records the run: by its run file first, then by model + deps.
    Only what repo holds is searched: nothing is fetched into it (a run's recorded remote is
    searched in mlrig's own mirror of it, see resolve_anywhere). tags are checked ones."""
    lock = p.LOCK_FILE
    exp_ref = tags.get(p.TAG_EXP_REF)
    if exp_ref:
        sha = git.commit_of(repo, exp_ref)
        if sha:
            text = git.show_files(repo, [f"{sha}:{lock}"])[f"{sha}:{lock}"]
            if match(text, tags):
                return RestorePoint(sha=sha, found_by="exp-ref", ref=exp_ref)
    # refs/exps/exec/* are DVC's scratch refs of a running experiment, not experiments
    exps = {k: v for k, v in git.refs(repo, p.EXP_REFS).items() if not k.startswith(EXEC_REFS)}
    ref_of = {sha: name for name, sha in exps.items()}
    candidates = list(dict.fromkeys([*git.log_path(repo, lock), *exps.values()]))
    locks = git.show_files(repo, [f"{sha}:{lock}" for sha in candidates])
    found = [(sha, match(locks[f"{sha}:{lock}"], tags)) for sha in candidates]
    for wanted in ("run-file", "model-and-deps", "outs-and-deps"):
        for sha, how in found:
            if how == wanted:
                return RestorePoint(sha=sha, found_by=how, ref=ref_of.get(sha))
    return None


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def differing_dirty_files(repo: Path, sha: str, dirty: Mapping[str, str]) -> list[str]:
    """The run's dirty files whose content at sha is not what the run read."""
    if p.DIRTY_TOO_MANY in dirty:
        return [p.DIRTY_TOO_MANY]
    blobs = git.show_files(repo, [f"{sha}:{path}" for path in dirty])
    differ = []
    for path, want in dirty.items():
        blob = blobs[f"{sha}:{path}"]
        have = p.DIRTY_DELETED if blob is None else md5_bytes(blob)
        if have != want:
            differ.append(path)
    return differ


def dirty_reason(run_id: str, files: list[str]) -> str:
    shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    if files == [p.DIRTY_TOO_MANY]:
        shown = "too many changed files to list"
    return (
        f"run {run_id} was made from a dirty workspace ({shown}): it cannot be restored bit for bit"
    )


def resolve(repo: Path | None, run_id: str, tags: Mapping[str, str]) -> Resolution:
    """Where run_id can be restored from in the git repo at `repo`, and whether bit for bit.
    A run with a tag mlrig refuses (provenance_input) is not searched for: not restorable."""
    tags, refused = provenance_input.checked(tags)
    if refused:
        return Resolution(
            None, False, provenance_input.refused_reason(run_id, refused), (*refused,)
        )
    if repo is None:
        return Resolution(
            None,
            False,
            f"no git repository to look for the commit that recorded run {run_id} in "
            "(run this inside the project's repository or pass --repo DIR)",
        )
    point = find_restore_point(repo, tags)
    if point is None:
        return Resolution(None, False, NOT_RECORDED)
    dirty = dirty_files(tags)
    differ = differing_dirty_files(repo, point.sha, dirty) if dirty else []
    if differ:
        return Resolution(point, False, dirty_reason(run_id, differ))
    return Resolution(point, True)


def mirror_of(remote: str) -> Path | None:
    """A bare mirror of the run's recorded git remote (checked) under mlrig's cache, refreshed:
    where to look when the current directory is not (or not a clone of) the project's
    repository, or lacks the run's experiment ref. mlrig's own object store: whatever the
    remote holds lands there, never in the user's repository."""
    where = paths.home() / "cache" / "git" / (hashlib.sha256(remote.encode()).hexdigest()[:16])
    return where if git.mirror(remote, where) else None


def resolve_anywhere(
    repo: Path | None, run_id: str, tags: Mapping[str, str]
) -> tuple[Resolution, Path | None]:
    """resolve() in repo; when that finds no restore point, in a mirror of the run's recorded
    remote (what a teammate without the repo, or a fresh machine, has). Returns the answer and
    the repository it was found in."""
    found = resolve(repo, run_id, tags)
    remote = tags.get(p.TAG_GIT_REMOTE)
    if found.restore_point is not None or found.refused or not remote:
        return found, repo
    mirrored = mirror_of(remote)
    if mirrored is None:
        return found, repo
    again = resolve(mirrored, run_id, tags)
    if again.restore_point is not None or repo is None:
        return again, mirrored
    return found, repo
