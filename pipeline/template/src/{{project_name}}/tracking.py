"""Wires training to the stack's MLflow and records provenance (git commit, DVC hashes).

MLFLOW_TRACKING_URI from the environment wins (CI, `eval "$(mlrig stack env)"`); otherwise
the stack named in .copier-answers.yml (or $MLRIG_STACK) is resolved through `mlrig.api`,
mlrig's public API, from the mlrig installed in the same environment as this repository's
tools. Use nothing else from mlrig: the rest is internal and may change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import yaml

from .data import ROOT


def configure_mlflow() -> str:
    """Make sure MLflow's client environment points at the stack; return the tracking URI."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        try:
            from mlrig.api import MlrigError, tracking_env
        except ImportError:
            raise SystemExit("MLFLOW_TRACKING_URI is not set and mlrig is not installed: "
                             "install mlrig or export the MLflow settings") from None
        try:
            os.environ.update(tracking_env(ROOT))
        except MlrigError as exc:
            raise SystemExit(exc.one_line()) from None
    return os.environ["MLFLOW_TRACKING_URI"]


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def file_md5(path: Path) -> str:
    """The hash DVC 3 records for a file in dvc.lock and .dvc files (plain MD5)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stage_deps(stage: str) -> list[str]:
    with open(ROOT / "dvc.yaml") as fh:
        return [str(d) for d in yaml.safe_load(fh)["stages"][stage].get("deps", [])]


def provenance_tags(stage: str) -> dict[str, str]:
    """`mlflow.source.git.commit` plus one `dvc.dep.<path>` tag per dependency of stage.

    The hashes are computed from the files the stage is reading right now, which are the
    values DVC writes to dvc.lock once the stage succeeds.
    """
    tags = {"mlflow.source.git.commit": git_commit(), "dvc.stage": stage}
    for dep in stage_deps(stage):
        path = ROOT / dep
        if path.is_file():
            tags[f"dvc.dep.{dep}"] = file_md5(path)
    return tags
