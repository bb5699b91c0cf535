"""A generated repo against the real local stack (MLflow server, DVC remote dir), with real
git, dvc and mlflow: the issue's list 1-6, in order, on one shared repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    PIPELINE_STAGES,
    VENV_BIN,
    assert_provenance,
    dvc_changes,
    lock_deps,
    md5,
    md5_of,
    mlflow_client,
    params_md5,
    prefixed,
    provenance_of,
    ran_stages,
    repo_env,
    sh,
)

pytestmark = pytest.mark.integration
PROJECT = "bcancer"


@pytest.fixture(scope="module")
def shared(local_stack: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One repo made by the real `mlrig init` CLI, reused by every test in this module."""
    root = tmp_path_factory.mktemp("gen")
    env = repo_env(local_stack["home"])
    out = sh(
        root, str(VENV_BIN / "mlrig"), "init", "bcancer", "--stack", "local", "--no-input", env=env
    )
    assert "created" in out
    repo = root / "bcancer"
    return {
        "repo": repo,
        "env": env,
        "first": sh(repo, "git", "rev-parse", "HEAD", env=env).strip(),
    }


def test_1_repro_runs_all_then_skips_then_reruns_only_what_changed(shared: dict) -> None:
    repo, env = shared["repo"], shared["env"]
    assert ran_stages(sh(repo, "dvc", "repro", env=env)) == set(PIPELINE_STAGES)
    shared["provenance"] = [provenance_of(repo)]
    assert (repo / "metrics.json").exists()
    sh(repo, "git", "add", "--all", env=env)
    sh(repo, "git", "commit", "-qm", "First pipeline run", env=env)
    lock = (repo / "dvc.lock").read_bytes()

    # ingest always re-reads the source; the same bytes change nothing after it
    second = sh(repo, "dvc", "repro", env=env)
    assert ran_stages(second) == {"ingest"}
    for stage in PIPELINE_STAGES[1:]:
        assert f"Stage '{stage}' didn't change, skipping" in second
    assert (repo / "dvc.lock").read_bytes() == lock
    assert dvc_changes(repo, env) == {}

    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("C: 1.0 ", "C: 0.8 "))
    # evaluate's inputs change only once train re-runs
    assert set(dvc_changes(repo, env)) == {"train"}
    # not committed before the run: the edit and an untracked file make the run dirty
    notes = repo / "notes/idea.md"
    notes.parent.mkdir()
    notes.write_text("try a smaller C\n")
    assert ran_stages(sh(repo, "dvc", "repro", env=env)) == {"ingest", "train", "evaluate"}
    dirty = {"notes/idea.md": md5(notes), "params.yaml": md5(params)}
    shared["provenance"].append(provenance_of(repo, dirty=dirty))
    sh(repo, "git", "add", "--all", env=env)
    sh(repo, "git", "commit", "-qm", "C=0.8", env=env)


def test_generated_tests_pass(shared: dict) -> None:
    out = sh(
        shared["repo"], "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", env=shared["env"]
    )
    assert " passed" in out and "skipped" not in out  # data and processed files are present


def test_2_dag_shows_the_five_stages_in_order(shared: dict) -> None:
    dot = sh(shared["repo"], "dvc", "dag", "--dot", env=shared["env"])
    for edge in (
        '"ingest" -> "validate"',
        '"validate" -> "preprocess"',
        '"preprocess" -> "train"',
        '"ingest" -> "train"',  # train reads the snapshot's record for its tags
        '"train" -> "evaluate"',
    ):
        assert edge in dot


def test_6_runs_carry_commit_and_dvc_lock_hashes(shared: dict, stack_env: dict) -> None:
    client = mlflow_client(stack_env)
    first, partial = shared["provenance"]
    assert first["head"] == shared["first"]
    for recorded in (first, partial):
        assert_provenance(client, recorded)
    run = client.get_run(partial["run"]["run_id"])
    assert run.data.params["train.C"] == "0.8"
    assert {"train_accuracy", "test_accuracy", "test_roc_auc"} <= set(run.data.metrics)


def test_model_is_registered_with_pinned_requirements_and_example(
    shared: dict, stack_env: dict, tmp_path: Path
) -> None:
    import mlflow

    client = mlflow_client(stack_env)
    versions = client.search_model_versions(f"name='{PROJECT}'")
    latest = shared["provenance"][-1]["run"]
    assert latest["run_id"] in {v.run_id for v in versions}
    # stack_env exported MLFLOW_TRACKING_URI for this test; a global set_tracking_uri here
    # would leak into every later test in the session
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{PROJECT}/{latest['version']}", dst_path=str(tmp_path)
        )
    )
    requirements = (local / "requirements.txt").read_text().split()
    assert any(r.startswith("scikit-learn==") for r in requirements)
    assert all("==" in r for r in requirements)
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert "saved_input_example_info" in mlmodel and "signature" in mlmodel


def test_3_experiments_show_up_in_dvc_and_mlflow(shared: dict, stack_env: dict) -> None:
    repo, env = shared["repo"], shared["env"]
    head = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    values = ("0.1", "0.5", "2.0")
    for c in values:
        sh(repo, "dvc", "exp", "run", "-S", f"train.C={c}", env=env)
    table = json.loads(sh(repo, "dvc", "exp", "show", "--json", env=env))
    baseline = next(b for b in table if b["rev"] == head)
    exps = {}
    for group in baseline["experiments"]:
        for rev in group["revs"]:
            c = rev["data"]["params"]["params.yaml"]["data"]["train"]["C"]
            exps[str(c)] = rev
            assert rev["data"]["metrics"]["metrics.json"]["data"]["accuracy"] > 0.8
    assert set(exps) == set(values)

    client = mlflow_client(stack_env)
    experiment = client.get_experiment_by_name(PROJECT)
    runs = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=200)
        if r.data.tags.get("mlflow.source.git.commit") == head
    ]
    assert sorted(r.data.params["train.C"] for r in runs) == sorted(values)
    listed = sh(
        repo, "git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps", env=env
    )
    refs = dict(line.split() for line in listed.splitlines())  # experiment commit -> its ref
    for r in runs:
        assert (
            r.data.tags["dvc.dep.data/processed/train.csv"]
            == lock_deps(repo, "train")["dvc.dep.data/processed/train.csv"]
        )
        assert "test_accuracy" in r.data.metrics
        rev = exps[r.data.params["train.C"]]
        assert_experiment_provenance(repo, env, r.data.tags, baseline["rev"], rev, refs[rev["rev"]])

    sh(repo, "dvc", "exp", "apply", exps["0.5"]["name"], env=env)
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["C"] == 0.5
    sh(repo, "git", "checkout", "--", ".", env=env)  # back to the committed baseline
    sh(repo, "dvc", "checkout", "--force", env=env)
    assert dvc_changes(repo, env) == {}


def assert_experiment_provenance(
    repo: Path, env: dict[str, str], tags: dict[str, str], head: str, rev: dict, ref: str
) -> None:
    """An experiment's run names it as `dvc exp show` and its git ref do, and the
    experiment's commit records exactly this run's outputs, params and edits."""
    assert tags["mlrig.exp.name"] == rev["name"] == ref.rsplit("/", 1)[-1]
    assert tags["mlrig.exp.baseline"] == head
    assert tags["mlrig.exp.ref"] == ref == f"refs/exps/{head[:2]}/{head[2:]}/{rev['name']}"
    lock = yaml.safe_load(sh(repo, "git", "show", f"{ref}:dvc.lock", env=env))["stages"]["train"]
    assert prefixed(tags, "dvc.out.") == {f"dvc.out.{o['path']}": o["md5"] for o in lock["outs"]}
    assert tags["mlrig.params.md5"] == params_md5(lock["params"])
    # -S edited params.yaml before the run; the experiment's commit holds that edit
    committed = sh(repo, "git", "show", f"{ref}:params.yaml", env=env).encode()
    assert tags["mlrig.git.dirty"] == "true"
    assert json.loads(tags["mlrig.git.dirty_files"]) == {"params.yaml": md5_of(committed)}


def test_a_verification_rerun_registers_nothing_and_names_its_original(
    shared: dict, stack_env: dict
) -> None:
    """What `mlrig checkout --repro` runs: the whole pipeline again, with MLRIG_REPRO_OF."""
    repo, env = shared["repo"], shared["env"]
    client = mlflow_client(stack_env)
    original = shared["provenance"][-1]
    versions = {v.version for v in client.search_model_versions(f"name='{PROJECT}'")}
    rerun_env = {**env, "MLRIG_REPRO_OF": original["run"]["run_id"]}
    assert "train" in ran_stages(sh(repo, "dvc", "repro", "--force", env=rerun_env))
    record = json.loads((repo / "models/mlflow_run.json").read_text())
    assert record["version"] is None and record["run_id"] != original["run"]["run_id"]
    assert {v.version for v in client.search_model_versions(f"name='{PROJECT}'")} == versions
    run = client.get_run(record["run_id"])
    assert run.data.tags["mlrig.repro_of"] == original["run"]["run_id"]
    assert run.data.tags["dvc.out.models/mlflow_run.json"] == md5(repo / "models/mlflow_run.json")
    # training is deterministic: the same bytes and, through evaluate, the same test metrics
    assert run.data.tags["dvc.out.models/model.pkl"] == original["outs"]["dvc.out.models/model.pkl"]
    before = client.get_run(original["run"]["run_id"]).data.metrics
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("test_")} == {
        k: v for k, v in before.items() if k.startswith("test_")
    }
    assert run.data.tags["mlrig.git.dirty"] == "false"
    # the re-run trained on the recorded snapshot, and was no candidate for champion
    assert run.data.tags["mlrig.data.md5"] == original["data"]["md5"]
    assert run.data.tags["mlrig.gate.verdict"] == "kept"
    sh(repo, "git", "checkout", "--", ".", env=env)  # back to the committed run
    sh(repo, "dvc", "checkout", "--force", env=env)
    assert dvc_changes(repo, env) == {}


def test_4_push_then_fresh_clone_pulls_identical_files(shared: dict, tmp_path: Path) -> None:
    repo, env = shared["repo"], shared["env"]
    sh(repo, "dvc", "push", env=env)
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone), env=env)
    assert not (clone / "models/model.pkl").exists()
    sh(clone, "dvc", "pull", env=env)
    for path in (
        "data/raw/breast_cancer.csv",
        "data/snapshot/data.csv",
        "data/snapshot/record.json",
        "data/processed/train.csv",
        "data/processed/test.csv",
        "models/model.pkl",
        "models/mlflow_run.json",
    ):
        assert md5(clone / path) == md5(repo / path), path
    assert dvc_changes(clone, env) == {}


def test_5_time_travel_restores_the_first_dataset(shared: dict) -> None:
    repo, env = shared["repo"], shared["env"]
    raw = repo / "data/raw/breast_cancer.csv"
    v1_hash, v1_rows = md5(raw), len(raw.read_text().splitlines()) - 1
    v1_commit = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    v1_model = md5(repo / "models/model.pkl")
    lines = raw.read_text().splitlines(keepends=True)
    raw.write_text("".join(lines[:501]))  # data v2: the first 500 rows
    sh(repo, "dvc", "add", "data/raw/breast_cancer.csv", env=env)
    sh(repo, "git", "commit", "-qam", "Data v2", env=env)

    assert md5(raw) != v1_hash
    sh(repo, "git", "checkout", "-q", v1_commit, env=env)
    sh(repo, "dvc", "checkout", env=env)
    assert md5(raw) == v1_hash and len(raw.read_text().splitlines()) - 1 == v1_rows == 569
    assert md5(repo / "models/model.pkl") == v1_model
    dvc_file = yaml.safe_load((repo / "data/raw/breast_cancer.csv.dvc").read_text())
    assert dvc_file["outs"][0]["md5"] == v1_hash

    sh(repo, "git", "checkout", "-q", "main", env=env)
    sh(repo, "dvc", "checkout", env=env)
    assert len(raw.read_text().splitlines()) - 1 == 500
