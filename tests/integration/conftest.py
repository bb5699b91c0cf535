"""Integration fixtures shared by several modules (the session-wide ones live in ../conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    AUTHZ_GRANTS,
    AUTHZ_USERS,
    REPO_ROOT,
    VENV_BIN,
    in_place_build,
    repo_env,
    require,
    sh,
    wait_for_http,
)

PROVENANCE_PROJECT = "provrig"
EXPERIMENTS = ("train.C=20", "train.C=0.05")


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """mlrig's sdist and wheel, built once per test worker offline with this environment's
    setuptools and setuptools-scm (--no-isolation): what an index would get."""
    out = tmp_path_factory.mktemp("dist")
    with in_place_build():
        proc = subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO_ROOT)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = out.glob("mlrig-*.tar.gz")
    (wheel,) = out.glob("mlrig-*-py3-none-any.whl")
    return {"sdist": sdist, "wheel": wheel, "output": proc.stdout + proc.stderr}


@pytest.fixture
def template_copy(tmp_path: Path) -> Path:
    """A copy of the packaged template that a test may change (a newer version, edits)."""
    from mlrig.core.bootstrap import init as bootstrap

    copy = tmp_path / "template-src"
    shutil.copytree(
        bootstrap.packaged_template(), copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    return copy


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
    from mlrig.core.image import build as image
    from mlrig.core.image import push as serving_push

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

    from mlrig.core.shared import secrets
    from mlrig.core.stack import oidc_rules
    from mlrig.tracking import oidc as tracking_oidc
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


# -- the authorization suite's servers (tests/integration/test_authz_*.py) --------------------
def _authz_call(session: Any, url: str, method: str, path: str, **kw: Any) -> dict:
    resp = session.request(method, url + path, timeout=60, **kw)
    assert resp.status_code == 200, f"{method} {path}: {resp.status_code} {resp.text[:300]}"
    return resp.json() if resp.content.strip() else {}


def _authz_seed(url: str, admin_password: str, wait: float = 120) -> dict[str, Any]:
    """As admin: the users, experiments a and b (each with a run, param, metric, tag, an
    artifact, a logged model), registered models a and b (version 1, alias `champion`), and
    the grants. Returns the target: url, credentials per principal, and the objects' ids."""
    import requests

    admin = requests.Session()
    admin.auth = ("admin", admin_password)
    wait_for_http(f"{url}/health", timeout=wait, what="the MLflow server")
    creds = {"admin": ("admin", admin_password)}
    for user in AUTHZ_USERS:
        creds[user] = (user, f"{user}-Pa55word-authz")
        _authz_call(
            admin,
            url,
            "POST",
            "/api/2.0/mlflow/users/create",
            json={"username": user, "password": creds[user][1]},
        )
    objects: dict[str, dict[str, str]] = {}
    for k in ("a", "b"):
        exp = _authz_call(
            admin,
            url,
            "POST",
            "/api/2.0/mlflow/experiments/create",
            json={"name": f"authz-exp-{k}"},
        )["experiment_id"]
        run = _authz_call(
            admin,
            url,
            "POST",
            "/api/2.0/mlflow/runs/create",
            json={"experiment_id": exp, "run_name": f"authz-run-{k}"},
        )["run"]["info"]
        run_id = run["run_id"]
        _authz_call(
            admin,
            url,
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            json={
                "run_id": run_id,
                "params": [{"key": "p", "value": f"authz-param-{k}"}],
                "metrics": [{"key": "m", "value": 1.0, "timestamp": 1, "step": 0}],
                "tags": [{"key": "t", "value": f"authz-tag-{k}"}],
            },
        )
        base = f"/api/2.0/mlflow-artifacts/artifacts/{exp}/{run_id}/artifacts"
        for name, data in (("model/MLmodel", b"flavors: {}\n"), ("notes.txt", b"authz\n")):
            _authz_call(admin, url, "PUT", f"{base}/{name}", data=data)
        model = _authz_call(
            admin,
            url,
            "POST",
            "/api/2.0/mlflow/logged-models",
            json={"experiment_id": exp, "name": f"authz-lm-{k}"},
        )["model"]["info"]
        name = f"authz-model-{k}"
        _authz_call(
            admin, url, "POST", "/api/2.0/mlflow/registered-models/create", json={"name": name}
        )
        version = _authz_call(
            admin,
            url,
            "POST",
            "/api/2.0/mlflow/model-versions/create",
            json={
                "name": name,
                "source": f"{run['artifact_uri']}/model",
                "run_id": run_id,
            },
        )["model_version"]["version"]
        _authz_call(
            admin,
            url,
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            json={"name": name, "alias": "champion", "version": version},
        )
        objects[k] = {
            "exp": exp,
            "run": run_id,
            "model": name,
            "version": version,
            "logged_model": model["model_id"],
            "exp_name": f"authz-exp-{k}",
        }
    for user, kind, k, permission in AUTHZ_GRANTS:
        resource = objects[k]["exp" if kind == "experiment" else "model"]
        _authz_call(
            admin,
            url,
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            json={
                "username": user,
                "resource_type": kind,
                "resource_id": resource,
                "permission": permission,
            },
        )
    return {"url": url, "creds": creds, "objects": objects}


@pytest.fixture(scope="module")
def authz_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The local stack's MLflow server as `mlrig stack up` runs it (tracking_server.local_plan:
    same argv, env and auth hook), with default_permission NO_PERMISSIONS set explicitly in
    its auth config, seeded by _authz_seed. Yields the target (see _authz_seed)."""
    import secrets

    from mlrig.adapters import processes
    from mlrig.core.stack.local.stack import free_port
    from mlrig.tracking import config as ts

    root = tmp_path_factory.mktemp("authz-local")
    (root / "artifacts").mkdir()
    ini = root / "auth.ini"
    ini.write_text(
        ts.auth_ini(f"sqlite:///{root / 'auth.db'}", default_permission="NO_PERMISSIONS")
    )
    ini.chmod(0o600)
    port, admin_password = free_port(), secrets.token_urlsafe(18)
    plan = ts.local_plan(
        data_dir=root,
        port=port,
        admin_password=admin_password,
        flask_secret=secrets.token_urlsafe(32),
        auth_config_path=ini,
    )
    pid_file = root / "mlflow.pid"
    processes.start(plan.argv, pid_file=pid_file, log_file=root / "mlflow.log", env=plan.env)
    try:
        target = _authz_seed(f"http://127.0.0.1:{port}", admin_password)
        yield {**target, "kind": "local", "log": root / "mlflow.log", "artifacts": root}
    finally:
        processes.stop(pid_file)


@pytest.fixture(scope="module")
def authz_container(prerequisites_for_rehearsal: None) -> Iterator[dict[str, Any]]:
    """The AWS tracking server's image and task contract as `mlrig stack rehearse` runs it
    (PostgreSQL, moto's S3), whose default_permission is NO_PERMISSIONS, seeded by
    _authz_seed. Yields the target (see _authz_seed)."""
    from mlrig.core.stack._rehearse.env import Services
    from mlrig.core.stack._rehearse.model import Request
    from mlrig.core.stack.local.stack import free_port
    from mlrig.tracking import container as ts_container

    with Services(Request(port=free_port()), lambda _m: None) as services:
        assert (
            "default_permission = NO_PERMISSIONS"
            in services.config().contract_env[ts_container.ENV_AUTH_INI]
        )  # the container's own default: the suite tests what AWS runs
        container = services.run_container()
        target = _authz_seed(services.url, services.admin_password, wait=300)
        yield {**target, "kind": "container", "container": container}


@pytest.fixture(scope="module")
def prerequisites_for_rehearsal(docker_engine: object, base_image: str) -> None:
    """What a rehearsal needs on this machine: PostgreSQL's server binaries and openssl."""
    import shutil

    from mlrig.adapters import postgres
    from mlrig.errors import DependencyMissing

    try:
        postgres.bin_dir()
        found = True
    except DependencyMissing:
        found = False
    require(found, "PostgreSQL server binaries (apt-get install postgresql)")
    require(shutil.which("openssl") is not None, "openssl")


# -- model images pushed through the registry API (tests/integration/test_push_direct.py) -----
DIRECT_MODEL = "bc-direct"


@pytest.fixture(scope="module")
def image_env(local_stack: dict, base_image: str) -> Iterator[dict]:
    """The session stack's client settings in os.environ for the module (MLRIG_HOME, MLflow
    and registry credentials, a short push backoff); yields the local_stack dict. The tags
    the module's pushes left on the engine (named for the stack's registry) are dropped at
    the end; the images stay as build cache."""
    saved = dict(os.environ)
    os.environ["MLRIG_HOME"] = str(local_stack["home"])
    os.environ.update(local_stack["env"])
    os.environ["MLRIG_PUSH_BACKOFF"] = "0.1"
    try:
        yield local_stack
    finally:
        os.environ.clear()
        os.environ.update(saved)
        from mlrig.adapters import docker as docker_adapter

        api = docker_adapter.client().api
        for img in api.images():
            for tag in img.get("RepoTags") or []:
                if tag.startswith(f"{local_stack['outputs'].registry.host}/"):
                    api.remove_image(tag, noprune=True)


@pytest.fixture(scope="module")
def direct_versions(image_env: dict) -> list[dict[str, Any]]:
    """Three versions of the registered model `bc-direct` (same dependencies), each built
    with image.build: [{"version", "expected" (answers to the first three rows), "built"}]."""
    from tests.helpers import built_versions

    return built_versions(DIRECT_MODEL)


# -- endpoints (tests/integration/test_deploy.py, test_deploy_faults.py) -----------------------
DEPLOY_MODEL = (
    "bc-deploy"  # its own model: the registry keeps bc-direct's tags for test_push_direct
)


@pytest.fixture(scope="module")
def deploy_versions(image_env: dict) -> Iterator[dict[str, Any]]:
    """Versions 1 and 2 of bc-deploy pushed, 3 built and never pushed, and the stack's name;
    every endpoint the module left is deleted after (its containers, route and state)."""
    from mlrig.core.deploy import endpoints
    from mlrig.core.deploy.state import Store
    from mlrig.core.image import push as serving_push
    from mlrig.core.stack.local.state import Layout
    from tests.helpers import built_versions

    require(os.path.exists("/usr/sbin/nginx"), "Debian's nginx")
    found = built_versions(DEPLOY_MODEL)
    out = image_env["outputs"]
    for v in found[:2]:
        serving_push.push(v["built"].ref, out)
    yield {"stack": out.name, "model": DEPLOY_MODEL, "v1": found[0], "v2": found[1], "v3": found[2]}
    for name in Store(Layout(out.name).root).names():
        endpoints.delete(name, stack=out.name)
