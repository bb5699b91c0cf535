"""A generated repo whose DVC remote is S3 (moto's standalone server) and whose MLflow is the
real local tracking server: endpoints stay in config.local, and push / fresh clone / pull /
time travel / provenance work through the S3 API."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import yaml

from mlrig import contract
from mlrig.contract import DvcRemote, Registry, StackOutputs
from tests.helpers import (
    PIPELINE_STAGES,
    VENV_BIN,
    assert_provenance,
    dvc_config,
    md5,
    mlflow_client,
    provenance_of,
    ran_stages,
    repo_env,
    sh,
)

pytestmark = pytest.mark.integration
BUCKET = "mlrig-dvc-test"
FILES = (
    "data/raw/breast_cancer.csv",
    "data/snapshot/data.csv",
    "data/processed/train.csv",
    "data/processed/test.csv",
    "models/model.pkl",
    "models/mlflow_run.json",
)


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def s3(
    local_stack: dict, moto_server: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """An AWS-kind stack: S3 remote on moto, MLflow from the local stack; one repo for all."""
    s3_client(moto_server).create_bucket(Bucket=BUCKET)
    outputs = StackOutputs(
        name="moto",
        kind="aws",
        region="us-east-1",
        dvc_remote=DvcRemote(
            url=f"s3://{BUCKET}/dvc", endpoint_url=moto_server, region="us-east-1"
        ),
        mlflow=local_stack["outputs"].mlflow,
        registry=Registry(
            kind="ecr",
            url="123456789012.dkr.ecr.us-east-1.amazonaws.com/s3rig",
            endpoint_url=moto_server,
        ),
        ci_role_arn="arn:aws:iam::123456789012:role/mlrig-ci",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLRIG_HOME", str(local_stack["home"]))
        contract.save(outputs)
    root = tmp_path_factory.mktemp("gen-s3")
    env = repo_env(
        local_stack["home"], {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    )
    sh(
        root,
        str(VENV_BIN / "mlrig"),
        "init",
        "s3rig",
        "--stack",
        "moto",
        "--no-input",
        "--github-repo",
        "acme/s3rig",
        env=env,
    )
    return {"repo": root / "s3rig", "env": env, "endpoint": moto_server, "root": root}


def test_endpoint_only_in_config_local(s3: dict) -> None:
    repo = s3["repo"]
    assert dvc_config(repo / ".dvc/config")['remote "storage"'] == {"url": f"s3://{BUCKET}/dvc"}
    local = dvc_config(repo / ".dvc/config.local")['remote "storage"']
    assert local["endpointurl"] == s3["endpoint"]
    wf = yaml.safe_load((repo / ".github/workflows/ci.yml").read_text())
    assert wf["permissions"]["id-token"] == "write"


def test_repro_and_provenance_on_s3_stack(s3: dict, stack_env: dict) -> None:
    repo, env = s3["repo"], s3["env"]
    head = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    assert ran_stages(sh(repo, "dvc", "repro", env=env)) == set(PIPELINE_STAGES)
    recorded = provenance_of(repo)
    assert recorded["head"] == head
    assert_provenance(mlflow_client(stack_env), recorded)
    sh(repo, "git", "add", "--all", env=env)
    sh(repo, "git", "commit", "-qm", "First pipeline run", env=env)
    s3["v1_commit"] = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()


def test_push_to_s3_then_fresh_clone_pulls_identical_files(s3: dict) -> None:
    repo, env = s3["repo"], s3["env"]
    sh(repo, "dvc", "push", env=env)
    listed = s3_client(s3["endpoint"]).list_objects_v2(Bucket=BUCKET, Prefix="dvc/")
    assert listed["KeyCount"] >= len(FILES)

    clone = s3["root"] / "clone"
    sh(s3["root"], "git", "clone", "-q", str(repo), str(clone), env=env)
    assert not (clone / ".dvc/config.local").exists()  # endpoints never travel with git
    # what the README tells a colleague to do after cloning
    sh(
        clone,
        "dvc",
        "remote",
        "modify",
        "--local",
        "storage",
        "endpointurl",
        s3["endpoint"],
        env=env,
    )
    sh(clone, "dvc", "pull", env=env)
    for path in FILES:
        assert md5(clone / path) == md5(repo / path), path
    s3["clone"] = clone


def test_time_travel_through_the_s3_remote(s3: dict) -> None:
    repo, env, clone = s3["repo"], s3["env"], s3["clone"]
    raw = repo / "data/raw/breast_cancer.csv"
    v1_hash = md5(raw)
    lines = raw.read_text().splitlines(keepends=True)
    raw.write_text("".join(lines[:401]))  # data v2: 400 rows
    sh(repo, "dvc", "add", "data/raw/breast_cancer.csv", env=env)
    sh(repo, "git", "commit", "-qam", "Data v2", env=env)
    sh(repo, "dvc", "push", env=env)

    sh(clone, "git", "pull", "-q", env=env)
    sh(clone, "dvc", "pull", env=env)
    clone_raw = clone / "data/raw/breast_cancer.csv"
    assert len(clone_raw.read_text().splitlines()) == 401
    # drop the clone's cache so the first version can only come back from S3
    shutil.rmtree(clone / ".dvc/cache")
    sh(clone, "git", "checkout", "-q", s3["v1_commit"], env=env)
    # --force: with the cache gone DVC cannot tell the v2 file in the workspace is saved
    sh(clone, "dvc", "pull", "--force", env=env)
    assert md5(clone_raw) == v1_hash
    assert len(clone_raw.read_text().splitlines()) - 1 == 569


def test_ingest_reads_a_glob_on_the_stacks_bucket(s3: dict) -> None:
    """An s3:// source on the DVC remote's bucket reaches it with the remote's endpoint (in
    config.local) and the environment's credentials; a glob's parts come in sorted order."""
    import json

    import pandas as pd

    repo, env = s3["repo"], s3["env"]
    table = pd.read_csv(repo / "data/raw/breast_cancer.csv")
    client = s3_client(s3["endpoint"])
    for key, part in (
        ("incoming/part-1.csv", table.iloc[300:]),
        ("incoming/part-0.csv", table.iloc[:300]),
    ):
        client.put_object(Bucket=BUCKET, Key=key, Body=part.to_csv(index=False).encode())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest"]["source"] = f"s3://{BUCKET}/incoming/part-*.csv"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh(repo, "dvc", "repro", "--single-item", "ingest", env=env)
    assert "ingest: snapshot of s3://" in out
    record = json.loads((repo / "data/snapshot/record.json").read_text())
    assert record["source"] == f"s3://{BUCKET}/incoming/part-*.csv"
    assert record["rows"] == len(table) and record["md5"] == md5(repo / "data/snapshot/data.csv")
    snapshot = pd.read_csv(repo / "data/snapshot/data.csv")
    assert snapshot["id"].tolist() == table["id"].tolist()  # part-0 first
