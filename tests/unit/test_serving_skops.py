"""A skops model's exact allow-list: computed by the build from the file (every type it holds,
refused when one is neither trusted by skops nor listed by the model), and the server's load
with that list and skops' default trust off (no sweep of scikit-learn at start)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlrig.core.image import build as image
from mlrig.errors import UsageError
from tests.helpers import breast_cancer_pipeline, load_serving_module

TREE = "sklearn.tree._tree.Tree"


def save(model: Any, path: Path) -> Path:
    import skops.io

    skops.io.dump(model, path)
    return path


@pytest.fixture(scope="module")
def logreg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    model, x = breast_cancer_pipeline()
    return save(model, tmp_path_factory.mktemp("m") / "model.skops"), model, x


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.ensemble import RandomForestClassifier

    model, x = breast_cancer_pipeline()
    trees = RandomForestClassifier(n_estimators=2, max_depth=2, random_state=0)
    return save(trees.fit(x, model.predict(x)), tmp_path_factory.mktemp("f") / "model.skops")


def test_the_list_is_every_type_the_file_holds(logreg: tuple[Path, Any, Any]) -> None:
    found = image.skops_types(logreg[0], None)
    assert found is not None
    assert {
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.linear_model._logistic.LogisticRegression",
        "numpy.ndarray",
    } <= set(found)
    assert not any("ensemble" in t or "cluster" in t for t in found)


def test_a_type_skops_does_not_trust_is_refused_unless_the_model_lists_it(forest: Path) -> None:
    with pytest.raises(UsageError, match=TREE):
        image.skops_types(forest, None)
    with pytest.raises(UsageError, match=TREE):
        image.skops_types(forest, ["sklearn.tree._classes.DecisionTreeClassifier"])
    found = image.skops_types(forest, [TREE])
    assert found is not None and TREE in found


def test_a_file_that_is_not_skops_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "model.skops"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a readable skops file"):
        image.skops_types(bad, None)


# The server's load runs in a fresh interpreter: skops' defaults are decided when skops is
# first imported, which this process (MLflow, the build side) already did.
LOAD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from mlrig_serve.scoring import Model
try:
    model = Model(sys.argv[2])
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    raise SystemExit(0)
import numpy as np
defaults = sys.modules["skops.io._trusted_types"]
print(json.dumps({
    "predictions": model.predict_fn(np.asarray(json.loads(sys.argv[3]))).tolist(),
    "defaults": type(defaults).__name__,
    "swept": "sklearn.ensemble" in sys.modules,
}))
"""


def server_load(model_dir: Path, rows: list[list[float]]) -> dict[str, Any]:
    package = image.serving_assets()
    done = subprocess.run(
        [sys.executable, "-B", "-c", LOAD, str(package), str(model_dir), json.dumps(rows)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def model_dir(tmp_path: Path, skops_file: Path, spec: dict[str, Any]) -> Path:
    (tmp_path / "model.skops").write_bytes(skops_file.read_bytes())
    base = {"loader": "sklearn", "model_file": "model.skops", "serialization_format": "skops"}
    (tmp_path / "mlrig-serving.json").write_text(json.dumps({**base, **spec}))
    return tmp_path


def test_the_server_loads_with_the_list_and_without_skops_defaults(
    tmp_path: Path, logreg: tuple[Path, Any, Any]
) -> None:
    path, model, x = logreg
    exact = image.skops_types(path, None)
    rows = x.head(3).to_numpy().tolist()
    got = server_load(model_dir(tmp_path, path, {"skops_types": exact}), rows)
    assert got == {
        "predictions": model.predict(x.head(3)).tolist(),
        "defaults": "_NoDefaults",
        "swept": False,
    }


def test_a_type_missing_from_the_list_is_refused_at_start(
    tmp_path: Path, logreg: tuple[Path, Any, Any]
) -> None:
    path, _, x = logreg
    exact = [t for t in image.skops_types(path, None) or [] if not t.endswith("Pipeline")]
    got = server_load(model_dir(tmp_path, path, {"skops_types": exact}), [[0.0] * 30])
    assert got["error"] == "UntrustedTypesFoundException"
    assert "sklearn.pipeline.Pipeline" in got["message"]


def test_without_a_list_the_server_loads_with_skops_defaults_as_before(
    tmp_path: Path, logreg: tuple[Path, Any, Any]
) -> None:
    path, model, x = logreg
    got = server_load(model_dir(tmp_path, path, {}), x.head(2).to_numpy().tolist())
    assert got["predictions"] == model.predict(x.head(2)).tolist()
    assert got["defaults"] == "module"


class SeesTheCollector:
    """A model that records, as it is unpickled, whether Python's cyclic collector runs."""

    collector_on: bool | None = None

    def __init__(self) -> None:
        self.rows = 0  # some state, so unpickling calls __setstate__

    def __setstate__(self, state: dict[str, Any]) -> None:
        import gc

        self.collector_on = gc.isenabled()

    def predict(self, x: Any) -> Any:
        return [0] * len(x)


def test_the_collector_pauses_while_the_model_loads_and_resumes_after(tmp_path: Path) -> None:
    import gc

    import cloudpickle

    serve = load_serving_module("mlrig_serve_start")
    (tmp_path / "model.pkl").write_bytes(cloudpickle.dumps(SeesTheCollector()))
    spec = {"loader": "sklearn", "model_file": "model.pkl", "serialization_format": "cloudpickle"}
    (tmp_path / "mlrig-serving.json").write_text(json.dumps(spec))
    assert gc.isenabled()
    model = serve.Model(str(tmp_path))
    assert model.predictor.collector_on is False
    assert gc.isenabled()
