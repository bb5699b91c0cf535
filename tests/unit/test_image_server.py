"""The in-container server against MLflow's own scoring server, request by request.

Same model, same bodies: status codes, error codes and predictions must match MLflow's
`scoring_server.invocations`, so existing MLflow clients see no difference.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mlrig.core.shared import serving_model
from tests.helpers import breast_cancer_pipeline, load_serving_module

serve = load_serving_module("mlrig_serve")


@pytest.fixture(scope="module", params=["skops", "cloudpickle"])
def saved_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow.sklearn
    import sklearn

    model, x = breast_cancer_pipeline()
    path = tmp_path_factory.mktemp("model") / "m"
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format=request.param,
        pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
        input_example=x.head(3),
    )
    import yaml

    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    plan = serving_model.plan(mlmodel, (path / "requirements.txt").read_text())
    assert plan.spec["loader"] == "sklearn"
    (path / "mlrig-serving.json").write_text(json.dumps(plan.spec))
    return path


@pytest.fixture(scope="module")
def both(saved_model: Path) -> tuple[Any, Any]:
    import mlflow.pyfunc

    return serve.Model(str(saved_model)), mlflow.pyfunc.load_model(str(saved_model))


def ours(model: Any, body: bytes, ctype: str) -> tuple[int, Any]:
    try:
        status, out, mime = model.invocations(body, ctype)
    except serve.BadRequest as exc:
        return exc.status, exc.code
    return status, json.loads(out) if mime == "application/json" else None


def theirs(pyfunc: Any, body: bytes, ctype: str) -> tuple[int, Any]:
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        res = scoring_server.invocations(body, ctype, pyfunc, pyfunc.metadata.get_input_schema())
    except MlflowException as exc:
        return exc.get_http_status_code(), json.loads(exc.serialize_as_json())["error_code"]
    return res.status, json.loads(res.response) if res.mimetype == "application/json" else None


def _example(saved_model: Path) -> dict[str, Any]:
    return json.loads((saved_model / "input_example.json").read_text())


PARQUET = "application/vnd.apache.parquet"


def corpus(saved_model: Path) -> list[tuple[str, bytes, str]]:
    import pandas as pd

    ex = _example(saved_model)
    cols, data = ex["columns"], ex["data"]
    records = [dict(zip(cols, row, strict=True)) for row in data]
    j = "application/json"

    def body(doc: Any) -> bytes:
        return json.dumps(doc).encode()

    csv = (
        ",".join(f'"{c}"' for c in cols)
        + "\n"
        + "\n".join(",".join(map(str, r)) for r in data)
        + "\n"
    ).encode()
    rev = list(reversed(cols))
    frame = pd.DataFrame(data, columns=cols)
    return [
        ("split", body({"dataframe_split": ex}), j),
        ("split, charset", body({"dataframe_split": ex}), "application/json; charset=utf-8"),
        (
            "split, reordered columns",
            body({"dataframe_split": {"columns": rev, "data": [list(reversed(r)) for r in data]}}),
            j,
        ),
        ("split with index", body({"dataframe_split": {**ex, "index": [7, 8, 9]}}), j),
        (
            "split, integers",
            body(
                {"dataframe_split": {"columns": cols, "data": [[int(v) for v in r] for r in data]}}
            ),
            j,
        ),
        ("records", body({"dataframe_records": records}), j),
        ("instances", body({"instances": records}), j),
        (
            "inputs, columns",
            body({"inputs": {c: [r[i] for r in data] for i, c in enumerate(cols)}}),
            j,
        ),
        ("inputs, records", body({"inputs": records}), j),
        ("extra column", body({"dataframe_records": [{**r, "x": 1} for r in records]}), j),
        ("csv", csv, "text/csv"),
        (
            "missing column",
            body({"dataframe_split": {"columns": cols[1:], "data": [r[1:] for r in data]}}),
            j,
        ),
        (
            "string in a number column",
            body({"dataframe_split": {"columns": cols, "data": [["x"] + r[1:] for r in data]}}),
            j,
        ),
        ("invalid json", b"{not json", j),
        ("a list", body([1, 2]), j),
        ("unknown key", body({"rows": data}), j),
        ("two keys", body({"dataframe_split": ex, "instances": records}), j),
        ("bad content type", b"x", "text/plain"),
        ("latin-1", body({"dataframe_split": ex}), "application/json; charset=latin-1"),
        ("unknown parameter", body({"dataframe_split": ex}), "application/json; format=x"),
        (
            "duplicate column",
            body(
                {
                    "dataframe_split": {
                        "columns": [*cols, cols[0]],
                        "data": [[*r, r[0]] for r in data],
                    }
                }
            ),
            j,
        ),
        (
            "duplicate column in place of another",
            body({"dataframe_split": {"columns": [cols[0], *cols[:-1]], "data": data}}),
            j,
        ),
        ("csv, duplicate column", _csv([*cols, cols[0]], [[*r, r[0]] for r in data]), "text/csv"),
        ("parquet", _parquet(frame), PARQUET),
        ("parquet, reordered columns", _parquet(frame[rev]), PARQUET),
        ("parquet, integers", _parquet(frame.astype("int64")), PARQUET),
        ("parquet, small integers", _parquet(frame.astype("int32")), PARQUET),
        ("parquet, zeros and ones", _parquet((frame > frame.median()).astype("int64")), PARQUET),
        ("parquet, float32", _parquet(frame.astype("float32")), PARQUET),
        ("parquet, booleans", _parquet(frame > frame.median()), PARQUET),
        ("parquet, missing column", _parquet(frame[cols[1:]]), PARQUET),
        ("parquet, strings", _parquet(frame.astype(str)), PARQUET),
        ("not parquet", b"PAR1 but not really", PARQUET),
    ]


def _csv(cols: list[str], rows: list[list[Any]]) -> bytes:
    head = ",".join(f'"{c}"' for c in cols)
    return (head + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n").encode()


def _parquet(frame: Any) -> bytes:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


@pytest.mark.parametrize("sliced", [False, True], ids=["small body", "big-body path"])
def test_answers_match_mlflow_scoring_server(
    saved_model: Path, both: tuple[Any, Any], sliced: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sliced:  # every body takes the path a big batch takes: JSON and rows decoded in slices
        monkeypatch.setattr(serve.payload, "SLICED_JSON_BYTES", 0)
        monkeypatch.setattr(serve.payload, "ROWS_PER_SLICE", 2)
    mine, reference = both
    mismatches = []
    for label, body, ctype in corpus(saved_model):
        got, want = ours(mine, body, ctype), theirs(reference, body, ctype)
        if got != want:
            mismatches.append(f"{label}: ours {got} vs MLflow {want}")
    assert not mismatches, "\n".join(mismatches)


def test_predictions_are_real(saved_model: Path, both: tuple[Any, Any]) -> None:
    import pandas as pd

    ex = _example(saved_model)
    body = json.dumps({"dataframe_split": ex}).encode()
    status, answer = ours(both[0], body, "application/json")
    expected = both[1].predict(pd.DataFrame(ex["data"], columns=ex["columns"]))
    assert status == 200
    assert answer == {"predictions": expected.tolist()}


def _call(
    app: Any, method: str, path: str, body: bytes = b"", ctype: str = "application/json"
) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    chunks = [
        {"type": "http.request", "body": body[:10], "more_body": True},
        {"type": "http.request", "body": body[10:], "more_body": False},
    ]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-type", ctype.encode())],
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


def test_asgi_routes(saved_model: Path, both: tuple[Any, Any]) -> None:
    app = serve.make_app(both[0])
    assert _call(app, "GET", "/ping") == (200, b"\n")
    assert _call(app, "GET", "/health") == (200, b"\n")
    status, version = _call(app, "GET", "/version")
    import mlflow

    assert (status, version.decode()) == (200, mlflow.__version__)
    body = json.dumps({"dataframe_split": _example(saved_model)}).encode()
    status, out = _call(app, "POST", "/invocations", body)
    assert status == 200 and len(json.loads(out)["predictions"]) == 3
    status, out = _call(app, "POST", "/invocations", b"{}")
    assert status == 400 and json.loads(out)["error_code"] == "BAD_REQUEST"
    assert _call(app, "GET", "/invocations")[0] == 405
    assert _call(app, "GET", "/nope")[0] == 404
