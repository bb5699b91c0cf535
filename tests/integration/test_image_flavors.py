"""A zoo of model flavors, each logged by plain MLflow code to the session's local stack, built
into a serving image once (which `image build` itself starts and checks before tagging) and
asked the same rows as `mlflow.pyfunc.load_model(...).predict`; the answers must be equal.
Also what a build refuses: a model whose import fails in the image, and a requirement no
package index has — one line each, nothing tagged."""

from __future__ import annotations

import ctypes
import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters import http
from mlrig.core.image import build as image
from mlrig.core.image import run as image_run
from mlrig.core.stack.local.stack import free_port
from mlrig.main import app
from tests.helpers import ZOO, log_flavor, zoo_pyfunc_pins

pytestmark = pytest.mark.integration
runner = CliRunner()
XGBOOST_MAX_BYTES = 450_000_000  # issue 31: CPU images leave the CUDA wheels out


def _body(rows: Any) -> str:
    import pandas

    if isinstance(rows, pandas.DataFrame):
        return json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split"))})
    return json.dumps({"inputs": rows.tolist()})


@pytest.fixture(scope="module")
def zoo(image_env: dict) -> Iterator[dict[str, dict[str, Any]]]:
    """Each flavor logged in its own run of one experiment; its image built on first use
    (one build per flavor for the module). {flavor: {"uri", "rows", "built"}}."""
    import mlflow

    mlflow.set_experiment("image-flavors")
    models: dict[str, dict[str, Any]] = {}
    for flavor in ZOO:
        with mlflow.start_run(run_name=f"zoo-{flavor}"):
            uri, rows = log_flavor(flavor, f"zoo-{flavor}")
        models[flavor] = {"uri": uri, "rows": rows}
    yield models
    for entry in models.values():
        if "built" in entry:
            docker_adapter.remove_tag(entry["built"].ref)


def built(zoo: dict[str, dict[str, Any]], flavor: str) -> Any:
    entry = zoo[flavor]
    if "built" not in entry:
        entry["built"] = image.build(entry["uri"], tag=f"mlrig-test/zoo-{flavor}:1")
    return entry["built"]


@pytest.mark.parametrize("flavor", list(ZOO))
def test_each_flavor_answers_as_mlflow_predicts(zoo: dict, flavor: str) -> None:
    import mlflow
    from mlflow.pyfunc import scoring_server

    got = built(zoo, flavor)
    entry = zoo[flavor]
    model = mlflow.pyfunc.load_model(entry["uri"])
    body = _body(entry["rows"])
    want = scoring_server.invocations(
        body, "application/json", model, model.metadata.get_input_schema()
    )
    assert want.status == 200, want.response
    running = image_run.run(got.ref, port=free_port())
    try:
        resp = http.post(
            f"{running.url}/invocations", body.encode(), content_type="application/json"
        )
    finally:
        docker_adapter.remove_container(running.container)
    assert resp.status == 200, resp.text
    served = resp.json()["predictions"]
    assert served == json.loads(want.response)["predictions"]
    assert len(served) == len(entry["rows"])


def test_xgboost_image_leaves_the_cuda_wheels_out(zoo: dict) -> None:
    got = built(zoo, "xgboost")
    assert got.size <= XGBOOST_MAX_BYTES, f"{got.size / 1e6:.0f} MB"
    listing = docker_adapter.client().containers.run(
        got.ref,
        entrypoint=["/opt/venv/bin/python", "-c"],
        command=[
            "import importlib.metadata as m; print(sorted(d.metadata['Name'] for d in "
            "m.distributions()))"
        ],
        network_mode="host",
        remove=True,
    )
    names = listing.decode()
    assert "xgboost-cpu" in names and "nvidia" not in names.lower(), names


def _log_broken(
    registered: str, requirements: list[str] | None = None, library: str | None = None
) -> str:
    """A pyfunc model whose load fails in the image on a missing shared library, or whose
    requirements name a wheel no index has; its runs:/ URI."""
    import mlflow
    import pandas

    class NeedsLibrary(mlflow.pyfunc.PythonModel):
        def load_context(self, context: Any) -> None:
            if library:
                ctypes.CDLL(library)

        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input["x"]

    mlflow.set_experiment("image-flavors")
    with mlflow.start_run(run_name="zoo-broken"):
        info = mlflow.pyfunc.log_model(
            name="model",
            registered_model_name=registered,
            python_model=NeedsLibrary(),
            input_example=pandas.DataFrame({"x": [1.0]}),
            pip_requirements=requirements or zoo_pyfunc_pins(),
        )
    return f"models:/{registered}/{info.registered_model_version}"


def _one_line_error(result: Any) -> str:
    assert result.exit_code != 0, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == errors[0]
    return errors[0]


def _leftovers(tag: str) -> tuple[bool, list[str]]:
    """(is tag on the engine, build-check containers still there)."""
    containers = docker_adapter.client().containers.list(
        all=True, filters={"name": "mlrig-build-check-"}
    )
    return docker_adapter.image_exists(tag), [c.name for c in containers]


def _model_images(uri: str) -> list[str]:
    """Images on the engine labelled as serving uri (the base images carry no such label)."""
    found = docker_adapter.client().images.list(filters={"label": f"io.mlrig.model.uri={uri}"})
    return [img.id for img in found]


def test_a_model_that_cannot_load_in_the_image_is_never_tagged(image_env: dict) -> None:
    uri = _log_broken("zoo-broken", library="libmlrig-absent.so.1")
    tag = "mlrig-test/zoo-broken:1"
    result = runner.invoke(app, ["image", "build", "-m", uri, "--tag", tag])
    line = _one_line_error(result)
    assert "was not tagged" in line
    assert "OSError: libmlrig-absent.so.1: cannot open shared object file" in line
    assert "system library libmlrig-absent.so.1" in line
    assert _leftovers(tag) == (False, [])
    assert _model_images(uri) == []  # the untagged image the build checked is gone too


def test_a_requirement_no_index_has_is_one_line_and_nothing_is_tagged(image_env: dict) -> None:
    pins = [*zoo_pyfunc_pins(), "mlrig-test-absent-wheel==1.0.0"]
    uri = _log_broken("zoo-absent", requirements=pins)
    tag = "mlrig-test/zoo-absent:1"
    result = runner.invoke(app, ["image", "build", "-m", uri, "--tag", tag])
    line = _one_line_error(result)
    assert "requirement mlrig-test-absent-wheel==1.0.0 cannot be installed" in line
    assert "nothing was tagged" in line
    assert _leftovers(tag) == (False, [])
