"""`mlrig init` / `mlrig update` with real copier, git and DVC (no services needed): what the
generated repo contains, that a failure leaves nothing, and template updates."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlrig import contract
from mlrig.core.bootstrap import init as bootstrap
from mlrig.core.bootstrap import repo as bootstrap_repo
from mlrig.errors import Conflict, ServiceError
from mlrig.main import app
from tests.helpers import aws_outputs, dvc_config, local_index, workflow_schema_errors

pytestmark = pytest.mark.integration
runner = CliRunner()
# the version this mlrig ships: bumped whenever the template changes
TEMPLATE_VERSION = (bootstrap.packaged_template() / "VERSION").read_text().strip()
_major, _minor, *_ = TEMPLATE_VERSION.split(".")
NEXT_VERSION = f"{_major}.{int(_minor) + 1}.0"  # what a newer mlrig would ship


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def aws_repo(mlrig_home: Path, tmp_path: Path) -> Path:
    contract.save(aws_outputs())
    result = runner.invoke(
        app,
        [
            "init",
            str(tmp_path / "churn"),
            "--stack",
            "prod",
            "--no-input",
            "--github-repo",
            "acme/churn",
        ],
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "churn"


def test_init_makes_one_clean_commit_with_the_contract_answers(aws_repo: Path) -> None:
    assert git(aws_repo, "log", "--format=%s").splitlines() == [
        f"Initial commit from mlrig template {TEMPLATE_VERSION}"
    ]
    assert git(aws_repo, "status", "--porcelain") == ""
    answers = yaml.safe_load((aws_repo / ".copier-answers.yml").read_text())
    assert answers["project_name"] == "churn" and answers["stack"] == "prod"
    assert answers["github_repo"] == "acme/churn"
    tracked = git(aws_repo, "ls-files").split()
    for path in (
        "params.yaml",
        "dvc.yaml",
        "data/raw/breast_cancer.csv.dvc",
        "Dockerfile",
        ".gitignore",
        ".dvcignore",
        "README.md",
        ".github/workflows/ci.yml",
        "src/churn/train.py",
        "src/churn/tracking.py",
        "src/churn/ingest.py",
        "src/churn/validate.py",
        "src/churn/gate.py",
        "data/schema.yaml",
        "tests/test_data.py",
        "tests/test_ingest.py",
        "tests/test_validate.py",
        "tests/test_gate.py",
        "tests/test_features.py",
        "tests/test_pipeline_smoke.py",
        "tests/test_tracking.py",
    ):
        assert path in tracked, path
    assert "data/raw/breast_cancer.csv" not in tracked  # DVC tracks it, git only its pointer
    dvc_file = yaml.safe_load((aws_repo / "data/raw/breast_cancer.csv.dvc").read_text())
    assert dvc_file["outs"][0]["md5"] == bootstrap_md5(aws_repo / "data/raw/breast_cancer.csv")
    dvc_yaml = yaml.safe_load((aws_repo / "dvc.yaml").read_text())
    assert list(dvc_yaml["stages"]) == ["ingest", "validate", "preprocess", "train", "evaluate"]


def bootstrap_md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_endpoints_only_in_the_ignored_config_local(aws_repo: Path) -> None:
    shared = dvc_config(aws_repo / ".dvc/config")
    assert shared['remote "storage"']["url"] == "s3://bucket/dvc"
    assert dict(shared['remote "storage"']) == {"url": "s3://bucket/dvc"}
    assert shared["core"]["remote"] == "storage"
    assert shared["core"]["analytics"] == "False"
    assert shared["core"]["check_update"] == "False"
    local = dvc_config(aws_repo / ".dvc/config.local")
    assert local['remote "storage"']["endpointurl"] == "http://127.0.0.1:9"
    git(aws_repo, "check-ignore", "-q", ".dvc/config.local")  # raises if not ignored
    assert "127.0.0.1:9" not in git(aws_repo, "grep", "-I", "-e", "", "HEAD", "--", ".")


def test_aws_ci_workflow_uses_oidc_and_reports(aws_repo: Path) -> None:
    wf = yaml.safe_load((aws_repo / ".github/workflows/ci.yml").read_text())
    assert wf["permissions"]["id-token"] == "write"
    assert set(wf["jobs"]) == {"pipeline", "retrain", "image"}
    assert set(wf[True]) >= {"push", "pull_request"}  # YAML 1.1 reads the key `on` as True
    steps = wf["jobs"]["pipeline"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    for command in (
        "dvc pull",
        "pytest",
        "dvc repro",
        "dvc metrics diff origin/main",
        "dvc params diff origin/main",
        "gh pr comment",
    ):
        assert command in runs, command
    creds = [
        s
        for s in steps
        if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials")
    ]
    assert creds[0]["with"]["role-to-assume"] == "arn:aws:iam::123456789012:role/ci"
    text = (aws_repo / ".github/workflows/ci.yml").read_text()
    assert "aws-access-key-id" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    assert "repo:acme/churn:*" in text  # the OIDC subject the role must trust
    # on main, a run that changed dvc.lock is kept as an experiment on origin, restorable
    share = next(s for s in steps if "dvc exp push origin" in s.get("run", ""))
    assert "dvc exp save" in share["run"] and "refs/heads/main" in share["if"]
    assert wf["jobs"]["pipeline"]["permissions"]["contents"] == "write"
    image = wf["jobs"]["image"]
    assert "pipeline" in image["needs"] and "refs/heads/main" in image["if"]
    image_runs = "\n".join(s.get("run", "") for s in image["steps"])
    assert "models:/churn@champion" in image_runs  # test_retrain_workflow checks the rest


def test_local_stack_workflow_says_it_needs_aws(mlrig_home: Path, tmp_path: Path) -> None:
    local = aws_outputs("dev").model_copy(update={"kind": "local", "ci_role_arn": None})
    contract.save(local)
    repo = bootstrap.init(tmp_path / "fraud", "dev").path
    text = (repo / ".github/workflows/ci.yml").read_text()
    wf = yaml.safe_load(text)
    assert "id-token" not in wf["permissions"]
    assert "needs an AWS stack" in text
    assert any("pytest" in s.get("run", "") for s in wf["jobs"]["tests"]["steps"])


def test_a_failure_halfway_leaves_nothing(
    mlrig_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract.save(aws_outputs())

    def broken_add(root: Path, *targets: str) -> None:
        raise ServiceError("dvc: add failed: injected")

    monkeypatch.setattr(bootstrap_repo.dvc, "add", broken_add)
    with pytest.raises(ServiceError):
        bootstrap.init(tmp_path / "new", "prod")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ServiceError):
        bootstrap.init(empty, "prod")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mlrig-home"]
    assert list(empty.iterdir()) == []


def test_force_adds_next_to_existing_files_but_never_overwrites(
    mlrig_home: Path, tmp_path: Path
) -> None:
    contract.save(aws_outputs())
    target = tmp_path / "churn"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    result = bootstrap.init(target, "prod", force=True)
    assert (target / "notes.txt").read_text() == "mine\n"
    assert git(target, "status", "--porcelain").strip() == "?? notes.txt"
    assert result.commit == git(target, "rev-parse", "HEAD").strip()

    other = tmp_path / "other"
    other.mkdir()
    (other / "params.yaml").write_text("mine: true\n")
    with pytest.raises(Conflict, match="params.yaml"):
        bootstrap.init(other, "prod", force=True, name="other")
    assert [p.name for p in other.iterdir()] == ["params.yaml"]
    assert (other / "params.yaml").read_text() == "mine: true\n"
    with pytest.raises(Conflict, match="already a git or DVC repository"):
        bootstrap.init(target, "prod", force=True)


# -- updates ---------------------------------------------------------------------------------
def _new_template_version(template: Path, version: str) -> None:
    (template / "VERSION").write_text(version + "\n")


def test_update_merges_a_newer_template(
    mlrig_home: Path, tmp_path: Path, template_copy: Path
) -> None:
    contract.save(aws_outputs())
    repo = bootstrap.init(tmp_path / "churn", "prod", template_dir=template_copy).path
    # the user edits one file, the template changes another
    readme = repo / "README.md"
    readme.write_text(readme.read_text() + "\nOur notes.\n")
    git(repo, "commit", "-qam", "notes")
    _new_template_version(template_copy, NEXT_VERSION)
    dvcignore = template_copy / "template/.dvcignore"
    dvcignore.write_text(dvcignore.read_text() + "notebooks/.ipynb_checkpoints/\n")

    result = bootstrap.update(repo, template_dir=template_copy)
    assert (result.old_version, result.new_version) == (TEMPLATE_VERSION, NEXT_VERSION)
    assert ".dvcignore" in result.changed
    assert "notebooks/.ipynb_checkpoints/" in (repo / ".dvcignore").read_text()
    assert readme.read_text().endswith("Our notes.\n")
    answers = yaml.safe_load((repo / ".copier-answers.yml").read_text())
    assert answers["_commit"] == NEXT_VERSION and answers["project_name"] == "churn"

    # the CLI on an up-to-date, committed repo: nothing to do
    git(repo, "commit", "-qam", f"template {NEXT_VERSION}")
    assert bootstrap.update(repo, template_dir=template_copy).changed == []


def test_update_moves_the_mlrig_pin_and_says_what_the_template_changed(
    mlrig_home: Path,
    tmp_path: Path,
    template_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from mlrig.core.bootstrap import _update

    contract.save(aws_outputs())
    # the package index pip is configured with: each release's wheel, listed with its sha256
    files = {"mlrig-1.0.0-py3-none-any.whl": b"1.0.0", "mlrig-1.1.0-py3-none-any.whl": b"1.1.0"}
    index = local_index(files)
    monkeypatch.setenv("PIP_INDEX_URL", index.__enter__())
    request.addfinalizer(lambda: index.__exit__(None, None, None))
    monkeypatch.setattr(bootstrap, "__version__", "1.0.0")  # the mlrig that ran `mlrig init`
    made = bootstrap.init(tmp_path / "churn", "prod", template_dir=template_copy)
    repo = made.path
    workflow = repo / ".github/workflows/ci.yml"
    assert yaml.safe_load(workflow.read_text())["env"]["MLRIG_VERSION"] == "1.0.0"
    assert made.pin is not None and made.pin.sha256 == (hashlib.sha256(b"1.0.0").hexdigest(),)
    assert yaml.safe_load(workflow.read_text())["env"]["MLRIG_SHA256"] == made.pin.answer

    # a newer mlrig ships a newer template with its changelog section
    _new_template_version(template_copy, NEXT_VERSION)
    log = template_copy / "CHANGELOG.md"
    log.write_text(
        log.read_text().replace(
            f"## [{TEMPLATE_VERSION}]",
            f"## [{NEXT_VERSION}]\n- params.yaml says more.\n\n## [{TEMPLATE_VERSION}]",
        )
    )
    monkeypatch.setattr(_update, "__version__", "1.1.0")
    result = bootstrap.update(repo, template_dir=template_copy)
    assert (result.old_mlrig, result.new_mlrig) == ("1.0.0", "1.1.0")
    assert result.notes == [(NEXT_VERSION, "- params.yaml says more.")]
    new_sha = hashlib.sha256(b"1.1.0").hexdigest()  # the moved pin's hashes, asked anew
    assert yaml.safe_load(workflow.read_text())["env"]["MLRIG_VERSION"] == "1.1.0"
    assert yaml.safe_load(workflow.read_text())["env"]["MLRIG_SHA256"] == new_sha
    answers = yaml.safe_load((repo / ".copier-answers.yml").read_text())
    assert answers["mlrig_version"] == "1.1.0" and answers["_commit"] == NEXT_VERSION
    assert answers["mlrig_sha256"] == new_sha


def test_update_by_a_development_mlrig_moves_the_pin_and_says_how_ci_gets_it(
    aws_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same template, another mlrig: only the pin moves; the command says where to."""
    from mlrig.core.bootstrap import _update

    monkeypatch.setattr(_update, "__version__", "9.9.1.dev3+gabc1234")
    result = runner.invoke(app, ["update", str(aws_repo)])
    assert result.exit_code == 0, result.output
    assert ".github/workflows/ci.yml" in result.output
    from mlrig.version import __version__

    assert (
        f"mlrig_version, the mlrig CI installs: {__version__} -> 9.9.1.dev3+gabc1234 "
        "(a development version: set MLRIG_PIP_SPEC)"
    ) in result.output
    workflow = yaml.safe_load((aws_repo / ".github/workflows/ci.yml").read_text())
    assert workflow["env"]["MLRIG_VERSION"] == "9.9.1.dev3+gabc1234"


def test_update_conflicts_exit_non_zero_listing_files(
    mlrig_home: Path, tmp_path: Path, template_copy: Path
) -> None:
    contract.save(aws_outputs())
    repo = bootstrap.init(tmp_path / "churn", "prod", template_dir=template_copy).path
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("test_size: 0.2", "test_size: 0.3"))
    git(repo, "commit", "-qam", "bigger test set")
    _new_template_version(template_copy, NEXT_VERSION)
    tparams = template_copy / "template/params.yaml.jinja"
    tparams.write_text(tparams.read_text().replace("test_size: 0.2", "test_size: 0.25"))
    bootstrap.template_repo(template_copy)  # what a newer mlrig install would ship
    with pytest.raises(Conflict) as err:
        bootstrap.update(repo, template_dir=template_copy)
    assert "params.yaml" in err.value.message
    assert "<<<<<<< before updating" in params.read_text()


def test_update_refuses_a_dirty_repo(aws_repo: Path) -> None:
    (aws_repo / "params.yaml").write_text("changed: true\n")
    result = runner.invoke(app, ["update", str(aws_repo)])
    assert result.exit_code == 7
    assert "uncommitted changes" in result.output


def test_rendered_workflows_match_the_github_actions_schema(aws_repo: Path, tmp_path: Path) -> None:
    assert workflow_schema_errors(aws_repo / ".github/workflows/ci.yml") == []
    local = aws_outputs("dev").model_copy(update={"kind": "local", "ci_role_arn": None})
    contract.save(local)
    repo = bootstrap.init(tmp_path / "fraud", "dev").path
    assert workflow_schema_errors(repo / ".github/workflows/ci.yml") == []
    broken = tmp_path / "broken.yml"
    broken.write_text(
        (repo / ".github/workflows/ci.yml").read_text().replace("runs-on:", "runs_on:")
    )
    assert workflow_schema_errors(broken)  # the check can fail


def test_update_rewires_to_another_stack(aws_repo: Path) -> None:
    other = aws_outputs("dev").model_copy(
        update={
            "kind": "local",
            "ci_role_arn": None,
            "region": None,
            "dvc_remote": aws_outputs().dvc_remote.model_copy(
                update={"url": "/srv/dvc-remote", "endpoint_url": None, "region": None}
            ),
        }
    )
    contract.save(other)
    result = runner.invoke(app, ["update", str(aws_repo), "--stack", "dev"])
    assert result.exit_code == 0, result.output
    answers = yaml.safe_load((aws_repo / ".copier-answers.yml").read_text())
    assert answers["stack"] == "dev" and answers["stack_kind"] == "local"
    assert dvc_config(aws_repo / ".dvc/config")['remote "storage"'] == {"url": "/srv/dvc-remote"}
    assert "needs an AWS stack" in (aws_repo / ".github/workflows/ci.yml").read_text()
    assert ".github/workflows/ci.yml" in result.output
