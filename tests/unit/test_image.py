"""Pure logic of serving images: pins, loader choice, tags, labels, Dockerfile, ECR, CLI."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig.adapters import ecr
from mlrig.adapters import mlflow as mlflow_adapter
from mlrig.adapters.mlflow_rest import MlflowRest
from mlrig.core.image import build as image
from mlrig.core.image import model as image_model
from mlrig.core.image import run as image_run
from mlrig.core.oci import push as oci_push
from mlrig.core.shared import serving_model
from mlrig.errors import ServiceError, UsageError
from mlrig.main import app

runner = CliRunner()
SK_MLMODEL = {
    "mlflow_version": "3.17.2",
    "flavors": {
        "python_function": {"loader_module": "mlflow.sklearn", "predict_fn": "predict"},
        "sklearn": {"pickled_model": "model.skops", "serialization_format": "skops"},
    },
    "signature": {
        "inputs": json.dumps(
            [
                {"type": "double", "name": "a", "required": True},
                {"type": "long", "name": "b", "required": False},
            ]
        )
    },
}


def test_pins_are_required() -> None:
    ok = serving_model.parse_pinned(
        "# c\nscikit-learn==1.5.2\nPandas[x]==2.2 ; python_version>'3'\n"
    )
    assert [n for _, n in ok] == ["scikit-learn", "pandas"]
    with pytest.raises(UsageError, match="not pinned.*numpy>=1"):
        serving_model.parse_pinned("scikit-learn==1.5\nnumpy>=1\n")
    with pytest.raises(UsageError, match="no requirements"):
        serving_model.parse_pinned("# nothing\n")


def test_sklearn_models_take_the_fast_path_without_mlflow() -> None:
    plan = serving_model.plan(SK_MLMODEL, "mlflow==3.17.2\nscikit-learn==1.5.2\n")
    names = [r.split("==")[0] for r in plan.requirements]
    assert plan.spec["loader"] == "sklearn"
    assert plan.spec["model_file"] == "model.skops"
    assert plan.spec["input_columns"][1] == {"name": "b", "type": "long", "required": False}
    assert "mlflow" not in names and "mlflow-skinny" not in names
    assert {
        "scikit-learn",
        "skops",
        "numpy",
        "pandas",
        "cloudpickle",
        "uvicorn",
        "httptools",
    } <= set(names)
    assert all("==" in r for r in plan.requirements)


def test_requirements_text_is_stable_so_the_layer_caches() -> None:
    a = serving_model.plan(SK_MLMODEL, "scikit-learn==1.5.2\npandas==2.2.3\n")
    b = serving_model.plan(SK_MLMODEL, "pandas==2.2.3\nscikit-learn==1.5.2\n")
    c = serving_model.plan(SK_MLMODEL, "pandas==2.2.3\nscikit-learn==1.5.1\n")
    assert a.requirements_sha256 == b.requirements_sha256 != c.requirements_sha256


def test_other_flavors_use_mlflow_skinny() -> None:
    mlmodel = {
        "mlflow_version": "3.17.2",
        "flavors": {"python_function": {"loader_module": "mlflow.pyfunc.model"}},
    }
    plan = serving_model.plan(mlmodel, "mlflow==3.17.2\ncloudpickle==3.1.1\n")
    assert plan.spec["loader"] == "pyfunc"
    assert "mlflow-skinny==3.17.2" in plan.requirements
    with pytest.raises(UsageError, match="python_function"):
        serving_model.plan({"flavors": {"keras": {}}}, "x==1\n")


def test_tensor_signatures_leave_the_fast_path() -> None:
    tensor = dict(
        SK_MLMODEL,
        signature={
            "inputs": json.dumps(
                [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]
            )
        },
    )
    assert serving_model.plan(tensor, "scikit-learn==1.5.2\n").spec["loader"] == "pyfunc"


def test_labels_carry_provenance_and_no_timestamp() -> None:
    prov = serving_model.Provenance(
        "models:/m/3", "m", "3", "abc123", "f" * 40, None, {"data/raw.csv": "d41d8"}
    )
    labels = prov.labels("0.1.0", "sha")
    assert labels["io.mlrig.mlflow.run-id"] == "abc123"
    assert labels["org.opencontainers.image.revision"] == "f" * 40
    assert labels["io.mlrig.dvc.data"] == "data/raw.csv=d41d8"
    assert labels["io.mlrig.model.version"] == "3"
    assert not any("created" in k for k in labels)


def test_dockerfile_layers_model_last_non_root_with_healthcheck() -> None:
    files = image.serving_assets()
    text = serving_model.render_dockerfile(
        (files / "Dockerfile.tmpl").read_text(), base_image="base:1", mlrig_version="0.1.0"
    )
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith((" ", "#"))]
    assert lines[0] == "FROM base:1 AS runtime" and "FROM base:1 AS deps" in lines
    assert "FROM scratch" in lines  # the shell, apt and pip of the base stay behind
    assert "$$" not in text and "${" not in text
    assert "USER 1000:1000" in lines
    assert any(ln.startswith("HEALTHCHECK") for ln in lines)
    assert not any("model" in ln for ln in lines[lines.index("FROM scratch") :])
    # the dependency layer depends on requirements.txt only
    assert text.index("COPY requirements.txt") < text.index("pip install")


def test_default_tags() -> None:
    assert serving_model.default_tag("Breast Cancer", "4", None) == "mlrig/breast-cancer:v4"
    assert (
        serving_model.default_tag(None, None, "0123456789abcdef") == "mlrig/model:run-0123456789ab"
    )
    labels = {
        "io.mlrig.model.name": "bc",
        "io.mlrig.model.version": "2",
        "io.mlrig.git.commit": "abcdef1234",
    }
    assert oci_push.tags_for(labels, "x") == ["bc-v2", "bc-v2-abcdef1"]
    assert oci_push.tags_for({}, "latest") == ["latest"]


def test_ecr_host_and_token() -> None:
    assert ecr.parse_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com") == (
        "123456789012",
        "eu-west-1",
    )
    with pytest.raises(UsageError):
        ecr.parse_host("127.0.0.1:5000")
    token = base64.b64encode(b"AWS:secret-pass").decode()
    assert ecr.decode_token(token) == ("AWS", "secret-pass")
    assert ecr.data_plane("h.example", "https://127.0.0.1:5000/") == "127.0.0.1:5000"


def test_ecr_cache_is_private_and_expires(mlrig_home: Path) -> None:
    host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    soon = datetime.now(UTC) + timedelta(minutes=5)
    auth = ecr.EcrAuth("AWS", "pw", f"https://{host}", soon)
    ecr._write_cache(host, auth)
    path = ecr.cache_path(host)
    assert path.stat().st_mode & 0o777 == 0o600
    assert ecr._read_cache(host) == auth
    assert not auth.fresh()  # inside the refresh margin: authorization() fetches anew
    assert ecr.EcrAuth("AWS", "pw", "", datetime.now(UTC) + timedelta(hours=1)).fresh()
    path.write_text("{corrupt")
    assert ecr._read_cache(host) is None


def test_cli_rejects_bad_platform(mlrig_home: Path) -> None:
    result = runner.invoke(
        app, ["image", "build", "--model", "models:/m/1", "--platform", "windows/386"]
    )
    assert result.exit_code == 2
    assert "unsupported platform" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "size"),
    [("1g", 1 << 30), ("512M", 512 << 20), ("8192k", 8 << 20), ("8388608", 8 << 20)],
)
def test_memory_limits_in_docker_units(text: str, size: int) -> None:
    assert image_run.memory_bytes(text) == size


@pytest.mark.parametrize(("text", "why"), [("lots", "not a size"), ("1.5g", "not a size"),
                                           ("-1g", "not a size"), ("5m", "minimum")])  # fmt: skip
def test_bad_memory_limits(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        image_run.memory_bytes(text)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),  # noqa: S104 - every interface: reached via loopback
        ("::", "http://[::1]:8080"),
        ("::1", "http://[::1]:8080"),
        ("10.1.2.3", "http://10.1.2.3:8080"),
    ],
)
def test_the_server_is_reached_where_it_binds(host: str, url: str) -> None:
    assert image_run._local_url(image_run.bind_address(host), 8080) == url


def test_the_default_bind_is_loopback_only() -> None:
    import inspect

    assert image_run.DEFAULT_HOST == "127.0.0.1"
    assert inspect.signature(image_run.run).parameters["host"].default == "127.0.0.1"
    with pytest.raises(UsageError, match="not an IP address"):
        image_run.bind_address("localhost")


@pytest.mark.parametrize("uri", ["file:///etc", "/tmp/model", "s3://b/model", "mlruns/0/x"])
def test_build_takes_only_registry_and_run_uris(uri: str) -> None:
    with pytest.raises(UsageError, match="not an MLflow registry or run URI"):
        image_model.check_uri(uri)
    with pytest.raises(UsageError, match="not an MLflow registry or run URI"):
        image_model.describe(uri)


def test_registry_and_run_uris_pass_the_check() -> None:
    for uri in ("models:/m/1", "models:/m@champion", "runs:/0123abcd/model"):
        assert image_model.check_uri(uri) == uri
    assert image_model.describe("runs:/0123abcd/model") == (None, None, "0123abcd")


def test_cli_push_without_stack_or_image(mlrig_home: Path) -> None:
    result = runner.invoke(app, ["image", "push", "--stack", "nope", "img:1"])
    assert result.exit_code == 3 and "no stack named 'nope'" in result.output
    result = runner.invoke(app, ["image", "push"])
    assert result.exit_code == 2 and "which stack?" in result.output


def test_cli_build_outside_a_repo_needs_a_model(
    mlrig_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(UsageError, match="not an mlrig-generated repo"):
        image_model.default_model_uri(tmp_path)
    (tmp_path / ".copier-answers.yml").write_text("project_name: churn\nstack: local\n")
    with pytest.raises(UsageError, match="does not exist|no versions"):
        image_model.default_model_uri(tmp_path)


def test_ecr_fresh_cache_is_used_without_calling_aws(
    mlrig_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no credentials and an endpoint nobody listens on: any AWS call would fail
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    fresh = ecr.EcrAuth("AWS", "cached", f"https://{host}", datetime.now(UTC) + timedelta(hours=6))
    ecr._write_cache(host, fresh)
    assert ecr.authorization(host, endpoint_url="http://127.0.0.1:9") == fresh


@pytest.mark.parametrize(
    "source",
    [
        "s3://bucket/1/models/m-1/artifacts",
        "file:///srv/mlruns/1/m-1",
        "mlflow-artifacts://h:5000/1",
    ],
)
def test_versions_the_proxy_cannot_serve_use_mlflows_client(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setattr(MlflowRest, "download_uri", lambda _self, _name, _version: source)
    seen: list[str] = []
    monkeypatch.setattr(mlflow_adapter, "download_model", lambda uri, _dst: seen.append(uri))
    mlflow_adapter.download_model_version("m", "3", tmp_path, uri="models:/m@champion")
    assert seen == ["models:/m/3"]  # the version provenance resolved, not the alias again


def test_a_tracking_uri_that_is_no_http_server_uses_mlflows_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    seen: list[str] = []
    monkeypatch.setattr(mlflow_adapter, "download_model", lambda uri, _dst: seen.append(uri))
    mlflow_adapter.download_model_version("m", "3", tmp_path, uri="models:/m/3")
    assert seen == ["models:/m/3"]


def test_an_unreachable_tracking_server_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(ServiceError, match="unreachable"):
        image_model.describe("models:/m/3")


def test_a_logged_model_uri_is_built_from_its_source_run(monkeypatch: pytest.MonkeyPatch) -> None:
    logged = "m-" + "0123456789abcdef" * 2
    asked: list[tuple[str, str]] = []

    def source_run(model_id: str, *, uri: str) -> str:
        asked.append((model_id, uri))
        return "f" * 32

    monkeypatch.setattr(mlflow_adapter, "logged_model_run", source_run)
    assert image_model.check_uri(f"models:/{logged}") == f"models:/{logged}"
    assert image_model.describe(f"models:/{logged}") == (None, None, "f" * 32)
    assert asked == [(logged, f"models:/{logged}")]
    with pytest.raises(UsageError, match="m- and 32 hex digits"):
        image_model.describe("models:/m-" + "0" * 31)
    assert len(asked) == 1  # a malformed id never reaches the server


def test_the_logged_model_read_asks_mlflows_logged_models_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Answer:
        status_code = 200

        def json(self) -> dict:
            return {"model": {"info": {"model_id": "m-1", "source_run_id": "e" * 32}}}

    seen: list[tuple[str, str]] = []

    def request(method: str, url: str, **_kw: object) -> Answer:
        seen.append((method, url))
        return Answer()

    rest = MlflowRest("http://127.0.0.1:9")
    monkeypatch.setattr(rest.session, "request", request)
    assert rest.logged_model_run("m-" + "1" * 32) == "e" * 32
    assert seen == [("GET", "http://127.0.0.1:9/api/2.0/mlflow/logged-models/m-" + "1" * 32)]
