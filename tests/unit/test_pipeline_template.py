"""The rendered template 1.4.0 pipeline: ingest -> validate -> preprocess -> train -> evaluate,
the params the retraining loop relies on, the schema shipped for the bundled dataset, and how
checkout reads `dvc status` of a stage that always runs."""

from __future__ import annotations

import re
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
