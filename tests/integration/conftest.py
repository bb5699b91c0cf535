"""Integration fixtures shared by several modules (the session-wide ones live in ../conftest.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import VENV_BIN, repo_env, sh

PROVENANCE_PROJECT = "provrig"
EXPERIMENTS = ("train.C=20", "train.C=0.05")


def _exp_refs(repo: Path, env: dict[str, str]) -> dict[str, str]:
    out = sh(repo, "git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps", env=env)
    pairs = (line.split(" ", 1) for line in out.splitlines())
    return {ref: sha for ref, sha in pairs if not ref.startswith("refs/exps/exec/")}


def _run_record(repo: Path) -> dict[str, Any]:
    return dict(json.loads((repo / "models/mlflow_run.json").read_text()))


@pytest.fixture(scope="session")
def provenance_repo(
    local_stack: dict, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A generated repo on the session's local stack, with the whole provenance loop done
    once by the real programs: `mlrig init`; a bare git repo as `origin`; `dvc repro` and a
    commit of its outputs (dvc.lock, metrics); two `dvc exp run -S train.C=…` experiments;
    `git push` + `dvc exp push origin -A` + `dvc push`; and for every registered version an
    image built (image.build) and pushed (serving_push.push) to the stack's registry.
    The workspace is left clean at the repro commit (experiments live in refs/exps only).

    Yields:
      repo      Path of the generated repo (origin = the bare repo, DVC remote = the stack's)
      origin    Path of the bare git repo
      env       environment for running git/dvc/mlrig in repo (MLRIG_HOME = the stack's)
      project   the registered model's name ("provrig")
      head      the repro commit (HEAD of main)
      versions  {version (str): {
                   "run_id":  the MLflow run that registered it,
                   "commit":  the commit whose dvc.lock records it (the repro commit, or the
                              experiment's own commit),
                   "exp":     the experiment's name, or None for the plain repro,
                   "exp_ref": refs/exps/…/<name>, or None,
                   "image":   the local image reference built for it,
                   "digest":  sha256:… of the pushed manifest,
                   "ref":     host/repository@sha256:… as pushed,
                 }}
    """
    from mlrig.core import image, serving_push

    home = local_stack["home"]
    root = tmp_path_factory.mktemp("provenance")
    env = repo_env(home)
    sh(
        root,
        str(VENV_BIN / "mlrig"),
        "init",
        PROVENANCE_PROJECT,
        "--stack",
        "local",
        "--no-input",
        env=env,
    )
    repo, origin = root / PROVENANCE_PROJECT, root / "origin.git"
    sh(root, "git", "init", "-q", "--bare", "-b", "main", str(origin), env=env)
    sh(repo, "git", "remote", "add", "origin", str(origin), env=env)

    versions: dict[str, dict[str, Any]] = {}
    sh(repo, "dvc", "repro", env=env)
    sh(repo, "git", "add", "--all", env=env)
    sh(repo, "git", "commit", "-qm", "First pipeline run", env=env)
    head = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    run = _run_record(repo)
    versions[run["version"]] = {
        "run_id": run["run_id"],
        "commit": head,
        "exp": None,
        "exp_ref": None,
    }
    for setting in EXPERIMENTS:
        before = _exp_refs(repo, env)
        sh(repo, "dvc", "exp", "run", "-S", setting, env=env)
        new = {k: v for k, v in _exp_refs(repo, env).items() if k not in before}
        assert len(new) == 1, new
        ((exp_ref, sha),) = new.items()
        run = _run_record(repo)
        versions[run["version"]] = {
            "run_id": run["run_id"],
            "commit": sha,
            "exp": exp_ref.rsplit("/", 1)[1],
            "exp_ref": exp_ref,
        }
    # back to the repro commit, as a user who only tried experiments is
    sh(repo, "git", "checkout", "-q", "--", ".", env=env)
    sh(repo, "dvc", "checkout", "-q", env=env)
    sh(repo, "git", "push", "-q", "origin", "main", env=env)
    sh(repo, "dvc", "exp", "push", "-A", "origin", env=env)
    sh(repo, "dvc", "push", "-q", env=env)
    assert sh(repo, "git", "status", "--porcelain", env=env) == ""

    saved = dict(os.environ)
    os.environ["MLRIG_HOME"] = str(home)
    os.environ.update(local_stack["env"])
    try:
        for version, facts in versions.items():
            uri = f"models:/{PROVENANCE_PROJECT}/{version}"
            built = image.build(uri, repo=repo, stack="local")
            pushed = serving_push.push(built.ref, local_stack["outputs"])
            facts.update(image=built.ref, digest=pushed.digest, ref=pushed.reference)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield {
        "repo": repo,
        "origin": origin,
        "env": env,
        "project": PROVENANCE_PROJECT,
        "head": head,
        "versions": versions,
    }


@pytest.fixture(scope="module")
def oidc_issuer() -> Iterator[Any]:
    """A local OIDC issuer (tests.helpers.LocalIssuer) on loopback for the module."""
    from tests.helpers import LocalIssuer

    issuer = LocalIssuer()
    try:
        yield issuer
    finally:
        issuer.close()


@pytest.fixture(scope="module")
def oidc_stack(tmp_path_factory: pytest.TempPathFactory, oidc_issuer: Any) -> Iterator[Any]:
    """A local stack of its own whose MLflow accepts the local issuer's tokens for
    acme/demo on refs/heads/main as the machine identity `repo-demo` (EDIT on experiment
    `demo` only; experiment `other` exists too). The OIDC file is written after `up`: the
    server re-reads it on change, so the tests also show that no restart is needed."""
    import requests

    from mlrig import tracking_oidc
    from mlrig.core import oidc_rules, secrets
    from tests.helpers import isolated_stack

    with isolated_stack(tmp_path_factory.mktemp("oidc-home"), "oidctest") as (stack, outputs):
        assert outputs.mlflow.auth is not None
        url = outputs.mlflow.tracking_uri
        admin = ("admin", secrets.resolve(outputs.mlflow.auth.password))

        def call(method: str, path: str, **body: Any) -> dict[str, Any]:
            resp = requests.request(method, f"{url}{path}", json=body, auth=admin, timeout=30)
            assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:200]}"
            return resp.json() if resp.content else {}

        call("POST", "/api/2.0/mlflow/users/create", username="repo-demo", password="x" * 24)
        ids = {
            name: call("POST", "/api/2.0/mlflow/experiments/create", name=name)["experiment_id"]
            for name in ("demo", "other")
        }
        call(
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            username="repo-demo",
            resource_type="experiment",
            resource_id=ids["demo"],
            permission="EDIT",
        )
        path = stack.mlflow_dir / oidc_rules.CONFIG_FILE
        config = tracking_oidc.OidcConfig(
            issuer=oidc_issuer.url,
            audience=tracking_oidc.default_audience("oidctest"),
            rules=(tracking_oidc.Rule("acme/demo", "repo-demo", ("refs/heads/main",)),),
            refresh_min_seconds=0.0,  # every unknown key id is looked up (the unit tests
        )  # cover the rate limit with a clock of their own)
        oidc_rules.save(path, config)
        yield {
            "stack": stack,
            "url": url,
            "admin": admin,
            "experiments": ids,
            "audience": config.audience,
            "config_path": path,
            "log": stack.log_file("mlflow"),
        }
