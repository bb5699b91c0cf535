"""Plain helpers shared by test modules; fixtures live in the conftest.py files.

Test modules import from here only, never from another test module or a conftest.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlrig.contract import BasicAuth, DvcRemote, Mlflow, Registry, SecretRef, StackOutputs
from mlrig.wait import wait_until

if TYPE_CHECKING:
    from mlrig.core.stack.local.stack import LocalStack
    from mlrig.core.stack.plan import Plan, PlannedResource

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DOMAIN = "mlflow.example.com"  # the production profile's domain in the infra tests
REPO = "acme/churn-model"  # the GitHub repository the infra tests' CI role trusts


def require(ok: bool, what: str) -> None:
    """Skip when a real dependency is missing locally; fail in CI, where it must exist."""
    if ok:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required in CI (scripts/setup.sh installs it)")
    pytest.skip(f"{what} not available")


# -- waiting for real services ------------------------------------------------------------------
def wait_for_http(
    url: str,
    *,
    status: int | None = 200,
    timeout: float,
    what: str | None = None,
    interval: float = 0.2,
    give_up: Callable[[], str | None] | None = None,
) -> None:
    """Poll `url` until it answers `status` (any status when None); refused connections are
    "not yet". Raises `WaitTimeout` or `Abandoned` (from `give_up`) like `wait_until`."""
    import requests

    def answered() -> bool:
        code = requests.get(url, timeout=2).status_code
        return status is None or code == status

    wait_until(
        answered,
        timeout=timeout,
        what=what or f"{url} answering {status or 'at all'}",
        interval=interval,
        give_up=give_up,
    )


def grant_default_experiment(url: str, admin: tuple[str, str], user: str) -> None:
    """READ on MLflow's Default experiment (id 0) for a new user: the stack's
    default_permission is NO_PERMISSIONS, so without a grant every read of it is a 403."""
    import requests

    resp = requests.post(
        f"{url}/api/3.0/mlflow/users/permissions/grant",
        json={
            "username": user,
            "resource_type": "experiment",
            "resource_id": "0",
            "permission": "READ",
        },
        auth=admin,
        timeout=30,
    )
    assert resp.status_code == 200, resp.text[:200]


def exited(proc: subprocess.Popen, what: str) -> str | None:
    """A `give_up` answer for `wait_until`: why waiting on `proc` is hopeless, if it is."""
    code = proc.poll()
    return None if code is None else f"{what} exited with code {code}"


@contextmanager
def isolated_stack(home: Path, name: str) -> Iterator[tuple[LocalStack, StackOutputs]]:
    """A real local stack under its own MLRIG_HOME (for wider-scoped fixtures, which cannot
    use monkeypatch); stopped, with its processes checked gone, and the home restored."""
    from mlrig.core.stack.local.stack import LocalStack

    require(shutil.which("docker-registry") is not None, "the docker-registry binary")
    old = os.environ.get("MLRIG_HOME")
    os.environ["MLRIG_HOME"] = str(home)
    stack = LocalStack(name)
    try:
        yield stack, stack.up()
    finally:
        stuck = stack.down()
        if old is None:
            os.environ.pop("MLRIG_HOME", None)
        else:
            os.environ["MLRIG_HOME"] = old
        assert stuck == [], stuck


@contextmanager
def registry_process(users: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """A registry of a test's own (empty storage, its own htpasswd); yields host, process."""
    from mlrig.adapters import registry
    from mlrig.core.stack.local.stack import free_port

    require(shutil.which("docker-registry") is not None, "the docker-registry binary")
    with tempfile.TemporaryDirectory(prefix="mlrig-reg-") as tmp:
        root, port = Path(tmp), free_port()
        (root / "htpasswd").write_text(
            "".join(registry.htpasswd_line(u, p) for u, p in users.items())
        )
        (root / "config.yml").write_text(
            registry.config_yaml(
                port=port,
                storage_dir=root / "data",
                htpasswd=root / "htpasswd",
                http_secret="test-secret",
            )
        )
        proc = subprocess.Popen(
            [registry.binary(), "serve", str(root / "config.yml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        host = f"127.0.0.1:{port}"
        try:
            wait_for_http(
                f"http://{host}/v2/",
                status=401,  # htpasswd is on: an anonymous ping is refused once it serves
                timeout=30,
                what=f"the test registry on {host}",
                interval=0.1,
                give_up=lambda: exited(proc, "the test registry"),
            )
            yield host, proc
        finally:
            proc.terminate()
            proc.wait(10)


# -- stack outputs as the consumers see them -----------------------------------------------------
def sample(name: str = "dev") -> StackOutputs:
    """A local stack's outputs (nothing behind them)."""
    return StackOutputs(
        name=name,
        kind="local",
        dvc_remote=DvcRemote(url="/tmp/remote"),
        mlflow=Mlflow(
            tracking_uri="http://127.0.0.1:5000",
            auth=BasicAuth(username="admin", password=SecretRef(source="file", ref="/x/secret")),
        ),
        registry=Registry(kind="oci", url="127.0.0.1:5001/models"),
    )


def env_secret_outputs(name: str = "dev") -> StackOutputs:
    """A local stack's outputs whose admin password is the env variable NO_SUCH_PW (nothing
    behind them): never set in the unit tests, so reading the admin password fails loudly."""
    return StackOutputs(
        name=name,
        kind="local",
        dvc_remote=DvcRemote(url="/srv/dvc"),
        mlflow=Mlflow(
            tracking_uri="http://127.0.0.1:5000",
            auth=BasicAuth(username="admin", password=SecretRef(source="env", ref="NO_SUCH_PW")),
        ),
        registry=Registry(kind="oci", url="127.0.0.1:5001/models"),
    )


def aws_outputs(name: str = "prod", endpoint: str | None = "http://127.0.0.1:9") -> StackOutputs:
    """An AWS stack's outputs (nothing behind them)."""
    return StackOutputs(
        name=name,
        kind="aws",
        region="eu-west-1",
        dvc_remote=DvcRemote(url="s3://bucket/dvc", endpoint_url=endpoint, region="eu-west-1"),
        mlflow=Mlflow(
            tracking_uri="https://mlflow.example.com",
            auth=BasicAuth(
                username="admin",
                password=SecretRef(
                    source="aws-secretsmanager",
                    ref="arn:aws:secretsmanager:x:1:secret:m",
                    key="password",
                ),
            ),
        ),
        registry=Registry(kind="ecr", url="123456789012.dkr.ecr.eu-west-1.amazonaws.com/m"),
        ci_role_arn="arn:aws:iam::123456789012:role/ci",
    )


def aws_stack_outputs(name: str) -> StackOutputs:
    """What `stack up --aws` records for stack `name`, from a plausible set of Pulumi outputs."""
    from mlrig.core.stack.aws import stack as aws_stack

    return aws_stack.to_stack_outputs(
        name,
        {
            "region": "us-east-1",
            "dvc_remote_url": "s3://b/dvc",
            "dvc_remote_region": "us-east-1",
            "mlflow_tracking_uri": "https://x.execute-api.us-east-1.amazonaws.com",
            "mlflow_admin_secret_arn": "arn:aws:secretsmanager:us-east-1:1:secret:a",
            "registry_url": f"123456789012.dkr.ecr.us-east-1.amazonaws.com/mlrig-{name}/models",
        },
    )


# -- generated repositories, driven with the real programs ---------------------------------------
def md5(path: Path) -> str:
    return md5_of(path.read_bytes())


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def params_md5(lock_params: dict[str, Any]) -> str:
    """`mlrig.params.md5` of a stage whose dvc.lock entry records these params."""
    return md5_of(json.dumps(lock_params, sort_keys=True, separators=(",", ":")).encode())


def sh(repo: Path, *args: str, env: dict[str, str]) -> str:
    """Run a real program in repo; fail the test with its output if it fails."""
    proc = subprocess.run(
        list(args), cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        pytest.fail(
            f"`{' '.join(args)}` exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc.stdout + proc.stderr


def mlrig_on(
    repo: Path, env: dict[str, str], *args: str, timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    """`mlrig ARGS --repo REPO` as a user runs it: a process of its own, output captured."""
    return subprocess.run(
        [str(VENV_BIN / "mlrig"), *args, "--repo", str(repo)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def git_as_tester(repo: Path, *args: str) -> str:
    """git in repo as a test author (no env needed), its output stripped; fails on an error."""
    who = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    return subprocess.run(
        ["git", *who, *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit_files(repo: Path, files: dict[str, str], message: str) -> str:
    """Write files ({path: text}) into repo and commit everything; the new HEAD."""
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git_as_tester(repo, "add", "--all")
    git_as_tester(repo, "commit", "-qm", message)
    return git_as_tester(repo, "rev-parse", "HEAD")


def repo_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """What a user's shell has: the venv on PATH, no MLflow exports (tracking.py must find
    the stack by itself), DVC analytics off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "MLRIG_"))}
    env.update(
        MLRIG_HOME=str(home),
        DVC_NO_ANALYTICS="1",
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        GIT_AUTHOR_NAME="Test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="Test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    env.update(extra or {})
    return env


def retrain_repo(
    root: Path, env: dict[str, str], project: str, source: Path, message: str
) -> tuple[Path, Path]:
    """`mlrig init` of project in root on the local stack, its ingest reading source (a copy
    of the repo's breast-cancer CSV, outside it: new rows are appended there), committed with
    message and pushed to a bare origin next to it; (repo, origin)."""
    import yaml

    sh(root, str(VENV_BIN / "mlrig"), "init", project, "--stack", "local", "--no-input", env=env)
    repo, origin = root / project, root / "origin.git"
    source.write_bytes((repo / "data/raw/breast_cancer.csv").read_bytes())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(
        text.replace(f"source: {params['ingest']['source']}", f"source: {source}", 1)
    )
    sh(repo, "git", "commit", "-qam", message, env=env)
    sh(root, "git", "init", "-q", "--bare", "-b", "main", str(origin), env=env)
    sh(repo, "git", "remote", "add", "origin", str(origin), env=env)
    sh(repo, "git", "push", "-q", "origin", "main", env=env)
    return repo, origin


def append_rows(source: Path, count: int, shift: int) -> None:
    """New rows in a breast-cancer CSV: its last `count` with fresh ids and slightly other
    measurements (each scaled by 1 + shift/1000)."""
    import csv

    with source.open() as fh:
        rows = list(csv.DictReader(fh))
    fields = list(rows[0])
    next_id = max(int(r["id"]) for r in rows) + 1
    new = []
    for i, row in enumerate(rows[-count:]):
        row = {**row, "id": str(next_id + i)}
        for key in fields:
            if key not in ("id", "target"):
                row[key] = repr(float(row[key]) * (1 + shift / 1000))
        new.append(row)
    with source.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=fields, lineterminator="\n").writerows(new)


@contextmanager
def environ_with(extra: dict[str, str]) -> Iterator[None]:
    """os.environ with extra set, restored whole afterwards (for wider-scoped fixtures, which
    cannot use monkeypatch; MlflowClient reads the admin login from the environment)."""
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def applied_passwords(output: str) -> dict[str, str]:
    """The passwords `mlrig access apply` printed for the users it created: {user: password}."""
    found = {}
    for line in output.splitlines():
        if line.startswith("password for "):
            user = line.split()[2]
            found[user] = line.rsplit(": ", 1)[1].strip()
    return found


def dvc_config(path: Path) -> dict:
    """DVC's config files, read with the library DVC itself writes them with."""
    from configobj import ConfigObj

    return ConfigObj(str(path)).dict()


def lock_deps(repo: Path, stage: str) -> dict[str, str]:
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {f"dvc.dep.{d['path']}": d["md5"] for d in lock["stages"][stage]["deps"]}


# -- a partitioned snapshot (issue 32's layout), made with the real git and DVC ------------------
SNAPSHOTS = "data/snapshots"
PARTITIONS = {  # name -> rows, in the order ingest wrote them (a minute's -2 after its first)
    "2026-12-07T0500.parquet": [(1, 0.1, "a", 0), (2, 0.2, "b", 1)],
    "2026-12-07T0500-2.parquet": [(3, 0.3, "a", 1), (4, 0.4, "b", 0)],
    "2026-12-08T0500.parquet": [(5, 0.5, "c", 1)],
}
PARTITIONED_DVC_YAML = """stages:
  ingest:
    cmd: mkdir -p data/snapshots && cp incoming/*.parquet data/snapshots/
    deps: [incoming]
    outs: [data/snapshots]
  train:
    cmd: cat data/snapshots/*.parquet | md5sum > models/model.pkl
    deps: [data/snapshots]
    outs: [models/model.pkl]
"""


@dataclasses.dataclass(frozen=True)
class PartitionedRepo:
    path: Path  # git + DVC workspace, committed
    remote: Path  # the local-directory DVC remote everything was pushed to
    sha: str
    snapshots_md5: str  # dvc.lock's `.dir` md5 of data/snapshots (what a run's dvc.dep records)
    partitions: list[dict[str, Any]]  # [{"name", "md5", "rows"}] as mlrig/partitions.json
    files: dict[str, str]  # {path: md5} of the train stage's deps and outs (dvc.lock)

    def object(self, md5: str) -> Path:
        return self.remote / "files" / "md5" / md5[:2] / md5[2:]


def partition_frame(rows: list[tuple[int, float, str, int]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=["id", "x", "cat", "target"])


def partitioned_repo(root: Path) -> PartitionedRepo:
    """A git repo whose ingest stage's directory out data/snapshots/ holds three Parquet
    partitions (copied from the git-tracked incoming/), and a train stage reading it: dvc.lock
    records its `.dir` md5. Everything pushed to root/remote."""
    import yaml

    repo, remote = root / "repo", root / "remote"
    repo.mkdir(parents=True)
    git_as_tester(repo, "init", "-q", "-b", "main")
    (repo / "incoming").mkdir(parents=True)
    for name, rows in PARTITIONS.items():
        partition_frame(rows).to_parquet(repo / "incoming" / name, index=False)
    (repo / "models").mkdir()
    (repo / "dvc.yaml").write_text(PARTITIONED_DVC_YAML)
    script = (
        "import sys, json; from dvc.cli import main\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    if main(args): sys.exit(f'dvc {args} failed')"
    )
    commands = [
        ["init", "-q"],
        ["remote", "add", "-d", "storage", str(remote)],
        ["repro", "-q"],
        ["push", "-q"],
    ]
    sh(repo, str(VENV_BIN / "python"), "-c", script, json.dumps(commands), env=repo_env(root))
    git_as_tester(repo, "add", "--all")
    git_as_tester(repo, "commit", "-qm", "partitioned snapshot")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train"]
    files = {d["path"]: d["md5"] for d in [*lock["deps"], *lock["outs"]]}
    partitions = [
        {"name": name, "md5": md5(repo / SNAPSHOTS / name), "rows": len(PARTITIONS[name])}
        for name in PARTITIONS
    ]
    return PartitionedRepo(
        repo,
        remote,
        git_as_tester(repo, "rev-parse", "HEAD"),
        files[SNAPSHOTS],
        partitions,
        files,
    )


PIPELINE_STAGES = ("ingest", "validate", "preprocess", "train", "evaluate")


def ran_stages(output: str) -> set[str]:
    return {s for s in PIPELINE_STAGES if f"Running stage '{s}'" in output}


def dvc_changes(repo: Path, env: dict[str, str]) -> dict[str, Any]:
    """`dvc status --json` without ingest's "always changed" (it runs on every repro): empty
    when the workspace matches dvc.lock."""
    status = json.loads(sh(repo, "dvc", "status", "--json", env=env))
    return {k: v for k, v in status.items() if v != ["always changed"]}


def mlflow_client(stack_env: dict) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack_env["env"]["MLFLOW_TRACKING_URI"])


def provenance_of(repo: Path, dirty: dict[str, str] | None = None) -> dict[str, Any]:
    """What a repro just recorded: the MLflow run, HEAD, the train stage's dvc.lock entry
    (dep and out hashes, params hash) and the files' own hashes; `dirty` is what the
    workspace held besides HEAD when the stage ran ({path: md5 | "deleted"})."""
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train"]
    return {
        "run": json.loads((repo / "models/mlflow_run.json").read_text()),
        "head": sh(repo, "git", "rev-parse", "HEAD", env=os.environ.copy()).strip(),
        "deps": lock_deps(repo, "train"),
        "outs": {f"dvc.out.{o['path']}": o["md5"] for o in lock["outs"]},
        "files": {f"dvc.out.{o['path']}": md5(repo / o["path"]) for o in lock["outs"]},
        "params_md5": params_md5(lock["params"]),
        "dirty": dirty or {},
        "data": json.loads((repo / "data/snapshot/record.json").read_text()),
    }


def prefixed(tags: dict[str, str], prefix: str) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k.startswith(prefix)}


def assert_provenance(client: Any, recorded: dict[str, Any]) -> None:
    """The run of a plain `dvc repro` names its commit, and the hashes its dvc.lock holds."""
    tags = client.get_run(recorded["run"]["run_id"]).data.tags
    assert tags["mlflow.source.git.commit"] == recorded["head"]
    assert tags["dvc.stage"] == "train"
    dep_tags = prefixed(tags, "dvc.dep.")
    assert dep_tags == recorded["deps"]
    # train.csv, the snapshot's record.json, features.py, train.py, tracking.py
    assert len(dep_tags) == 5
    out_tags = prefixed(tags, "dvc.out.")
    assert set(out_tags) == {"dvc.out.models/model.pkl", "dvc.out.models/mlflow_run.json"}
    assert out_tags == recorded["outs"] == recorded["files"]
    assert tags["mlrig.params.md5"] == recorded["params_md5"]
    assert prefixed(tags, "mlrig.exp.") == {}  # not an experiment
    data = recorded["data"]  # the snapshot it trained on, as ingest recorded it
    assert prefixed(tags, "mlrig.data.") == {f"mlrig.data.{k}": str(v) for k, v in data.items()}
    assert "mlrig.repro_of" not in tags
    if recorded["dirty"]:
        assert tags["mlrig.git.dirty"] == "true"
        assert json.loads(tags["mlrig.git.dirty_files"]) == recorded["dirty"]
    else:  # dvc.lock, the outputs and DVC's .gitignore files appear on a run: not dirt
        assert tags["mlrig.git.dirty"] == "false" and "mlrig.git.dirty_files" not in tags


# -- models -------------------------------------------------------------------------------------
def breast_cancer_pipeline(c: float = 1.0) -> tuple[Any, Any]:
    """scikit-learn's bundled breast-cancer data (as a DataFrame) and a scaled logistic
    regression fitted on it: (model, features)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500)).fit(x, y)
    return model, x


class ZerosModel:
    """A stand-in model for the image's server: one prediction (0) per row."""

    def predict(self, x: Any) -> Any:
        import numpy as np

        return np.zeros(len(x), dtype=int)


def serving_model_dir(path: Path, columns: list[str] | None) -> Path:
    """path made a model directory the image's server loads: a pickled ZerosModel and the
    serving spec, its input schema these double columns (none when None)."""
    import cloudpickle

    (path / "model.pkl").write_bytes(cloudpickle.dumps(ZerosModel()))
    spec = {
        "loader": "sklearn",
        "model_file": "model.pkl",
        "serialization_format": "cloudpickle",
        "mlflow_version": "3.0.0",
        "input_columns": [{"name": c, "type": "double"} for c in columns] if columns else None,
    }
    (path / "mlrig-serving.json").write_text(json.dumps(spec))
    return path


# -- the AWS program under Pulumi mocks ----------------------------------------------------------
@cache
def register_model(name: str, c: float, pins: bool = True) -> tuple[str, list[int]]:
    """Train, log (pinned requirements + input example) and register a breast-cancer model
    in the current MLflow; (its version, its answers to the first three rows)."""
    import cloudpickle
    import mlflow
    import numpy
    import pandas
    import scipy
    import sklearn

    model, x = breast_cancer_pipeline(c)
    reqs = (
        [
            f"{m.__name__ if m is not sklearn else 'scikit-learn'}=={m.__version__}"
            for m in (sklearn, numpy, pandas, scipy, cloudpickle)
        ]
        if pins
        else ["scikit-learn", "pandas"]
    )
    mlflow.set_experiment("image-tests")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            pip_requirements=reqs,
            input_example=x.head(3),
            registered_model_name=name,
        )
    return str(info.registered_model_version), model.predict(x.head(3)).tolist()


def _misbehaving(kind: str) -> Any:
    """A model object the image's server loads by value (a class defined in a function is
    pickled with its code): 'fails' answers a row of zeros (what `image build`'s start check
    sends a model with a signature and no example, so it is built) and fails every other
    request (the server answers 500); 'slow' sleeps while it is unpickled (the container is
    long unhealthy, so the build's start check refuses it: build it without that check)."""
    import time

    class FailsEveryRequest:
        def predict(self, x: Any) -> Any:
            import numpy

            if not numpy.asarray(x).any():
                return [0] * len(x)
            return {"not", "json"}  # the server cannot serialise a set: a 500

    class SlowToLoad:
        def __init__(self) -> None:
            self.load_seconds = 600  # state, so unpickling calls __setstate__

        def __setstate__(self, state: dict[str, Any]) -> None:
            time.sleep(state["load_seconds"])
            self.__dict__.update(state)

        def predict(self, x: Any) -> Any:
            return [0] * len(x)

    return {"fails": FailsEveryRequest, "slow": SlowToLoad}[kind]()


@cache
def register_misbehaving_model(name: str, kind: str) -> str:
    """A registered version of `_misbehaving(kind)` with register_model's input schema and
    pins (the same serving base); its version."""
    import cloudpickle
    import mlflow
    import numpy
    import pandas
    import scipy
    import sklearn
    from mlflow.models import infer_signature

    good, x = breast_cancer_pipeline()
    reqs = [
        f"{m.__name__ if m is not sklearn else 'scikit-learn'}=={m.__version__}"
        for m in (sklearn, numpy, pandas, scipy, cloudpickle)
    ]
    mlflow.set_experiment("image-tests")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            _misbehaving(kind),
            name="model",
            pip_requirements=reqs,
            signature=infer_signature(x.head(3), good.predict(x.head(3))),
            serialization_format="cloudpickle",
            registered_model_name=name,
        )
    return str(info.registered_model_version)


def assembled_variant(model_of: str, ref: str, labels: dict[str, str], root: Path) -> str:
    """Another image on the serving base of model_of (an image mlrig built): a one-file
    model and these labels, assembled and loaded as ref like a build does; its image ID."""
    from mlrig.core.image import build as image
    from mlrig.core.oci import cache as image_cache

    cached = image_cache.lookup(model_of)
    assert cached is not None, f"{model_of} is not in mlrig's image cache"
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "model" / "MLmodel").write_text(f"flavors: {{}}\n# {ref}\n")
    return image.build_model_image(root, cached.base_id, ref=ref, labels=labels)


def _plan(profile: str, domain: str | None, overrides: tuple[tuple[str, Any], ...]) -> Plan:
    from mlrig.core.stack import plan

    cfg = plan.plan_config(profile, domain=domain, github_repo=REPO)
    return plan.run_program(dataclasses.replace(cfg, **dict(overrides)))


def make_plan(profile: str, domain: str | None = None, **overrides: Any) -> Plan:
    """The resource graph for one configuration, built once per session."""
    return _plan(profile, domain, tuple(sorted(overrides.items())))


def policy_doc(resource: PlannedResource, key: str = "policy") -> dict[str, Any]:
    return json.loads(resource.inputs[key])


def statement(resource: PlannedResource, sid: str, key: str = "policy") -> dict[str, Any]:
    found = [s for s in policy_doc(resource, key)["Statement"] if s.get("Sid") == sid]
    assert len(found) == 1, f"{resource.name} has no single statement {sid}"
    return found[0]


def iam_allows(
    documents: list[dict[str, Any]],
    action: str,
    resource: str,
    context: dict[str, str] | None = None,
) -> bool:
    """Whether identity policies `documents` allow `action` on `resource`, AWS's way for
    what the stack's policies use: an explicit Deny wins, else some Allow statement whose
    Action and Resource match (`*` and `?` wildcards; actions case-insensitive) and whose
    every condition holds for `context` (a key the request does not carry fails it).
    Operators other than StringEquals, StringLike, ArnEquals and ArnLike are refused, so
    a policy that starts using one cannot pass here unread."""
    import fnmatch

    def listed(value: Any) -> list[Any]:
        return list(value) if isinstance(value, list) else [value]

    def matches(patterns: Any, value: str, fold: bool = False) -> bool:
        if fold:
            return any(fnmatch.fnmatchcase(value.lower(), str(p).lower()) for p in listed(patterns))
        return any(fnmatch.fnmatchcase(value, str(p)) for p in listed(patterns))

    def holds(conditions: dict[str, dict[str, Any]]) -> bool:
        ctx = context or {}
        for operator, keys in conditions.items():
            if operator not in {"StringEquals", "StringLike", "ArnEquals", "ArnLike"}:
                raise AssertionError(f"iam_allows does not evaluate {operator}")
            for key, expected in keys.items():
                if key not in ctx:
                    return False
                if operator == "StringEquals" and ctx[key] not in map(str, listed(expected)):
                    return False
                if operator != "StringEquals" and not matches(expected, ctx[key]):
                    return False
        return True

    statements = [st for doc in documents for st in listed(doc["Statement"])]
    assert not [st for st in statements if "NotAction" in st or "NotResource" in st]
    verdicts = [
        st["Effect"]
        for st in statements
        if matches(st["Action"], action, fold=True)
        and matches(st["Resource"], resource)
        and holds(st.get("Condition", {}))
    ]
    return "Allow" in verdicts and "Deny" not in verdicts


def parliament_findings(document: str) -> list[str]:
    """What parliament (the pure-Python IAM policy linter, community auditors on) finds in
    a policy document, as "ISSUE: detail". parliament 1.6.4 reads its data files through
    pkg_resources, which setuptools >= 81 no longer ships: the same lookup through
    importlib.resources when it is missing."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import importlib.resources
        import types

        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = (  # type: ignore[attr-defined]
            lambda package, name: str(importlib.resources.files(package) / name)
        )
        sys.modules["pkg_resources"] = shim
    parliament = pytest.importorskip("parliament")
    linted = parliament.analyze_policy_string(document, include_community_auditors=True)
    return [f"{f.issue}: {f.detail}" for f in linted.findings]


def load_serving_module(name: str) -> Any:
    """docker/serving/mlrig_serve, the image's server package, loaded under `name`: run
    in-process by the unit tests (it is data shipped into the image, not an mlrig module).
    Each name is its own copy, so one test module's patches never reach another's."""
    from mlrig.core.image import build as image

    package = image.serving_assets() / image.SERVER_PACKAGE
    spec = importlib.util.spec_from_file_location(
        name, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its modules import each other relative to it
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in docker/
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes
    return module


class LocalIssuer:
    """An OIDC issuer on loopback: RSA signing keys made here, its discovery document and key
    set served by a small HTTP thread, and tokens shaped like GitHub Actions' (claims
    `repository`, `ref`, ...). `rotate()` publishes a new key and signs with it from then on;
    `fetches` counts key-set downloads, so a test sees when the server asked again."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.keys: dict[str, Any] = {}
        self.kid = ""
        self.fetches = 0
        self.rotate()
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"}
                elif self.path == "/jwks":
                    issuer.fetches += 1
                    body = issuer.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def rotate(self) -> str:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.kid = f"key-{len(self.keys) + 1}"
        self.keys[self.kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self.kid

    def jwks(self) -> dict[str, Any]:
        from jwt.algorithms import RSAAlgorithm

        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def claims(self, audience: str, **overrides: Any) -> dict[str, Any]:
        import time

        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": audience,
            "sub": "repo:acme/demo:ref:refs/heads/main",
            "repository": "acme/demo",
            "ref": "refs/heads/main",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self, audience: str, *, kid: str | None = None, key: Any = None, **overrides: Any
    ) -> str:
        import jwt

        return jwt.encode(
            self.claims(audience, **overrides),
            key or self.keys[kid or self.kid],
            algorithm="RS256",
            headers={"kid": kid or self.kid},
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- the authorization suite (tests/integration/test_authz_*.py) ---------------------------------
AUTHZ_USERS = ("noperm", "reader", "editor")
# reader: READ on experiment and model "a"; editor: EDIT on "b"; noperm: no grant at all.
AUTHZ_GRANTS = (
    ("reader", "experiment", "a", "READ"),
    ("reader", "registered_model", "a", "READ"),
    ("editor", "experiment", "b", "EDIT"),
    ("editor", "registered_model", "b", "EDIT"),
)


def _authz_ok(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 200, f"setup: {resp.status_code} {resp.text[:200]}"
    return resp.json() if resp.content.strip() else {}


def _authz_grant_like(admin: Any, target: dict[str, Any], k: str, kind: str, rid: str) -> None:
    """Grant on a new object what AUTHZ_GRANTS gives on object k of the same kind."""
    for user, granted_kind, side, permission in AUTHZ_GRANTS:
        if side == k and granted_kind == kind:
            _authz_post(
                admin, target, "/api/3.0/mlflow/users/permissions/grant",
                username=user, resource_type=kind, resource_id=rid, permission=permission,
            )  # fmt: skip


def _authz_post(admin: Any, target: dict[str, Any], path: str, **body: Any) -> dict[str, Any]:
    return _authz_ok(admin.post(target["url"] + path, json=body))


def authz_fresh(kind: str, admin: Any, target: dict[str, Any], k: str, n: int) -> dict[str, str]:
    """A new object on an authorization-suite server (tests/integration/test_authz_routes.py),
    made by the admin session and granted as object k is: its placeholders for the probe."""
    o, url = target["objects"][k], target["url"]
    if kind in ("experiment", "deleted_experiment"):
        exp = _authz_post(
            admin, target, "/api/2.0/mlflow/experiments/create", name=f"authz-tmp-{n}"
        )
        _authz_grant_like(admin, target, k, "experiment", exp["experiment_id"])
        if kind == "deleted_experiment":
            _authz_post(admin, target, "/api/2.0/mlflow/experiments/delete", **exp)
        return {"exp": exp["experiment_id"]}
    if kind in ("run", "deleted_run"):
        run = _authz_post(admin, target, "/api/2.0/mlflow/runs/create", experiment_id=o["exp"])
        run_id = run["run"]["info"]["run_id"]
        if kind == "deleted_run":
            _authz_post(admin, target, "/api/2.0/mlflow/runs/delete", run_id=run_id)
        return {"run": run_id}
    if kind in ("model", "version"):
        name = f"{o['model']}-tmp-{n}" if kind == "model" else o["model"]
        if kind == "model":
            _authz_post(admin, target, "/api/2.0/mlflow/registered-models/create", name=name)
            _authz_grant_like(admin, target, k, "registered_model", name)
        source = f"mlflow-artifacts:/{o['exp']}/{o['run']}/artifacts/model"
        mv = _authz_post(
            admin, target, "/api/2.0/mlflow/model-versions/create",
            name=name, source=source, run_id=o["run"],
        )  # fmt: skip
        return {"model": name, "version": mv["model_version"]["version"]}
    if kind == "logged_model":
        lm = _authz_post(admin, target, "/api/2.0/mlflow/logged-models", experiment_id=o["exp"])
        return {"lm": lm["model"]["info"]["model_id"]}
    if kind == "artifact":
        _authz_ok(
            admin.put(
                f"{url}/api/2.0/mlflow-artifacts/artifacts/{o['exp']}/{o['run']}/artifacts/doomed-{n}.txt",
                data=b"x",
            )
        )
        return {}
    if kind == "user":
        _authz_post(admin, target, "/api/2.0/mlflow/users/create", username=f"made-{n}",
              password=f"made-Pa55word-{n}")  # fmt: skip
        return {}
    if kind == "granted_user":
        authz_fresh("user", admin, target, k, n)
        _authz_post(admin, target, "/api/3.0/mlflow/users/permissions/grant", username=f"made-{n}",
              resource_type="experiment", resource_id=o["exp"], permission="READ")  # fmt: skip
        return {}
    key, tags = f"k{n}", {
        "exp_tag": ("/api/2.0/mlflow/experiments/set-experiment-tag", {"experiment_id": o["exp"]}),
        "run_tag": ("/api/2.0/mlflow/runs/set-tag", {"run_id": o["run"]}),
        "model_tag": ("/api/2.0/mlflow/registered-models/set-tag", {"name": o["model"]}),
        "version_tag": ("/api/2.0/mlflow/model-versions/set-tag",
                        {"name": o["model"], "version": o["version"]}),
    }  # fmt: skip
    if kind in tags:
        path, body = tags[kind]
        _authz_post(admin, target, path, key=key, value="v", **body)
    elif kind == "alias":
        _authz_post(admin, target, "/api/2.0/mlflow/registered-models/alias", name=o["model"],
              alias=f"gone{n}", version=o["version"])  # fmt: skip
    elif kind == "lm_tag":
        _authz_ok(admin.patch(f"{url}/api/2.0/mlflow/logged-models/{o['logged_model']}/tags",
                        json={"tags": [{"key": key, "value": "v"}]}))  # fmt: skip
    else:
        raise AssertionError(f"no maker {kind!r}")
    return {}


_ROUTE_TABLE = r"""
import json, os, sys, tempfile
from pathlib import Path
root = Path(tempfile.mkdtemp())
(root / "auth.ini").write_text(sys.argv[1].replace("@DB@", f"sqlite:///{root}/auth.db"))
os.environ.update(MLFLOW_AUTH_CONFIG_PATH=str(root / "auth.ini"), _MLFLOW_SGI_NAME="uvicorn",
    MLFLOW_AUTH_ADMIN_PASSWORD="route-table-only", MLFLOW_FLASK_SERVER_SECRET_KEY="route-table",
    _MLFLOW_SERVER_FILE_STORE=f"sqlite:///{root}/mlflow.db", _MLFLOW_SERVER_SERVE_ARTIFACTS="true",
    _MLFLOW_SERVER_ARTIFACT_DESTINATION=str(root / "artifacts"))
from fastapi.routing import _IncludedRouter
from mlflow.server import app as flask_app
from mlflow.server.auth import create_app
from starlette.routing import Mount
app = create_app()
routes = set()
def walk(items):
    for r in items:
        if isinstance(r, _IncludedRouter):
            walk(r.effective_candidates())
        elif not isinstance(r, Mount):
            path = getattr(r, "path", None)
            for m in getattr(getattr(r, "original_route", r), "methods", None) or ():
                routes.add((m, path))
walk(app.routes)
for rule in flask_app.url_map.iter_rules():
    for m in rule.methods - {"HEAD", "OPTIONS"}:
        routes.add((m, rule.rule))
print(json.dumps(sorted(routes)))
"""


def mlflow_routes() -> list[tuple[str, str]]:
    """(method, rule) of every route the basic-auth MLflow server serves (Flask rules as
    `<name>`, FastAPI's as `{name}`), read in a fresh interpreter from the app itself."""
    from mlrig.tracking import config as ts

    ini = ts.auth_ini("@DB@", default_permission="NO_PERMISSIONS")
    out = subprocess.run(
        [sys.executable, "-c", _ROUTE_TABLE, ini],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    return [tuple(r) for r in json.loads(out.splitlines()[-1])]  # type: ignore[misc]


def rule_pattern(rule: str) -> re.Pattern[str]:
    """A route rule as a regex over concrete paths: `<path:x>`/`{x:path}` span slashes."""
    out, pos = "", 0
    for m in re.finditer(r"<(?:(\w+):)?\w+>|\{\w+(?::(\w+))?\}", rule):
        out += re.escape(rule[pos : m.start()])
        out += ".+" if "path" in (m.group(1), m.group(2)) else "[^/]+"
        pos = m.end()
    return re.compile(out + re.escape(rule[pos:]))


class TagWrites:
    """Stands in for MlflowRest where a push tags a model version: records each write, and
    each delete (as a write of None)."""

    def __init__(self) -> None:
        self.written: list[tuple[str, str, str, str | None]] = []

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.written.append((name, version, key, value))

    def delete_model_version_tag(self, name: str, version: str, key: str) -> None:
        self.written.append((name, version, key, None))


def built_versions(model: str) -> list[dict[str, Any]]:
    """Three versions of registered model `model`, each built with image.build. A module that
    pushes them names its own model: the session stack's registry keeps every tag, and a
    version number another module's model already pushed under the same name is refused."""
    from mlrig.core.image import build as image

    found = []
    for c in (1.0, 0.05, 0.3):
        version, expected = register_model(model, c)
        built = image.build(f"models:/{model}/{version}")
        found.append({"version": version, "expected": expected, "built": built})
    return found


def capture_line(
    rows: list[dict[str, Any]],
    predictions: list[Any],
    *,
    when: Any,
    model: str = "m",
    version: str = "1",
    endpoint: str | None = "ep",
    inference_id: str | None = None,
    run_id: str = "0" * 32,
) -> str:
    """One captured record as the serving image writes it (docs/monitor.md: SageMaker Data
    Capture's schema plus `mlrig`), its request in the dataframe_split format."""
    import uuid

    columns = list(rows[0]) if rows else []
    request = {
        "dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}
    }
    iid = inference_id or str(uuid.uuid4())
    record = {
        "captureData": {
            "endpointInput": {
                "observedContentType": "application/json",
                "mode": "INPUT",
                "data": json.dumps(request),
                "encoding": "JSON",
            },
            "endpointOutput": {
                "observedContentType": "application/json",
                "mode": "OUTPUT",
                "data": json.dumps({"predictions": predictions}),
                "encoding": "JSON",
            },
        },
        "eventMetadata": {
            "eventId": iid,
            "inferenceId": iid,
            "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        },
        "eventVersion": "0",
        "mlrig": {
            "endpoint": endpoint,
            "model": model,
            "version": version,
            "digest": "sha256:" + "a" * 64,
            "run_id": run_id,
        },
    }
    return json.dumps(record) + "\n"


def capture_file(root: Path, when: Any, lines: list[str], writer: str = "w1-000001") -> Path:
    """lines written under root/yyyy/mm/dd/hh/<writer>.jsonl (the hour of `when`)."""
    folder = root / f"{when:%Y}" / f"{when:%m}" / f"{when:%d}" / f"{when:%H}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{writer}.jsonl"
    with path.open("a") as fh:
        fh.write("".join(lines))
    return path


CHROMIUM = Path("/usr/bin/chromium")


def chromium_render(page: Path, scratch: Path, size: str = "1200,3000") -> tuple[str, Any]:
    """(the DOM after layout, the screenshot as an RGB PIL image) of a local HTML file in
    headless Chromium with networking off; a missing Chromium skips, or fails in CI."""
    from PIL import Image

    require(CHROMIUM.exists(), "chromium (the Debian package)")
    flags = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        f"--user-data-dir={scratch / 'profile'}", f"--window-size={size}",
    ]  # fmt: skip
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    shot = scratch / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True
    )
    return dom, Image.open(shot).convert("RGB")


# -- pulumi-aws's own argument types, walked (tests/infra/test_schema.py, test_endpoint.py) -----
_NESTED = re.compile(r"ForwardRef\('(\w+?)Args(?:Dict)?'\)")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _nested(module: Any, annotation: Any) -> type | None:
    match = _NESTED.search(str(annotation))
    return getattr(module, f"{match.group(1)}ArgsDict", None) if match else None


def schema_fields(module: Any, cls: type, typed_dict: bool) -> dict[str, tuple[Any, bool]]:
    """camelCase field -> (annotation, required)."""
    if typed_dict:
        hints = cls.__annotations__
        return {
            _camel(k): (v, typing.get_origin(v) is not typing.NotRequired) for k, v in hints.items()
        }
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    return {
        _camel(k): (p.annotation, p.default is inspect.Parameter.empty)
        for k, p in params.items()
        if not k.startswith("_") and k != "self"
    }


def schema_check(
    module: Any, value: Any, fields: dict[str, tuple[Any, bool]], path: str, problems: list[str]
) -> None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            schema_check(module, item, fields, f"{path}[{i}]", problems)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{path}.{key}: not a field (known: {sorted(fields)})")
            continue
        nested = _nested(module, fields[key][0])
        if nested is not None:
            schema_check(
                module, item, schema_fields(module, nested, True), f"{path}.{key}", problems
            )
    missing = [k for k, (_, required) in fields.items() if required and k not in value]
    if missing:
        problems.append(f"{path}: required {missing} not set")


def schema_problems(resources: Any) -> list[str]:
    """Every input key of these planned resources (nested too) that pulumi-aws does not know,
    and every required one not set."""
    import inspect

    import pulumi_aws as aws

    problems: list[str] = []
    for res in resources:
        _, module_path, name = res.type.split(":")
        module = getattr(aws, module_path.split("/")[0].replace("lambda", "lambda_"))
        # A nested type may own the name `<Name>Args`; the resource's is then `<Name>InitArgs`.
        own = inspect.getmodule(getattr(module, name))
        args_cls = getattr(own, f"{name}InitArgs", None) or getattr(own, f"{name}Args")
        fields = schema_fields(module, args_cls, False)
        schema_check(module, res.inputs, fields, f"{res.type} {res.name}", problems)
    return problems


@cache
def _endpoint_plan(changes: tuple[tuple[str, Any], ...]) -> tuple[Any, tuple[Any, ...]]:
    from mlrig.core.stack import endpoint_plan
    from mlrig.infra.endpoint.config import EndpointConfig

    settings: dict[str, Any] = {
        "base_stack": "plan",
        "endpoint": "churn",
        "region": "us-east-1",
        "image": ENDPOINT_IMAGE,
        "model": "churn",
        "model_version": "7",
        **dict(changes),
    }
    planned, reads = endpoint_plan.run_endpoint_program(EndpointConfig(**settings))
    return planned, tuple(reads)


ENDPOINT_IMAGE = (
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlrig-plan/models@sha256:" + "cd" * 32
)


def endpoint_plan(**changes: Any) -> tuple[Any, tuple[Any, ...]]:
    """The endpoint program's plan (endpoint `churn` on stack `plan`) and the stack
    references it read, built once per configuration."""
    return _endpoint_plan(tuple(sorted(changes.items())))


# -- AWS Lambda -----------------------------------------------------------------------------------
def http_api_event(
    method: str, path: str, body: bytes = b"", *, b64: bool = False, **headers: str
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event for a request to an endpoint's
    route `ANY /endpoints/NAME/{proxy+}` on the $default stage, as API Gateway sends it (the
    body base64-encoded when b64, as it is for a binary content type; headers: content_type=
    and the like)."""
    name = path.split("/")[2] if path.startswith("/endpoints/") else "bc"
    all_headers = {
        "accept": "*/*",
        "content-length": str(len(body)),
        "host": "abc123defg.execute-api.us-east-1.amazonaws.com",
        "user-agent": "python-requests/2.32.3",
        "x-amzn-trace-id": "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700",
        "x-forwarded-for": "203.0.113.7",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return {
        "version": "2.0",
        "routeKey": f"ANY /endpoints/{name}/{{proxy+}}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123defg",
            "authorizer": {"lambda": {"endpoint": name}},
            "domainName": "abc123defg.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123defg",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "python-requests/2.32.3",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": f"ANY /endpoints/{name}/{{proxy+}}",
            "stage": "$default",
            "time": "07/Dec/2026:12:00:00 +0000",
            "timeEpoch": 1796644800000,
        },
        "pathParameters": {"proxy": path.removeprefix(f"/endpoints/{name}/")},
        "body": base64.b64encode(body).decode() if b64 else (body.decode() if body else None),
        "isBase64Encoded": b64,
    }


def deploy_backend(version: str, port: int, weight: int) -> Any:
    """An endpoint's model container as deploy's state records it (unit tests of deploy)."""
    from datetime import UTC, datetime

    from mlrig.core.deploy.state import Backend

    return Backend(
        model="m",
        version=version,
        digest="sha256:" + "a" * 64,
        image="127.0.0.1:5000/models@sha256:" + "a" * 64,
        container=f"c{version}",
        port=port,
        weight=weight,
        since=datetime(2026, 1, 1, tzinfo=UTC),
    )


@contextmanager
def postgres_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL (Debian's server binaries; skipped without them) on a free
    loopback port, TLS and scram passwords only, as `mlrig stack rehearse` runs it; stopped
    and removed at the end. Yields the adapter's Cluster (its superuser password is random).
    Its folder is a fresh one under the system's temp folder that others may traverse: as
    root the server runs as `postgres`, which pytest's owner-only temp folders would stop."""
    import secrets

    from mlrig.adapters import postgres
    from mlrig.core.stack.local.stack import free_port
    from mlrig.errors import DependencyMissing

    try:
        postgres.bin_dir()
    except DependencyMissing:
        require(False, "PostgreSQL server binaries (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="mlrig-pg-"))
    root.chmod(0o711)
    try:
        cluster = postgres.init(
            root / "pg", port=free_port(), superuser_password=secrets.token_urlsafe(16)
        )
        postgres.start(cluster)
        try:
            yield cluster
        finally:
            postgres.stop(cluster)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def default_template_file(relpath: str) -> str:
    """A file of pipeline/template as a new default (non-temporal) repository gets it: a
    `.jinja` file rendered with the template's default answers (its text has no other
    variable), a plain file as it is."""
    import jinja2

    plain = REPO_ROOT / "pipeline" / "template" / relpath
    if plain.is_file():
        return plain.read_text()
    text = plain.with_name(plain.name + ".jinja").read_text()
    # YAML rendered as copier renders it (no HTML escaping)
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)  # noqa: S701
    return env.from_string(text).render(temporal="false", snapshots="table")


# -- GitHub Actions workflows -------------------------------------------------------------------
WORKFLOW_SCHEMA = REPO_ROOT / "tests/schemas/github-workflow.json"  # vendored, see its README


def workflow_schema_errors(workflow: Path) -> list[str]:
    """Where the workflow breaks GitHub's workflow schema (SchemaStore's, vendored): a typo in
    a key fails here, not on GitHub."""
    import yaml
    from jsonschema import Draft7Validator

    schema = json.loads(WORKFLOW_SCHEMA.read_text())
    data = yaml.safe_load(workflow.read_text())
    if True in data:  # YAML 1.1 reads the bare key `on` as a boolean
        data["on"] = data.pop(True)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in Draft7Validator(schema).iter_errors(data)
    ]


def actionlint_findings(*workflows: Path) -> list[str]:
    """actionlint's findings on the workflows, one line each (shellcheck on their `run:`
    scripts, both from the dev extras); empty when it finds nothing."""
    actionlint = shutil.which("actionlint", path=str(VENV_BIN))
    shellcheck = shutil.which("shellcheck", path=str(VENV_BIN))
    require(actionlint is not None and shellcheck is not None, "actionlint and shellcheck")
    assert actionlint is not None and shellcheck is not None
    proc = subprocess.run(
        [
            actionlint,
            "-oneline",
            "-shellcheck",
            shellcheck,
            "-pyflakes=",
            "--",
            *map(str, workflows),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: findings; anything else: it failed
    return proc.stdout.splitlines()


# -- mlrig installed from its wheel ---------------------------------------------------------------
def wheel_venv(wheel: Path, venv: Path) -> Path:
    """A fresh virtual environment at venv with mlrig installed from wheel alone (no
    dependency resolution, no index), returning its `mlrig`. The dependencies are this
    environment's: a .pth line puts its site-packages after the new one (a path entry, so no
    .pth of it runs: the checkout's editable mlrig stays out), and their console scripts
    (dvc, mlflow, ...) are written into the new bin/ pointing at the new interpreter, as pip
    would write them. Installing ~180 dependencies from an index instead costs minutes and
    the network, and proves nothing about mlrig's own files."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "_mlrig_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    shebang = f"#!{sys.executable}".encode()
    for script in VENV_BIN.iterdir():
        if (
            not script.is_file()
            or script.name.startswith(("python", "pip", "activate", "Activate"))
            or script.name in ("mlrig",)
        ):
            continue
        with script.open("rb") as fh:
            first = fh.readline().rstrip()
            rest = fh.read()
        if first == shebang:
            target = venv / "bin" / script.name
            target.write_bytes(f"#!{python}\n".encode() + rest)
            target.chmod(0o755)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + ["--no-index", "--", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    return venv / "bin" / "mlrig"


@contextmanager
def in_place_build() -> Iterator[None]:
    """Held while a test builds mlrig from the checkout itself: setuptools writes build/ and
    mlrig.egg-info/ into the tree it builds, so two builds at once (the house test's wheel and
    test_wheel's sdist, on two xdist workers) would tear each other's files."""
    from filelock import FileLock

    key = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12]
    with FileLock(Path(tempfile.gettempdir()) / f"mlrig-build-{key}.lock", timeout=900):
        yield


# -- a zoo of model flavors, each logged by plain MLflow code (image tests, the image bench) --
def _pin(dist: str, module: Any) -> str:
    return f"{dist}=={module.__version__}"


def _zoo_sklearn(registered: str) -> tuple[Any, Any]:
    """A Pipeline whose ColumnTransformer one-hot encodes string columns."""
    import mlflow
    import numpy
    import pandas
    import scipy
    import sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = numpy.random.default_rng(7)
    frame = pandas.DataFrame(
        {
            "city": rng.choice(["paris", "oslo", "lima"], 200),
            "plan": rng.choice(["free", "pro"], 200),
            "usage": rng.normal(10, 3, 200),
        }
    )
    target = (frame["usage"] + (frame["plan"] == "pro") * 3 > 11).astype(int)
    model = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("text", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
                        ("number", StandardScaler(), ["usage"]),
                    ]
                ),
            ),
            ("classify", LogisticRegression()),
        ]
    ).fit(frame, target)
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        registered_model_name=registered,
        input_example=frame.head(3),
        pip_requirements=[
            _pin("scikit-learn", sklearn),
            _pin("numpy", numpy),
            _pin("pandas", pandas),
            _pin("scipy", scipy),
        ],
    )
    return info, frame.head(5)


def _zoo_xgboost(registered: str) -> tuple[Any, Any]:
    """A native Booster, pinned as `xgboost==V` the way most teams pin it."""
    import mlflow
    import numpy
    import pandas
    import scipy
    import xgboost

    rng = numpy.random.default_rng(8)
    frame = pandas.DataFrame(rng.normal(size=(300, 4)), columns=["a", "b", "c", "d"])
    target = (frame["a"] - frame["c"] > 0).astype(int)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3},
        xgboost.DMatrix(frame, label=target),
        num_boost_round=20,
    )
    info = mlflow.xgboost.log_model(
        booster,
        name="model",
        registered_model_name=registered,
        input_example=frame.head(3),
        pip_requirements=[
            _pin("xgboost", xgboost),
            _pin("numpy", numpy),
            _pin("pandas", pandas),
            _pin("scipy", scipy),
        ],
    )
    return info, frame.head(5)


def _zoo_lightgbm(registered: str) -> tuple[Any, Any]:
    """LightGBM links to the OpenMP runtime (libgomp.so.1) without bundling it."""
    import lightgbm
    import mlflow
    import numpy
    import pandas
    import scipy

    rng = numpy.random.default_rng(9)
    frame = pandas.DataFrame(rng.normal(size=(300, 4)), columns=["a", "b", "c", "d"])
    target = frame["a"] * 2 + frame["b"]
    booster = lightgbm.train(
        {"objective": "regression", "verbose": -1, "num_leaves": 7},
        lightgbm.Dataset(frame, label=target),
        num_boost_round=20,
    )
    info = mlflow.lightgbm.log_model(
        booster,
        name="model",
        registered_model_name=registered,
        input_example=frame.head(3),
        pip_requirements=[
            _pin("lightgbm", lightgbm),
            _pin("numpy", numpy),
            _pin("pandas", pandas),
            _pin("scipy", scipy),
        ],
    )
    return info, frame.head(5)


def zoo_pyfunc_pins() -> list[str]:
    """One set of pins for every pyfunc model here, so they share one serving base."""
    import mlflow
    import numpy
    import pandas

    return [_pin("mlflow", mlflow), _pin("pandas", pandas), _pin("numpy", numpy)]


def _zoo_pyfunc(registered: str) -> tuple[Any, Any]:
    """A custom PythonModel whose weights are an artifact it reads in load_context."""
    import mlflow
    import pandas

    class Affine(mlflow.pyfunc.PythonModel):  # defined here: pickled by value
        def load_context(self, context: Any) -> None:
            weights = json.loads(Path(context.artifacts["weights"]).read_text())
            self.scale, self.offset = weights["scale"], weights["offset"]

        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input["x"] * self.scale + self.offset

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.json"
        weights.write_text(json.dumps({"scale": 2.5, "offset": -1.0}))
        example = pandas.DataFrame({"x": [1.0, 2.0]})
        info = mlflow.pyfunc.log_model(
            name="model",
            registered_model_name=registered,
            python_model=Affine(),
            artifacts={"weights": str(weights)},
            input_example=example,
            pip_requirements=zoo_pyfunc_pins(),
        )
    return info, pandas.DataFrame({"x": [0.5, -3.0, 7.25]})


def _zoo_tensor(registered: str) -> tuple[Any, Any]:
    """A tensor signature (float64, shape (-1, 4)) and no input example: the build's check
    sends a row made from the signature."""
    import mlflow
    import numpy
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    class RowSums(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return numpy.asarray(model_input).sum(axis=1) * 0.5

    signature = ModelSignature(
        inputs=Schema([TensorSpec(numpy.dtype("float64"), (-1, 4))]),
        outputs=Schema([TensorSpec(numpy.dtype("float64"), (-1,))]),
    )
    info = mlflow.pyfunc.log_model(
        name="model",
        registered_model_name=registered,
        python_model=RowSums(),
        signature=signature,
        pip_requirements=zoo_pyfunc_pins(),
    )
    return info, numpy.arange(12, dtype="float64").reshape(3, 4)


ZOO: dict[str, Callable[[str], tuple[Any, Any]]] = {
    "sklearn": _zoo_sklearn,
    "xgboost": _zoo_xgboost,
    "lightgbm": _zoo_lightgbm,
    "pyfunc": _zoo_pyfunc,
    "tensor": _zoo_tensor,
}


def log_flavor(flavor: str, registered: str) -> tuple[str, Any]:
    """Log and register one ZOO model with plain MLflow code in the current MLflow (inside
    a run); (its models:/ URI, rows to ask it)."""
    info, rows = ZOO[flavor](registered)
    return f"models:/{registered}/{info.registered_model_version}", rows


GETTING_STARTED = REPO_ROOT / "tests" / "fixtures" / "getting_started"


def getting_started_data(rows: int = 240, seed: int = 7) -> str:
    """A small table whose label depends on its columns, the same bytes on every machine."""
    import random

    rng = random.Random(seed)
    lines = ["x1,x2,x3,x4,label"]
    for _ in range(rows):
        x = [round(rng.gauss(0, 1), 4) for _ in range(4)]
        label = int(x[0] + 0.5 * x[1] - 0.3 * x[2] + rng.gauss(0, 0.5) > 0)
        lines.append(",".join([*map(str, x), str(label)]))
    return "\n".join(lines) + "\n"


def getting_started_repo(
    root: Path, env: dict[str, str], *, dvc: bool = True, source: Path | None = None
) -> Path:
    """A team's repository shaped like DVC's example-get-started, as it is before mlrig:
    git (and, with dvc, DVC with data/data.csv added, no remote) with one or two commits.
    With source (a path outside the repository, written here), data/data.csv is instead the
    output of a `fetch` stage that copies it in on every run, as a team's download stage
    does: new rows there are new data for `dvc repro`."""
    import shlex

    shutil.copytree(GETTING_STARTED, root, ignore=shutil.ignore_patterns("__pycache__"))
    if source is not None:
        source.write_text(getting_started_data())
        fetch = (
            "stages:\n  fetch:\n"
            f"    cmd: mkdir -p data && cp -- {shlex.quote(str(source))} data/data.csv\n"
            "    always_changed: true\n    outs:\n      - data/data.csv\n"
        )
        pipeline = (root / "dvc.yaml").read_text()
        (root / "dvc.yaml").write_text(pipeline.replace("stages:\n", fetch, 1))
        sh(root, "git", "init", "-q", "-b", "main", env=env)
        sh(root, "dvc", "init", "-q", env=env)
        sh(root, "dvc", "config", "core.analytics", "false", env=env)
        sh(root, "git", "add", "--all", env=env)
        sh(root, "git", "commit", "-qm", "our pipeline, fetching its data", env=env)
        return root
    (root / "data").mkdir()
    (root / "data" / "data.csv").write_text(getting_started_data())
    sh(root, "git", "init", "-q", "-b", "main", env=env)
    if not dvc:
        sh(root, "git", "add", "--all", env=env)
        sh(root, "git", "commit", "-qm", "our project", env=env)
        return root
    sh(root, "git", "add", "--", "README.md", "params.yaml", "dvc.yaml", "src", env=env)
    sh(root, "git", "commit", "-qm", "our pipeline", env=env)
    sh(root, "dvc", "init", "-q", env=env)
    sh(root, "dvc", "config", "core.analytics", "false", env=env)
    sh(root, "dvc", "add", "-q", "data/data.csv", env=env)
    sh(root, "git", "add", "--all", env=env)
    sh(root, "git", "commit", "-qm", "our data, tracked by DVC", env=env)
    return root


# -- a package index on loopback (PEP 691 JSON and PEP 503 HTML) ---------------------------------
@contextmanager
def local_index(
    files: dict[str, bytes],
    *,
    html_only: bool = False,
    listed: dict[str, dict[str, str]] | None = None,
) -> Iterator[str]:
    """A simple-API package index on 127.0.0.1 serving files (name -> bytes) under their
    projects (the name's part before the first '-'), yielding its URL (…/simple/). Each file
    is listed with the sha256 of its bytes, or with the hashes listed[name] names. It answers
    PEP 691 JSON to a client that asks for it and PEP 503 HTML otherwise (always HTML with
    html_only); a project it holds no file of is a 404."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hashes = {name: {"sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()}
    hashes |= listed or {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if len(parts) == 2 and parts[0] == "files" and parts[1] in files:
                self._send(200, files[parts[1]], "application/octet-stream")
                return
            if len(parts) != 2 or parts[0] != "simple":
                self._send(404, b"not found", "text/plain")
                return
            project = parts[1]
            ours = sorted(name for name in files if name.split("-")[0] == project)
            if not ours:
                self._send(404, b"not found", "text/plain")
                return
            if not html_only and "application/vnd.pypi.simple.v1+json" in (
                self.headers.get("Accept") or ""
            ):
                page = {
                    "meta": {"api-version": "1.0"},
                    "name": project,
                    "files": [
                        {"filename": n, "url": f"../../files/{n}", "hashes": hashes[n]}
                        for n in ours
                    ],
                }
                self._send(200, json.dumps(page).encode(), "application/vnd.pypi.simple.v1+json")
                return
            anchors = "".join(
                f'<a href="../../files/{n}'
                + "".join(f"#{k}={v}" for k, v in list(hashes[n].items())[:1])
                + f'">{n}</a><br>\n'
                for n in ours
            )
            body = f"<!DOCTYPE html><html><body>\n{anchors}</body></html>\n".encode()
            self._send(200, body, "text/html")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
