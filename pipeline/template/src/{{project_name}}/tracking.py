"""Wires training to the stack's MLflow and records where a run came from: git commit and
remote, a dirty workspace, the DVC experiment, and the hash of the stage's inputs, outputs
and params. The tag names are read by `mlrig trace` and `mlrig checkout`: keep them.

MLFLOW_TRACKING_URI from the environment wins (CI, `eval "$(mlrig stack env)"`); otherwise
the stack named in .copier-answers.yml (or $MLRIG_STACK) is resolved through `mlrig.api`,
mlrig's public API, from the mlrig installed in the same environment as this repository's
tools. Use nothing else from mlrig: the rest is internal and may change.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from .data import ROOT

MAX_DIRTY_FILES = 50
MAX_TAG_CHARS = 5000  # what every MLflow server accepts as a tag value
REPRO_OF_ENV = "MLRIG_REPRO_OF"  # set by `mlrig checkout --repro`: a verification re-run


def configure_mlflow() -> str:
    """Make sure MLflow's client environment points at the stack; return the tracking URI."""
    # MLflow's client telemetry reports usage to MLflow's own servers, and its thread edits
    # os.environ while other code iterates it (a KeyError seen in training runs): off unless
    # the environment says otherwise
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        try:
            from mlrig.api import MlrigError, tracking_env
        except ImportError:
            raise SystemExit(
                "MLFLOW_TRACKING_URI is not set and mlrig is not installed: "
                "install mlrig or export the MLflow settings"
            ) from None
        try:
            os.environ.update(tracking_env(ROOT))
        except MlrigError as exc:
            raise SystemExit(exc.one_line()) from None
    return os.environ["MLFLOW_TRACKING_URI"]


def repro_of() -> str | None:
    """The run this one re-runs to verify it (it must then not register a model version)."""
    return os.environ.get(REPRO_OF_ENV) or None


# -- git ------------------------------------------------------------------------------------
def git_commit(root: Path = ROOT) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()


def git_remote(root: Path = ROOT) -> str | None:
    proc = subprocess.run(
        ["git", "remote", "get-url", "origin"],
        cwd=root,
        check=False,
        capture_output=True,
        text=True,
    )
    url = proc.stdout.strip()
    return strip_credentials(url) if proc.returncode == 0 and url else None


def strip_credentials(url: str) -> str:
    """https://user:token@host/x -> https://host/x (HTTP user names are often tokens);
    ssh://git:secret@host/x -> ssh://git@host/x. scp-like git@host:x and paths stay."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    user, host = parts.netloc.rsplit("@", 1)
    netloc = host if parts.scheme in ("http", "https") else f"{user.split(':', 1)[0]}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def changed_paths(root: Path = ROOT) -> list[str]:
    """Every path that differs from HEAD (staged, unstaged or untracked), from the root."""
    out = subprocess.run(
        ["git", "status", "--porcelain", "-z", "--untracked-files=all"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout
    entries = out.decode("utf-8", "surrogateescape").split("\0")
    paths: list[str] = []
    rest = iter(entries)
    for entry in rest:
        if not entry:
            continue
        paths.append(entry[3:].rstrip("/"))
        if "R" in entry[:2] or "C" in entry[:2]:
            paths.append(next(rest, ""))  # -z puts a rename's source in the next entry
    return [p for p in paths if p]


# -- dvc.yaml -------------------------------------------------------------------------------
def _entry_paths(entries: list[Any] | None) -> list[str]:
    """outs/metrics/plots/deps entries are a path or {path: options}."""
    return [str(next(iter(e))) if isinstance(e, dict) else str(e) for e in entries or []]


def dvc_stages(root: Path = ROOT) -> dict[str, Any]:
    with open(root / "dvc.yaml") as fh:
        return yaml.safe_load(fh)["stages"]


def stage_deps(stage: str, root: Path = ROOT) -> list[str]:
    return _entry_paths(dvc_stages(root)[stage].get("deps"))


def stage_outs(stage: str, root: Path = ROOT) -> list[str]:
    return _entry_paths(dvc_stages(root)[stage].get("outs"))


def pipeline_outputs(root: Path = ROOT) -> list[str]:
    """Every path any stage writes (outs, metrics, plots): DVC versions them, not git."""
    return [
        path
        for spec in dvc_stages(root).values()
        for kind in ("outs", "metrics", "plots")
        for path in _entry_paths(spec.get(kind))
    ]


def _not_provenance(path: str, outputs: list[str]) -> bool:
    """dvc.lock and the outputs are what a run writes; the .gitignore next to an output is
    DVC's own (it appears on a first run) and changes nothing a stage computes."""
    if path == "dvc.lock":
        return True
    for out in outputs:
        out = out.rstrip("/")
        if path == out or path.startswith(f"{out}/"):
            return True
        parent = os.path.dirname(out)
        if path == (f"{parent}/.gitignore" if parent else ".gitignore"):
            return True
    return False


def dirty_files(root: Path = ROOT) -> dict[str, str]:
    """{path: md5 | "deleted"} of every source file that differs from HEAD."""
    outputs = pipeline_outputs(root)
    files: dict[str, str] = {}
    for path in changed_paths(root):
        if _not_provenance(path, outputs):
            continue
        full = root / path
        if full.is_file():
            files[path] = file_md5(full)
        else:  # a nested repository has no one hash: it never matches, as it should
            files[path] = "not a file" if full.exists() else "deleted"
    return dict(sorted(files.items()))


def dirty_files_json(files: dict[str, str]) -> str:
    text = json.dumps(files, sort_keys=True)
    if len(files) > MAX_DIRTY_FILES or len(text) > MAX_TAG_CHARS:
        return json.dumps({"...": "too many"})
    return text


# -- hashes ---------------------------------------------------------------------------------
def file_md5(path: Path) -> str:
    """The hash DVC 3 records for a file in dvc.lock and .dvc files (plain MD5)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stage_params(stage: str, root: Path = ROOT) -> dict[str, dict[str, Any]]:
    """The stage's params as dvc.lock records them: {file: {key: value}}."""
    values: dict[str, dict[str, Any]] = {}
    for entry in dvc_stages(root)[stage].get("params", []):
        files = {"params.yaml": [entry]} if isinstance(entry, str) else entry
        for file, keys in files.items():
            with open(root / file) as fh:
                doc = yaml.safe_load(fh) or {}
            if not keys:  # a file listed without keys: all of it
                values.setdefault(file, {}).update(doc)
            for key in keys or []:
                value: Any = doc
                for part in str(key).split("."):
                    value = value[part]
                values.setdefault(file, {})[str(key)] = value
    return values


def params_md5(stage: str, root: Path = ROOT) -> str:
    text = json.dumps(stage_params(stage, root), sort_keys=True, separators=(",", ":"))
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def output_tag(path: Path, root: Path = ROOT) -> tuple[str, str]:
    """(`dvc.out.<path>`, md5) for an output the stage has written."""
    return f"dvc.out.{path.relative_to(root).as_posix()}", file_md5(path)


# -- the tags -------------------------------------------------------------------------------
DATA_RECORD = "data/snapshot/record.json"  # written by ingest: the snapshot this run reads
DATA_TAG_KEYS = ("source", "md5", "rows", "ingested_at", "source_md5")


def data_tags(root: Path = ROOT) -> dict[str, str]:
    """The snapshot's record as `mlrig.data.<key>` tags; none when there is no record."""
    path = root / DATA_RECORD
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    return {
        f"mlrig.data.{key}": str(record[key])[:MAX_TAG_CHARS]
        for key in DATA_TAG_KEYS
        if record.get(key) is not None
    }


def experiment_tags(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What `dvc exp run` tells the stage: the experiment's name, baseline and git ref."""
    name, baseline = env.get("DVC_EXP_NAME"), env.get("DVC_EXP_BASELINE_REV")
    tags: dict[str, str] = {}
    if name:
        tags["mlrig.exp.name"] = name
    if baseline:
        tags["mlrig.exp.baseline"] = baseline
    if name and baseline:  # DVC's layout for the experiment's commit
        tags["mlrig.exp.ref"] = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
    return tags


def provenance_tags(stage: str, root: Path = ROOT) -> dict[str, str]:
    """Every provenance tag known before the model is logged.

    Hashes are of the files the stage reads and has written so far, the values DVC writes
    to dvc.lock once the stage succeeds. Outputs written later get their tag through
    output_tag once they exist.
    """
    tags = {"mlflow.source.git.commit": git_commit(root), "dvc.stage": stage}
    remote = git_remote(root)
    if remote:
        tags["mlrig.git.remote"] = remote
    dirty = dirty_files(root)
    tags["mlrig.git.dirty"] = "true" if dirty else "false"
    if dirty:
        tags["mlrig.git.dirty_files"] = dirty_files_json(dirty)
    tags.update(experiment_tags())
    for dep in stage_deps(stage, root):
        if (root / dep).is_file():
            tags[f"dvc.dep.{dep}"] = file_md5(root / dep)
    for out in stage_outs(stage, root):
        if (root / out).is_file():
            tags[f"dvc.out.{out}"] = file_md5(root / out)
    tags["mlrig.params.md5"] = params_md5(stage, root)
    tags.update(data_tags(root))
    rerun = repro_of()
    if rerun:
        tags["mlrig.repro_of"] = rerun
    return tags
