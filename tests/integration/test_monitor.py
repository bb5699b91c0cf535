"""`mlrig monitor` on the real local stack: a version trained by the generated repo's pipeline
with its DVC snapshot pushed to the stack's remote, captures written by the test in the agreed
format, the real program run; its MLflow run read back, its report opened in headless Chromium.
About 60 s on 2 shared CPUs (the pipeline run is most of it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlrig.adapters.mlflow_rest import MlflowRest
from mlrig.core.stack.local.state import Layout
from tests.helpers import (
    VENV_BIN,
    capture_file,
    capture_line,
    chromium_render,
    environ_with,
    repo_env,
    sh,
)

pytestmark = pytest.mark.integration
PROJECT = "monrig"
DERIVED = ("compactness_ratio", "worst_to_mean_radius")  # what the template's model computes


def mlrig(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "mlrig"), *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode not in (0, 10, 11), proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(local_stack: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`mlrig init` + `dvc repro` + commit + `dvc push` of PROJECT on the session's stack."""
    home = local_stack["home"]
    root = tmp_path_factory.mktemp("monitor")
    env = repo_env(home)
    sh(root, str(VENV_BIN / "mlrig"), "init", PROJECT, "--stack", "local", "--no-input", env=env)
    repo = root / PROJECT
    sh(repo, "dvc", "repro", env=env)
    sh(repo, "git", "add", "--all", env=env)
    sh(repo, "git", "commit", "-qm", "First pipeline run", env=env)
    sh(repo, "dvc", "push", "-q", env=env)
    run = json.loads((repo / "models" / "mlflow_run.json").read_text())
    with environ_with({"MLRIG_HOME": str(home)}):
        captures = Layout("local").root / "captures"
    yield {
        "repo": repo,
        "env": env,
        "version": run["version"],
        "run_id": run["run_id"],
        "captures": captures,
        "train": pd.read_csv(repo / "data" / "processed" / "train.csv"),
        "rest": MlflowRest.from_env(local_stack["env"]),
        "remote": Path(local_stack["outputs"].dvc_remote.url),
    }
    shutil.rmtree(captures, ignore_errors=True)


def _live(train: pd.DataFrame, shift: dict[str, float], seed: int) -> pd.DataFrame:
    """Rows like the training set (resampled), some columns moved by `shift` σ, with the
    two features the model derives, as a client sends them."""
    rows = train.sample(n=400, replace=True, random_state=seed).drop(columns=["id", "target"])
    for column, sigmas in shift.items():
        rows[column] = rows[column] + sigmas * float(train[column].std())
    rows["compactness_ratio"] = rows["mean_area"] / np.maximum(rows["mean_perimeter"] ** 2, 1e-9)
    rows["worst_to_mean_radius"] = rows["worst_radius"] / np.maximum(rows["mean_radius"], 1e-9)
    return rows.reset_index(drop=True)


def _capture(t: dict, endpoint: str, frame: pd.DataFrame, version: str | None = None) -> list[str]:
    """frame's rows as 40 captured requests of 10 rows, the last minutes; their inference ids."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    ids, lines = [], []
    for i in range(0, len(frame), 10):
        chunk = frame.iloc[i : i + 10]
        iid = f"00000000-0000-4000-8000-{endpoint[:4].encode().hex()}{i:04d}"
        ids.append(iid)
        lines.append(
            capture_line(
                chunk.to_dict(orient="records"),
                [int(v) for v in (chunk["mean_radius"] < 15).astype(int)],
                when=now,
                model=PROJECT,
                version=version or t["version"],
                endpoint=endpoint,
                inference_id=iid,
                run_id=t["run_id"],
            )
        )
    capture_file(t["captures"] / endpoint, now, lines)
    return ids


def test_a_shifted_window_is_drift_logged_to_mlflow_and_reported(
    trained: dict, tmp_path: Path
) -> None:
    t = trained
    ids = _capture(t, "shifted", _live(t["train"], {"mean_radius": 1.0}, seed=1))
    labels = tmp_path / "labels.csv"
    pd.DataFrame(
        {"inference_id": [ids[0], ids[1], "ffffffff-0000-4000-8000-000000000000"],
         "label": [1, 0, 1]}
    ).to_csv(labels, index=False)  # fmt: skip
    report = tmp_path / "report.html"
    args = ("monitor", "shifted", "--repo", str(t["repo"]), "--json", "--report", str(report))
    proc = mlrig(tmp_path, t["env"], *args, "--labels", str(labels))
    assert proc.returncode == 10, proc.stderr  # drift
    result = json.loads(proc.stdout)
    assert (result["model"], result["version"], result["rows"]) == (PROJECT, t["version"], 400)
    assert result["reference_path"] == "data/processed/train.csv"
    assert result["drifted"] is True
    drifted = [c["column"] for c in result["columns"] if c["drifted"]]
    assert drifted == ["mean_radius"], drifted
    assert len(result["columns"]) == 30
    assert result["schema_findings"] == []  # the derived columns are the model's inputs
    assert sorted(n.split(":")[0] for n in result["not_compared"]) == sorted(DERIVED)
    assert result["prediction"]["column"] == "prediction"
    perf = result["performance"]
    assert perf["metric"] == "roc_auc" and perf["unknown_ids"] == 1
    assert perf["labelled_rows"] == 2 and perf["promoted_on"] is not None

    run = t["rest"].run(result["monitor_run_id"])
    assert run.tags["mlrig.monitor.model"] == PROJECT
    assert run.tags["mlrig.monitor.version"] == t["version"]
    assert run.tags["mlrig.monitor.endpoint"] == "shifted"
    assert run.tags["mlrig.monitor.training_run"] == t["run_id"]
    assert run.tags["mlrig.monitor.drifted"] == "true"
    assert run.metrics["drift.mean_radius.wasserstein"] > 0.5
    assert run.metrics["drift.mean_texture.wasserstein"] < 0.2

    dom, shot = chromium_render(report, tmp_path)
    assert dom.count('class="chart"') == 31  # 30 features and the predictions
    assert 'data-column="mean_radius"' in dom and "DRIFT" in dom
    heights = [float(h) for h in re.findall(r'class="bar live"[^>]*height="([0-9.]+)"', dom)]
    assert heights and max(heights) > 10
    pixels = np.asarray(shot)
    live_orange = np.all(np.abs(pixels.astype(int) - (0xDD, 0x84, 0x52)) < 12, axis=-1)
    ref_blue = np.all(np.abs(pixels.astype(int) - (0x4C, 0x72, 0xB0)) < 12, axis=-1)
    assert live_orange.sum() > 2000 and ref_blue.sum() > 2000  # the bars were painted


def test_an_unshifted_window_is_no_drift(trained: dict, tmp_path: Path) -> None:
    _capture(trained, "steady", _live(trained["train"], {}, seed=2))
    proc = mlrig(tmp_path, trained["env"], "monitor", "steady", "--repo", str(trained["repo"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no drift" in proc.stdout


def test_bad_windows_and_a_missing_reference_are_one_line_each(
    trained: dict, tmp_path: Path
) -> None:
    t = trained
    repo = ("--repo", str(t["repo"]))
    report = tmp_path / "r.html"
    line = one_line(mlrig(tmp_path, t["env"], "monitor", "quiet", *repo, "--report", str(report)))
    assert "no captures of endpoint quiet" in line
    _capture(t, "mixed", _live(t["train"], {}, seed=3))
    _capture(t, "mixed", _live(t["train"], {}, seed=4), version="99")
    line = one_line(mlrig(tmp_path, t["env"], "monitor", "mixed", *repo, "--report", str(report)))
    assert "several versions" in line and f"{PROJECT} v99" in line
    assert not report.exists()

    # the reference's object leaves the remote: monitor says so and writes nothing
    md5 = [
        d["md5"]
        for d in json.loads(
            mlrig(
                t["repo"], t["env"], "trace", "--json", f"models:/{PROJECT}/{t['version']}"
            ).stdout
        )["data"]
        if d["path"] == "data/processed/train.csv"
    ][0]
    obj = t["remote"] / "files" / "md5" / md5[:2] / md5[2:]
    aside = obj.with_name(obj.name + ".aside")
    obj.rename(aside)
    try:
        _capture(t, "orphan", _live(t["train"], {}, seed=5))
        proc = mlrig(tmp_path, t["env"], "monitor", "orphan", *repo, "--report", str(report))
        line = one_line(proc)
        assert "missing from the DVC remote" in line and md5 in line
        assert not report.exists()
    finally:
        aside.rename(obj)
