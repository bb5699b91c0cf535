"""`mlrig trace` for real: the provenance repo's images, model versions and runs (plain repro
and experiments) traced back through the local stack's MLflow, registry and git; an S3/ECR
stack (moto) traced from the ECR digest through the model version's push tags."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlrig.core.provenance.record import ProvenanceRecord
from tests.helpers import VENV_BIN, breast_cancer_pipeline, md5, registry_process, repo_env, sh

pytestmark = pytest.mark.integration
ECR_HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
MOTO_PASSWORD = "123456789012-auth-token"


def mlrig(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The venv's real `mlrig` program, as a user's shell runs it."""
    return subprocess.run(
        [str(VENV_BIN / "mlrig"), *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def traced(prov: dict[str, Any], ref: str, *extra: str) -> ProvenanceRecord:
    proc = mlrig(prov["repo"], prov["env"], "trace", "--json", ref, *extra)
    assert proc.returncode == 0, proc.stderr
    return ProvenanceRecord.model_validate_json(proc.stdout)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def lock_outs(repo: Path, sha: str) -> dict[str, str]:
    text = sh(repo, "git", "show", f"{sha}:dvc.lock", env=os.environ.copy())
    outs = yaml.safe_load(text)["stages"]["train"]["outs"]
    return {o["path"]: o["md5"] for o in outs}


def test_every_version_traces_from_its_pushed_digest(provenance_repo: dict) -> None:
    prov = provenance_repo
    project, stack_remote = prov["project"], None
    for version, facts in prov["versions"].items():
        record = traced(prov, facts["digest"])
        assert record.run.id == facts["run_id"]
        assert record.model and (record.model.name, record.model.version) == (project, version)
        assert facts["ref"] in [i.reference for i in record.images]
        code = record.code
        point = code.restore_point
        assert point and point.sha == facts["commit"], (version, facts, code)
        assert code.restorable and code.reason is None
        # `-S` edits params.yaml before the run; the experiment's commit holds that edit
        assert list(code.dirty_files) == (["params.yaml"] if facts["exp"] else [])
        assert code.remote == str(prov["origin"])
        assert code.exp_name == facts["exp"] and code.exp_ref == facts["exp_ref"]
        if facts["exp"]:
            assert (point.found_by, point.ref) == ("exp-ref", facts["exp_ref"])
            assert code.exp_baseline == prov["head"]
        else:
            assert point.found_by == "run-file" and point.ref is None
        assert record.restore_command == f"mlrig checkout models:/{project}/{version}"
        # the data the run read and wrote are the ones its restore point's dvc.lock records
        hashes = record.expected_hashes()
        assert {k: hashes[k] for k in lock_outs(prov["repo"], point.sha)} == lock_outs(
            prov["repo"], point.sha
        )
        assert hashes["data/processed/train.csv"] == md5(prov["repo"] / "data/processed/train.csv")
        in_dvc = {d.path for d in record.data if d.remote}
        assert in_dvc == {"data/processed/train.csv", "models/model.pkl", "models/mlflow_run.json"}
        remotes = {(d.remote.name, d.remote.url) for d in record.data if d.remote}
        assert len(remotes) == 1
        stack_remote = stack_remote or remotes
        assert remotes == stack_remote
        assert "train.C" in record.run.params
        assert any(k.startswith("test_") for k in record.run.metrics), record.run.metrics


def test_image_labels_name_the_runs_restore_point(provenance_repo: dict) -> None:
    """Built in the repo at the repro commit, each image still names its own run's origin."""
    from mlrig.adapters import docker as docker_adapter

    for facts in provenance_repo["versions"].values():
        info = docker_adapter.image_info(facts["image"])
        assert info is not None
        labels = info.labels
        assert labels["io.mlrig.mlflow.run-id"] == facts["run_id"]
        assert labels["io.mlrig.git.commit"] == facts["commit"]
        assert labels["org.opencontainers.image.revision"] == facts["commit"]
        assert labels.get("io.mlrig.exp.name") == facts["exp"]
        assert labels.get("io.mlrig.exp.ref") == facts["exp_ref"]
        assert labels["io.mlrig.git.dirty"] == ("true" if facts["exp"] else "false")
        data = dict(item.split("=", 1) for item in labels["io.mlrig.dvc.data"].split(","))
        assert (
            data["models/model.pkl"]
            == lock_outs(provenance_repo["repo"], facts["commit"])["models/model.pkl"]
        )


def test_human_output_is_compact_and_names_the_restore_command(provenance_repo: dict) -> None:
    prov = provenance_repo
    version, facts = next((v, f) for v, f in prov["versions"].items() if f["exp"])
    proc = mlrig(prov["repo"], prov["env"], "trace", facts["digest"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for expected in (facts["run_id"], facts["commit"], facts["exp"], facts["ref"]):
        assert expected in out, (expected, out)
    assert f"restorable bit for bit: mlrig checkout models:/{prov['project']}/{version}" in out
    assert len(out.splitlines()) < 40


def test_every_kind_of_ref_gives_the_same_record(
    provenance_repo: dict, stack_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from mlrig.core.provenance import trace

    prov = provenance_repo
    project = prov["project"]
    version, facts = next((v, f) for v, f in prov["versions"].items() if f["exp"])
    MlflowClient().set_registered_model_alias(project, "champion", version)
    monkeypatch.chdir(prov["repo"])
    in_process = trace.trace(f"models:/{project}/{version}")
    want = in_process.model_dump(exclude={"ref", "images"})
    refs = [
        f"models:/{project}/{version}",
        f"models:/{project}@champion",
        "@champion",
        facts["run_id"],
        f"runs:/{facts['run_id']}/model",
        facts["image"],
        facts["ref"],
        facts["digest"],
    ]
    for ref in refs:
        record = traced(prov, ref)
        got = record.model_dump(exclude={"ref", "images"})
        assert got["model"]["aliases"] == ["champion"], ref
        assert got == want, ref
    assert traced(prov, refs[0]).model_dump() == in_process.model_dump()


def test_the_stacks_registry_answers_when_the_engine_has_no_such_image(
    provenance_repo: dict, stack_env: dict
) -> None:
    from mlrig.core.provenance import _trace_image as trace_image

    facts = next(iter(provenance_repo["versions"].values()))
    found = trace_image._registry(stack_env["outputs"], None, facts["digest"])
    assert found is not None
    assert found.labels["io.mlrig.mlflow.run-id"] == facts["run_id"]
    assert [i.reference for i in found.images] == [facts["ref"]]


def test_unknown_digest_is_one_line(provenance_repo: dict) -> None:
    prov = provenance_repo
    proc = mlrig(prov["repo"], prov["env"], "trace", "sha256:" + "0" * 64)
    assert "no image sha256:" in one_line(proc)


def test_model_version_without_any_git_tag_is_one_line(
    provenance_repo: dict, stack_env: dict
) -> None:
    """A run with mlrig's tags missing degrades (tests/integration/test_adopt.py); one without
    even MLflow's own git tag links to no code: one line."""
    import mlflow

    model, x = breast_cancer_pipeline()
    mlflow.set_experiment("trace-tests")
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=x.head(2), registered_model_name="prov-bare"
        )
    client = mlflow.MlflowClient()
    if "mlflow.source.git.commit" in client.get_run(run.info.run_id).data.tags:
        client.delete_tag(run.info.run_id, "mlflow.source.git.commit")
    version = info.registered_model_version
    proc = mlrig(
        provenance_repo["repo"], provenance_repo["env"], "trace", f"models:/prov-bare/{version}"
    )
    assert one_line(proc).startswith(
        f"error: model version {version} of prov-bare has no git tag at all (no "
        "mlflow.source.git.commit, no image label): nothing links it to code"
    )


def test_a_dirty_run_cannot_be_restored_bit_for_bit(provenance_repo: dict, tmp_path: Path) -> None:
    """A teammate's clone: an untracked file during the repro, the result committed."""
    prov, env = provenance_repo, provenance_repo["env"]
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(prov["origin"]), str(clone), env=env)
    sh(clone, "dvc", "pull", "-q", env=env)
    (clone / "scratch.txt").write_text("an idea, never committed\n")
    sh(clone, "dvc", "repro", "-f", "-s", "train", env=env)
    run = json.loads((clone / "models/mlflow_run.json").read_text())
    sh(clone, "git", "add", "dvc.lock", env=env)
    sh(clone, "git", "commit", "-qm", "retrained", env=env)
    proc = mlrig(clone, env, "trace", "--json", f"models:/{prov['project']}/{run['version']}")
    assert proc.returncode == 0, proc.stderr
    record = ProvenanceRecord.model_validate_json(proc.stdout)
    assert record.code.dirty and "scratch.txt" in record.code.dirty_files
    assert record.code.restore_point is not None and record.restore_command is None
    assert record.code.reason == (
        f"run {run['run_id']} was made from a dirty workspace (scratch.txt): "
        "it cannot be restored bit for bit"
    )
    human = mlrig(clone, env, "trace", run["run_id"])
    assert "cannot be restored bit for bit" in human.stdout


# -- an S3/ECR stack (moto), MLflow from the local stack ----------------------------------------
def test_ecr_digest_traces_through_the_model_version_tags(
    local_stack: dict, stack_env: dict, aws_env: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import boto3

    from mlrig import contract
    from mlrig.adapters import docker as docker_adapter
    from mlrig.adapters import ecr
    from mlrig.contract import DvcRemote, Registry, StackOutputs
    from mlrig.core.image import build as image
    from mlrig.core.image import push as serving_push

    name, bucket = "tracerig", "mlrig-trace-test"
    boto3.client("s3", endpoint_url=aws_env, region_name="us-east-1").create_bucket(Bucket=bucket)
    boto3.client("ecr", endpoint_url=aws_env, region_name="us-east-1").create_repository(
        repositoryName=name, imageTagMutability="IMMUTABLE"
    )
    outputs = StackOutputs(
        name="trace-moto",
        kind="aws",
        region="us-east-1",
        dvc_remote=DvcRemote(url=f"s3://{bucket}/dvc", endpoint_url=aws_env, region="us-east-1"),
        mlflow=local_stack["outputs"].mlflow,
        registry=Registry(kind="ecr", url=f"{ECR_HOST}/{name}", endpoint_url=aws_env),
        ci_role_arn="arn:aws:iam::123456789012:role/mlrig-ci",
    )
    contract.save(outputs)
    request.addfinalizer(contract.outputs_path("trace-moto").unlink)  # later tests see one stack
    env = repo_env(
        local_stack["home"], {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    )
    sh(
        tmp_path,
        str(VENV_BIN / "mlrig"),
        "init",
        name,
        "--stack",
        "trace-moto",
        "--no-input",
        "--github-repo",
        f"acme/{name}",
        env=env,
    )
    repo = tmp_path / name
    sh(repo, "dvc", "repro", env=env)
    sh(repo, "git", "add", "--all", env=env)
    sh(repo, "git", "commit", "-qm", "First pipeline run", env=env)
    commit = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    sh(repo, "dvc", "push", "-q", env=env)
    run = json.loads((repo / "models/mlflow_run.json").read_text())

    built = image.build(f"models:/{name}/{run['version']}", repo=repo, stack="trace-moto")
    ecr.forget(ECR_HOST)
    with registry_process({"AWS": MOTO_PASSWORD}) as (host, _proc):
        pushed = serving_push.push(built.ref, outputs, endpoint=host)
    assert pushed.reference.startswith(f"{ECR_HOST}/{name}@sha256:")
    api = docker_adapter.client().api
    for tag in api.inspect_image(built.ref).get("RepoTags") or []:
        if tag.startswith(f"{host}/"):
            api.remove_image(tag, noprune=True)
    for ref in api.inspect_image(built.ref).get("RepoDigests") or []:
        if ref.startswith(f"{host}/"):
            api.remove_image(ref, noprune=True)
    assert docker_adapter.image_by_digest(pushed.digest) is None  # only MLflow knows it now

    proc = mlrig(repo, env, "trace", "--json", "--stack", "trace-moto", pushed.reference)
    assert proc.returncode == 0, proc.stderr
    record = ProvenanceRecord.model_validate_json(proc.stdout)
    assert record.run.id == run["run_id"]
    assert [i.reference for i in record.images] == [pushed.reference]
    assert record.model and record.model.tags["mlrig.image.digest"] == pushed.digest
    assert record.code.restore_point and record.code.restore_point.sha == commit
    assert record.code.restorable
    assert {d.remote.url for d in record.data if d.remote} == {f"s3://{bucket}/dvc"}
