"""An adopted repository's retrain declaration without services: the `retrain` block checked
against the schema and the team's dvc.yaml (the example-get-started fixture's), the score
read from the metrics file the pipeline wrote, and the gate's decision against the
champion's run, read back from a registry that answers like MLflow's REST client."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlrig.adapters.mlflow_rest import ModelVersion, Run
from mlrig.core.bootstrap import declaration
from mlrig.core.retrain import _gate
from mlrig.core.retrain import _repo as retrain_repo
from mlrig.core.retrain import state as retrain_state
from mlrig.errors import ConfigError
from mlrig.main import app
from tests.helpers import GETTING_STARTED

runner = CliRunner()
GOOD: dict[str, Any] = {
    "data_stages": ["prepare"],
    "gate": {"metric": "eval/metrics.json:roc_auc", "direction": "max"},
}


@pytest.fixture
def team(tmp_path: Path) -> Path:
    root = tmp_path / "team"
    root.mkdir()
    shutil.copy(GETTING_STARTED / "dvc.yaml", root / "dvc.yaml")
    return root


def refused(raw: object, root: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        declaration.parse(raw, root)
    assert "\n" not in caught.value.message
    assert caught.value.message.startswith(".copier-answers.yml retrain: ")
    return caught.value.message


def with_gate(**gate: object) -> dict[str, Any]:
    return {**GOOD, "gate": {**GOOD["gate"], **gate}}


def test_the_documented_declaration_is_accepted(team: Path) -> None:
    declared = declaration.parse({**GOOD, "gate": {**GOOD["gate"], "min_improvement": 0.01}}, team)
    assert declared.data_stages == ("prepare",) and declared.model is None
    assert (declared.gate.file, declared.gate.key) == ("eval/metrics.json", "roc_auc")
    assert declared.gate.direction == "max" and declared.gate.min_improvement == 0.01


def test_an_unknown_stage_is_refused_naming_the_stages_there_are(team: Path) -> None:
    said = refused({**GOOD, "data_stages": ["ingest"]}, team)
    assert "data stage 'ingest' is not in dvc.yaml" in said
    assert "(its stages: evaluate, featurize, prepare, train)" in said
    assert "data_stages: Tuple should have at least 1 item" in refused(
        {**GOOD, "data_stages": []}, team
    )
    assert "data_stages.0" in refused({**GOOD, "data_stages": ["a b"]}, team)


def test_a_metric_no_stage_produces_is_refused(team: Path) -> None:
    said = refused(with_gate(metric="eval/other.json:roc_auc"), team)
    assert "gate.metric file eval/other.json is written by no stage of dvc.yaml" in said
    # an output that is a plot, or a dependency, is not a metrics file a stage writes
    assert "written by no stage" in refused(with_gate(metric="eval/plots/roc.csv:fpr"), team)
    assert "written by no stage" in refused(with_gate(metric="data/data.csv:x1"), team)
    # a stage's plain outs may hold the metrics too
    assert declaration.parse(with_gate(metric="./model.pkl:x"), team).gate.file == "./model.pkl"
    assert "is not a metrics key" in refused(with_gate(metric="eval/metrics.json:$(id)"), team)
    assert "gate.metric" in refused(with_gate(metric="eval/metrics.json"), team)


@pytest.mark.parametrize("direction", ["maximize", "MAX", "", None, 1])
def test_a_direction_other_than_min_or_max_is_refused(team: Path, direction: object) -> None:
    said = refused(with_gate(direction=direction), team)
    assert said.startswith(".copier-answers.yml retrain: gate.direction")
    assert "'max' or 'min'" in said


@pytest.mark.parametrize(
    "metric", ["../outside/metrics.json:roc_auc", "/etc/metrics.json:roc_auc", "~/m.json:roc_auc"]
)
def test_a_metric_path_escaping_the_repository_is_refused(team: Path, metric: str) -> None:
    assert "is not a path inside the repository" in refused(with_gate(metric=metric), team)


def test_a_metric_file_behind_a_symlink_out_of_the_repository_is_refused(
    team: Path, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (team / "eval").symlink_to(tmp_path / "elsewhere")
    said = refused(GOOD, team)
    assert "gate.metric 'eval/metrics.json' is not a path inside the repository" in said


def test_other_bad_fields_are_one_line_each(team: Path) -> None:
    assert "greater than or equal to 0" in refused(with_gate(min_improvement=-0.1), team)
    assert "gate.min_improvement" in refused(with_gate(min_improvement=float("nan")), team)
    assert "Extra inputs are not permitted" in refused({**GOOD, "stages": ["x"]}, team)
    assert "model 'Other Model'" in refused({**GOOD, "model": "Other Model"}, team)
    assert "Input should be a valid dictionary" in refused(["prepare"], team)
    (team / "dvc.yaml").write_text("stages: [unclosed\n")
    assert "dvc.yaml cannot be read as YAML" in refused(GOOD, team)


def adopted_repo(root: Path, block: str) -> Path:
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".dvc").mkdir()
    (root / ".copier-answers.yml").write_text(
        f"_adopted: true\nproject_name: getting_started\nstack: local\n{block}"
    )
    return root


def test_the_plan_of_an_adopted_repository_comes_from_its_declaration(team: Path) -> None:
    block = "retrain:\n  data_stages: [prepare]\n  gate: {metric: 'eval/metrics.json:roc_auc', "
    adopted_repo(team, block + "direction: min}\n")
    plan = retrain_repo.plan(team)
    assert plan.model == "getting_started" and plan.data_stages == {"prepare"}
    assert plan.declared is not None and plan.declared.gate.direction == "min"


def test_a_bad_declaration_stops_retrain_in_one_line_before_anything_runs(team: Path) -> None:
    block = "retrain:\n  data_stages: [fetch]\n  gate: {metric: 'eval/metrics.json:roc_auc', "
    adopted_repo(team, block + "direction: max}\n")
    before = sorted(p.relative_to(team) for p in team.rglob("*"))
    result = runner.invoke(app, ["retrain", "--repo", str(team)])
    assert result.exit_code == 3, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "retrain: data stage 'fetch' is not in dvc.yaml" in lines[0]
    assert sorted(p.relative_to(team) for p in team.rglob("*")) == before


def test_the_retrain_block_is_read_only_in_an_adopted_answers_file(team: Path) -> None:
    """A generated repository's answers are the template's questions: no block there."""
    subprocess.run(["git", "init", "-q", str(team)], check=True)
    (team / ".copier-answers.yml").write_text(
        "project_name: churn\nstack: local\nretrain: {data_stages: [x]}\n"
    )
    with pytest.raises(ConfigError, match="unknown answer 'retrain'"):
        retrain_repo.plan(team)


# -- the candidate's score, as the pipeline wrote it ------------------------------------------
def gate(metric: str = "eval/metrics.json:roc_auc", **more: Any) -> declaration.Gate:
    return declaration.Gate(metric=metric, direction=more.pop("direction", "max"), **more)


def test_the_score_is_read_from_json_or_yaml_and_through_nested_keys(tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval/metrics.json").write_text(json.dumps({"avg_prec": {"test": 0.75}}))
    assert _gate.candidate_score(tmp_path, gate("eval/metrics.json:avg_prec.test")) == 0.75
    (tmp_path / "eval/metrics.json").write_text(json.dumps({"a.b": 2}))
    assert _gate.candidate_score(tmp_path, gate("eval/metrics.json:a.b")) == 2.0
    (tmp_path / "m.yaml").write_text("roc_auc: 0.5\n")
    assert _gate.candidate_score(tmp_path, gate("m.yaml:roc_auc")) == 0.5


@pytest.mark.parametrize("text", ['{"auc": 0.9}', '{"roc_auc": "0.9"}', '{"roc_auc": true}'])
def test_a_score_that_is_not_there_or_not_a_number_is_one_line(tmp_path: Path, text: str) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval/metrics.json").write_text(text)
    with pytest.raises(ConfigError, match=r"eval/metrics.json has no number at 'roc_auc'"):
        _gate.candidate_score(tmp_path, gate())


def test_a_nan_score_or_no_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the pipeline wrote no eval/metrics.json"):
        _gate.candidate_score(tmp_path, gate())
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval/metrics.json").write_text('{"roc_auc": NaN}')
    with pytest.raises(ConfigError, match="has no number"):
        _gate.candidate_score(tmp_path, gate())


# -- the decision, against the champion's run ---------------------------------------------------
class Registry:
    """MLflow's registry as MlflowRest answers: versions, runs with tags and metrics, aliases."""

    def __init__(self, retrain_id: str) -> None:
        self.retrain_id = retrain_id
        self.versions: dict[str, ModelVersion] = {}
        self.runs: dict[str, Run] = {}
        self.alias: str | None = None
        self.logged: dict[str, Any] = {}

    def add(self, version: str, *, ours: bool, score: float | None = None) -> None:
        tags = {retrain_state.RUN_TAG: self.retrain_id} if ours else {}
        metrics = {"mlrig.gate.roc_auc": score} if score is not None else {}
        self.runs[f"run{version}"] = Run(f"run{version}", "1", {}, metrics, tags)
        self.versions[version] = ModelVersion("getting_started", version, f"run{version}")

    def model_versions_created_since(self, name: str, since_ms: int) -> list[ModelVersion]:
        return list(self.versions.values())

    def model_version(self, name: str, version: str) -> ModelVersion:
        return self.versions[version]

    def run(self, run_id: str) -> Run:
        return self.runs[run_id]

    def log_batch(self, run_id: str, *, metrics: Any = (), tags: Any = None) -> None:
        self.logged = {"run": run_id, "metrics": list(metrics), "tags": dict(tags or {})}

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.alias = version


def decide(tmp_path: Path, registry: Registry, champion: str | None, **more: Any) -> dict:
    (tmp_path / "eval").mkdir(exist_ok=True)
    (tmp_path / "eval/metrics.json").write_text('{"roc_auc": 0.8}')
    declared = declaration.Declaration(data_stages=("prepare",), gate=gate(**more))
    saved = retrain_state.SavedState(
        pid=1,
        head="a" * 40,
        branch="main",
        model="getting_started",
        champion=champion,
        started=1.0,
        retrain_id=registry.retrain_id,
    )
    registry.alias = champion
    return _gate.run(registry, tmp_path, declared, saved)  # type: ignore[arg-type]


def test_no_champion_promotes_and_the_score_goes_to_the_candidates_run(tmp_path: Path) -> None:
    registry = Registry("b" * 32)
    registry.add("1", ours=True)
    result = decide(tmp_path, registry, None)
    assert result["verdict"] == "promoted" and result["reason"] == "no champion yet"
    assert registry.alias == "1" and registry.logged["run"] == "run1"
    assert registry.logged["metrics"][0][:2] == ("mlrig.gate.roc_auc", 0.8)
    assert registry.logged["tags"]["mlrig.gate.verdict"] == "promoted"


@pytest.mark.parametrize(
    ("champion_score", "more", "verdict"),
    [
        (0.7, {}, "promoted"),
        (0.8, {}, "kept"),  # a tie keeps the champion
        (0.75, {"min_improvement": 0.1}, "kept"),
        (0.9, {"direction": "min"}, "promoted"),
        (0.7, {"direction": "min"}, "kept"),
    ],
)
def test_the_candidate_must_beat_the_champions_run_by_the_margin(
    tmp_path: Path, champion_score: float, more: dict, verdict: str
) -> None:
    registry = Registry("c" * 32)
    registry.add("1", ours=False, score=champion_score)
    registry.add("2", ours=True)
    result = decide(tmp_path, registry, "1", **more)
    assert result["verdict"] == verdict and result["champion"] == champion_score
    assert registry.alias == ("2" if verdict == "promoted" else "1")


def test_a_champion_without_a_score_is_replaced_and_one_with_nan_stops(tmp_path: Path) -> None:
    registry = Registry("d" * 32)
    registry.add("1", ours=False)  # promoted by hand: its run has no gate score
    registry.add("2", ours=True)
    result = decide(tmp_path, registry, "1")
    assert result["verdict"] == "promoted" and "has no mlrig.gate.roc_auc" in result["reason"]
    registry.add("1", ours=False, score=float("nan"))
    with pytest.raises(ConfigError, match="holds mlrig.gate.roc_auc = nan, not a finite number"):
        decide(tmp_path, registry, "1")


def test_a_run_that_registered_no_version_or_two_is_not_a_candidate(tmp_path: Path) -> None:
    registry = Registry("e" * 32)
    registry.add("1", ours=False, score=0.5)
    result = decide(tmp_path, registry, "1")
    assert result["verdict"] == "kept" and result["version"] is None and registry.alias == "1"
    registry.add("2", ours=True)
    registry.add("3", ours=True)
    with pytest.raises(ConfigError, match=r"registered 2 versions of getting_started \(2, 3\)"):
        decide(tmp_path, registry, "1")


def test_retrain_options_go_with_adopt_only(tmp_path: Path) -> None:
    args = ["--retrain-stage", "fetch", "--gate-metric", "m.json:auc", "--gate-direction", "max"]
    result = runner.invoke(app, ["init", str(tmp_path / "new"), "--stack", "x", *args])
    assert result.exit_code == 2, result.output
    assert "--retrain-stage and --gate-* go with --adopt" in " ".join(result.output.split())
    assert not (tmp_path / "new").exists()
