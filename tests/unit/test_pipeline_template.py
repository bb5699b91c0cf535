"""The rendered template 1.5.0 pipeline: ingest -> validate -> preprocess -> train -> evaluate,
the params the retraining loop relies on, the schema shipped for the bundled dataset, and how
checkout reads `dvc status` of a stage that always runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlrig.core.bootstrap import _render as bootstrap_render
from mlrig.core.bootstrap import init as bootstrap
from mlrig.core.bootstrap.dataset import dataset_file
from mlrig.core.provenance import _checkout_verify as checkout_verify
from tests.helpers import aws_outputs

STAGES = ["ingest", "validate", "preprocess", "train", "evaluate"]
RECORD = "data/snapshot/record.json"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src, ref = bootstrap.template_repo()
    dest = tmp_path_factory.mktemp("render") / "churn"
    bootstrap_render.render(src, ref, dest, project="churn", outputs=aws_outputs())
    return dest


def entries(items: list) -> dict[str, dict]:
    """dvc.yaml's outs/deps/metrics: a path or {path: options}, as {path: options}."""
    out: dict[str, dict] = {}
    for item in items or []:
        if isinstance(item, dict):
            ((path, options),) = item.items()
            out[path] = options or {}
        else:
            out[item] = {}
    return out


def test_the_template_version_has_its_changelog_section() -> None:
    """docs/releasing.md: a template change bumps pipeline/VERSION and adds its section to
    pipeline/CHANGELOG.md, which `mlrig update` prints."""
    template = bootstrap.packaged_template()
    version = (template / "VERSION").read_text().strip()
    assert version == "1.5.0"
    sections = re.findall(r"^## \[([0-9.]+)\]", (template / "CHANGELOG.md").read_text(), re.M)
    assert sections[0] == version, "the newest CHANGELOG section is the template's version"


def test_five_stages_each_reading_what_the_one_before_wrote(rendered: Path) -> None:
    stages = yaml.safe_load((rendered / "dvc.yaml").read_text())["stages"]
    assert list(stages) == STAGES
    ingest = stages["ingest"]
    assert ingest["always_changed"] is True and ingest["params"] == ["ingest"]
    outs = entries(ingest["outs"])
    # persisted, so DVC does not delete them before ingest decides whether they changed
    assert outs == {
        "data/snapshot/data.csv": {"persist": True},
        "data/snapshot/record.json": {"cache": False, "persist": True},
    }
    assert "data/snapshot/data.csv" in entries(stages["validate"]["deps"])
    assert list(entries(stages["validate"]["metrics"])) == ["metrics/data_quality.json"]
    # preprocess reads validate's output, so DVC never runs it on an unvalidated snapshot
    assert {"data/snapshot/data.csv", "metrics/data_quality.json"} <= set(
        entries(stages["preprocess"]["deps"])
    )
    assert "data/snapshot/record.json" in entries(stages["train"]["deps"])
    assert stages["evaluate"]["params"] == ["evaluate", "gate"]
    assert entries(stages["evaluate"]["outs"]) == {"gate.json": {"cache": False}}


def test_params_name_the_bundled_source_the_schema_and_the_gate(rendered: Path) -> None:
    params = yaml.safe_load((rendered / "params.yaml").read_text())
    assert params["ingest"] == {"source": "data/raw/breast_cancer.csv", "query": None}
    assert params["validate"]["schema"] == "data/schema.yaml"
    assert params["gate"] == {"metric": "roc_auc", "margin": 0.0, "greater_is_better": True}


def test_the_schema_describes_the_bundled_dataset(rendered: Path) -> None:
    schema = yaml.safe_load((rendered / "data/schema.yaml").read_text())
    frame = pd.read_csv(dataset_file())
    assert list(schema["columns"]) == list(frame.columns)
    assert schema["target"] == "target"
    for name, spec in schema["columns"].items():
        want = "int" if pd.api.types.is_integer_dtype(frame[name]) else "float"
        assert spec["type"] == want, name
        assert spec["nullable"] is False
    assert schema["columns"]["target"]["values"] == sorted(frame["target"].unique().tolist())


def test_a_stage_that_always_runs_is_no_difference_but_a_real_change_is() -> None:
    lines = checkout_verify._status_lines(
        {
            "ingest": ["always changed"],
            "train": ["always changed", {"changed deps": {"data/processed/train.csv": "modified"}}],
        }
    )
    assert lines == ["dvc status: train: changed deps: data/processed/train.csv modified"]


def test_trace_names_the_dvc_remote_only_for_outputs_dvc_caches(rendered: Path) -> None:
    from mlrig.core.provenance import resolve as provenance_resolve

    lock = yaml.safe_dump(
        {
            "stages": {
                "ingest": {"outs": [{"path": "data/snapshot/data.csv"}, {"path": RECORD}]},
                "evaluate": {"outs": [{"path": "gate.json"}, {"path": "metrics.json"}]},
            }
        }
    ).encode()
    stored = provenance_resolve.dvc_outputs(lock, (rendered / "dvc.yaml").read_bytes())
    assert stored == {"data/snapshot/data.csv"}  # git holds the record, the gate, the metrics
    assert provenance_resolve.dvc_outputs(lock) == {
        "data/snapshot/data.csv",
        RECORD,
        "gate.json",
        "metrics.json",
    }


# -- partitioned snapshots (the `snapshots` answer) -------------------------------------------
@pytest.fixture(scope="module")
def partitioned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src, ref = bootstrap.template_repo()
    dest = tmp_path_factory.mktemp("render-partitioned") / "churn"
    bootstrap_render.render(
        src, ref, dest, project="churn", outputs=aws_outputs(), snapshots="partitioned"
    )
    return dest


def test_a_partitioned_repo_ingests_into_one_directory_every_stage_reads(
    partitioned: Path, rendered: Path
) -> None:
    stages = yaml.safe_load((partitioned / "dvc.yaml").read_text())["stages"]
    assert list(stages) == STAGES
    ingest = stages["ingest"]
    assert ingest["cmd"] == "PYTHONPATH=src python -m churn.snapshots"
    assert ingest["always_changed"] is True
    assert entries(ingest["outs"]) == {
        "data/snapshots": {"persist": True},
        "data/snapshot_state/watermark.json": {"cache": False, "persist": True},
    }
    for stage in ("validate", "preprocess", "train"):
        deps = entries(stages[stage]["deps"])
        assert "data/snapshots" in deps and "data/snapshot/data.csv" not in deps, stage
    params = yaml.safe_load((partitioned / "params.yaml").read_text())
    assert params["ingest"] == {
        "source": "data/raw/breast_cancer.csv",
        "query": None,
        "watermark": None,
        "keys": ["id"],
    }
    assert _requires(partitioned, "pyarrow")
    answers = yaml.safe_load((partitioned / ".copier-answers.yml").read_text())
    assert answers["snapshots"] == "partitioned"
    # the default rendering has none of it, and answers table
    assert not (rendered / "src" / "churn" / "snapshots.py").exists()
    assert not (rendered / "tests" / "test_snapshots.py").exists()
    assert not _requires(rendered, "pyarrow")  # a comment may name it, no line asks for it
    assert yaml.safe_load((rendered / ".copier-answers.yml").read_text())["snapshots"] == "table"


def test_the_partitioned_repos_own_tests_pass(partitioned: Path) -> None:
    """tests/test_snapshots.py of the rendered repository: new rows only, old partitions
    untouched, nothing new writes nothing, and each bad input one line with nothing written."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "tests/test_snapshots.py",
        ],
        cwd=partitioned,
        env={**os.environ, "PYTHONPATH": str(partitioned / "src")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_the_snapshots_answer_is_table_or_partitioned() -> None:
    from mlrig.core.shared.names import check_template_answers
    from mlrig.errors import UsageError

    base = {"project_name": "churn", "stack": "prod"}
    assert check_template_answers({**base, "snapshots": "table"})["snapshots"] == "table"
    with pytest.raises(UsageError, match="the answer snapshots 'daily' is not table or"):
        check_template_answers({**base, "snapshots": "daily"})


def _requires(repo: Path, name: str) -> bool:
    """Whether a line of repo's requirements.txt asks for the distribution `name`."""
    lines = (repo / "requirements.txt").read_text().splitlines()
    return any(line.split("#")[0].strip().startswith(name) for line in lines)
