"""What `image build` proves before it tags: the request it sends (the model's example or a
row made from its signature), how a failed start is told in one line, pip's failures, the
CPU-only wheels, the untagged load, and the OpenMP runtime in the offline base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlrig.core.image import build as image
from mlrig.core.image import smoke
from mlrig.core.oci import layer as image_layer
from mlrig.core.setup import engine
from mlrig.core.shared import serving_model
from mlrig.errors import UsageError


def _sig(inputs: list[dict]) -> dict:
    return {"signature": {"inputs": json.dumps(inputs)}}


def test_a_column_signature_makes_one_typed_row() -> None:
    body = smoke.synthesized(
        _sig(
            [
                {"type": "string", "name": "city"},
                {"type": "double", "name": "usage"},
                {"type": "long", "name": "n", "required": False},
                {"type": "boolean", "name": "pro"},
            ]
        )
    )
    assert body is not None
    assert json.loads(body) == {
        "dataframe_split": {"columns": ["city", "usage", "n", "pro"], "data": [["", 0.0, 0, False]]}
    }


def test_tensor_signatures_make_one_zero_row_per_tensor() -> None:
    one = smoke.synthesized(
        _sig([{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 2, 3]}}])
    )
    assert one is not None and json.loads(one) == {"inputs": [[[0, 0, 0], [0, 0, 0]]]}
    named = smoke.synthesized(
        _sig(
            [
                {"type": "tensor", "name": "ids", "tensor-spec": {"dtype": "int64", "shape": [-1]}},
                {
                    "type": "tensor",
                    "name": "on",
                    "tensor-spec": {"dtype": "bool", "shape": [-1, 1]},
                },
            ]
        )
    )
    assert named is not None
    assert json.loads(named) == {"inputs": {"ids": [0], "on": [[False]]}}


@pytest.mark.parametrize(
    "mlmodel",
    [
        {},
        {"signature": {"inputs": "not json"}},
        _sig([{"type": "binary", "name": "blob"}]),  # no value to make for it
        _sig([{"type": "double"}]),  # a column without a name
        _sig([{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 1000, 101]}}]),
        _sig([{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": []}}]),
        _sig(
            [
                {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1]}},
                {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1]}},
            ]
        ),
    ],
)
def test_signatures_it_cannot_fill_leave_only_the_load_check(mlmodel: dict) -> None:
    assert smoke.synthesized(mlmodel) is None


def test_the_models_own_example_wins_and_is_checked(tmp_path: Path) -> None:
    sig = _sig([{"type": "double", "name": "x"}])
    made = smoke.request_for(tmp_path, sig)
    assert made is not None and made.source == "a row made from its signature"
    (tmp_path / smoke.EXAMPLE_NAME).write_text('{"dataframe_split": {"data": [[1.5]]}}')
    own = smoke.request_for(tmp_path, sig)
    assert own is not None and own.source == "its input example"
    assert own.body == (tmp_path / smoke.EXAMPLE_NAME).read_bytes()
    (tmp_path / smoke.EXAMPLE_NAME).write_text("{nope")
    with pytest.raises(UsageError, match="is not JSON"):
        smoke.request_for(tmp_path, sig)
    assert smoke.request_for(tmp_path / "none", {}) is None


def test_a_failed_start_is_told_by_the_exception_it_died_of() -> None:
    log = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/opt/mlrig/serve.py", line 13, in <module>',
            "    import lightgbm",
            "OSError: libgomp.so.1: cannot open shared object file: No such file or directory",
            "",
        ]
    )
    line = smoke.failure(log)
    assert line.startswith("OSError: libgomp.so.1: cannot open shared object file")
    assert "system library libgomp.so.1" in smoke.hint_for(line)
    missing = smoke.failure("x\nModuleNotFoundError: No module named 'sklearn'\n")
    assert "pip_requirements" in smoke.hint_for(missing)
    assert smoke.failure("just this\n") == "just this"
    assert smoke.failure("") == "it printed nothing"


def test_pip_not_finding_a_requirement_is_one_line() -> None:
    out = [  # as the engine streams them: a step's stderr in colour codes
        "Step 7/12 : RUN python3 -m venv /opt/venv && ...",
        "\x1b[91mERROR: Could not find a version that satisfies the requirement nope==1.0 "
        "(from versions: none)",
        "\x1b[0m\x1b[91mERROR: No matching distribution found for nope==1.0",
        "\x1b[0m",
    ]
    err = image.pip_failure(out)
    assert err is not None
    assert err.message == (
        "the model's requirement nope==1.0 cannot be installed: the package index the build "
        "reaches has no wheel of it for this platform; nothing was tagged"
    )
    offline = image.pip_failure(
        [
            "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError("
            "'Failed to establish a new connection: [Errno 101] Network is unreachable')'",
            *out[1:],
        ]
    )
    assert offline is not None
    assert "the package index did not answer (Network is unreachable)" in offline.message
    other = image.pip_failure(["ERROR: ResolutionImpossible: for help visit ..."])
    assert other is not None and "ResolutionImpossible" in other.message
    assert image.pip_failure(["Step 3/4 : COPY x y", "no such file"]) is None


def test_cpu_images_take_xgboosts_cpu_only_wheel() -> None:
    mlmodel = {
        "mlflow_version": "3.17.2",
        "flavors": {"python_function": {"loader_module": "mlflow.xgboost"}},
    }
    plan = serving_model.plan(mlmodel, "xgboost==3.2.0\nnumpy==2.4.6\n")
    assert "xgboost-cpu==3.2.0" in plan.requirements
    assert not any(r.startswith("xgboost==") for r in plan.requirements)
    # before 2.1.1 there is no xgboost-cpu; before 2.0 xgboost pulled no CUDA wheel
    old = serving_model.plan(mlmodel, "xgboost==1.7.6\nnumpy==1.26.4\n")
    assert "xgboost==1.7.6" in old.requirements


def test_a_checked_image_is_loaded_untagged(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "MLmodel").write_text("x")
    layer = image_layer.model_layer(tmp_path / "m", tmp_path / "layer.tar.gz")
    archive = image_layer.write_load_archive(tmp_path / "load.tar", b"{}", 0, layer, None)
    import tarfile

    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        (entry,) = json.loads(member.read())
    assert entry["RepoTags"] is None


def test_the_offline_base_carries_openmp_and_says_so(tmp_path: Path) -> None:
    argv = engine.mmdebstrap_argv(tmp_path / "rootfs.tar")
    (include,) = [a for a in argv if a.startswith("--include=")]
    assert "libgomp1" in include.split("=", 1)[1].split(",")
    assert "libgomp1" in engine.PACKAGES


def test_a_base_without_the_current_packages_is_rebuilt(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlrig import settings
    from mlrig.adapters import docker as docker_adapter

    labels: dict[str, str] = {}

    class Info:
        def __init__(self) -> None:
            self.labels = labels

    monkeypatch.setattr(docker_adapter, "image_exists", lambda ref: True)
    monkeypatch.setattr(docker_adapter, "image_info", lambda ref: Info())
    base = settings.OFFLINE_BASE_IMAGE
    labels.update({engine.RECIPE_LABEL: engine.RECIPE_VERSION})
    assert not engine._usable(base)  # made before libgomp1 was in the recipe
    labels[engine.PACKAGES_LABEL] = ",".join(engine.PACKAGES)
    assert engine._usable(base)
