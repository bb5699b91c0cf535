"""The model server survives its own limits (issue 27, items 7 and 14): the body cap fits the
container's memory, deep JSON and too many columns are a 400 before any DataFrame is built."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import load_serving_module, serving_model_dir

serve = load_serving_module("mlrig_serve_trust")
JSON = "application/json"
COLUMNS = [f"c{i}" for i in range(30)]


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return serve.Model(str(serving_model_dir(tmp_path_factory.mktemp("signed"), COLUMNS)))


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return serve.Model(str(serving_model_dir(tmp_path_factory.mktemp("unsigned"), None)))


def exchange(app: Any, body: bytes, ctype: str = JSON, declare: bool = True) -> tuple[int, Any]:
    """One POST /invocations through the ASGI app: (status, decoded JSON answer)."""
    sent: list[dict[str, Any]] = []
    reads = [0]
    headers = [(b"content-type", ctype.encode())]
    if declare:
        headers.append((b"content-length", str(len(body)).encode()))

    async def receive() -> dict[str, Any]:
        reads[0] += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
    asyncio.run(app(scope, receive, send))
    answer = json.loads(sent[1]["body"]) if sent[1]["body"].startswith(b"{") else None
    return int(sent[0]["status"]), answer


@pytest.fixture
def no_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a DataFrame, or parsing CSV into one, fails the test: the check comes first."""
    import pandas as pd

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a DataFrame was built before the input was checked")

    for name in ("DataFrame", "read_csv", "read_parquet"):
        monkeypatch.setattr(pd, name, forbidden)


# -- deep JSON --------------------------------------------------------------------------------
def test_json_nested_100000_deep_is_a_400_not_a_500(signed: Any, unsigned: Any) -> None:
    for model in (signed, unsigned):
        app = serve.make_app(model, serve.Limits())
        for body in (b"[" * 100_000 + b"]" * 100_000, b'{"inputs": ' + b"[" * 100_000):
            status, answer = exchange(app, body)
            assert status == 400, answer
            assert answer["error_code"] == "BAD_REQUEST"
            assert f"nested deeper than {serve.MAX_JSON_DEPTH}" in answer["message"]


def test_depth_is_read_on_the_raw_bytes_outside_strings() -> None:
    deep = serve.MAX_JSON_DEPTH + 1
    assert serve._too_deep(b"[" * deep + b"]" * deep, serve.MAX_JSON_DEPTH)
    assert not serve._too_deep(b"[" * (deep - 1) + b"]" * (deep - 1), serve.MAX_JSON_DEPTH)
    # brackets inside strings, escaped quotes and escaped backslashes do not nest
    for text in ("[[[[" * 100, '\\"' + "[" * 100, "\\\\" + "{" * 100, "]" * 100 + "["):
        body = json.dumps({"inputs": [text, text]}).encode()
        assert json.loads(body)  # valid JSON
        assert not serve._too_deep(body, serve.MAX_JSON_DEPTH), text
    # a string cannot hide real nesting behind its own closing brackets
    hidden = b'["]]]]", ' + b"[" * deep + b"]" * deep + b"]"
    assert serve._too_deep(hidden, serve.MAX_JSON_DEPTH)
    # and the slices carry depth and string state across their edges
    big = b'{"inputs": ["' + b"[" * (5 << 20) + b'"], "x": ' + b"[" * deep + b"]" * deep + b"}"
    assert serve._too_deep(big, serve.MAX_JSON_DEPTH)


def test_a_normal_batch_still_scores(signed: Any) -> None:
    app = serve.make_app(signed, serve.Limits())
    body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[0.5] * 30] * 3}})
    assert exchange(app, body.encode()) == (200, {"predictions": [0, 0, 0]})
    records = json.dumps({"dataframe_records": [dict.fromkeys(COLUMNS, 1.0)] * 2}).encode()
    assert exchange(app, records) == (200, {"predictions": [0, 0]})


# -- too many columns -------------------------------------------------------------------------
WIDE = 10**6  # the request: a worker spent 53 s on it before its 400
NARROWER = 20_000  # past both caps, for the other shapes


def _wide_bodies() -> list[tuple[str, bytes, str]]:
    names = [f"w{i}" for i in range(WIDE)]
    few = names[:NARROWER]
    half = NARROWER // 2
    return [
        (
            "dataframe_split",
            json.dumps({"dataframe_split": {"columns": names, "data": [[0.0] * WIDE]}}).encode(),
            JSON,
        ),
        ("csv", (",".join(names) + "\n" + ",".join(["0"] * WIDE) + "\n").encode(), "text/csv"),
        (
            "split without columns",
            json.dumps({"dataframe_split": {"data": [[0] * NARROWER]}}).encode(),
            JSON,
        ),
        (
            "records, the union of their keys",
            json.dumps(
                {"dataframe_records": [dict.fromkeys(few[:half], 0), dict.fromkeys(few[half:], 0)]}
            ).encode(),
            JSON,
        ),
        ("inputs as columns", json.dumps({"inputs": dict.fromkeys(few, [0])}).encode(), JSON),
        ("instances as rows", json.dumps({"instances": [[0] * NARROWER]}).encode(), JSON),
        (
            "csv with a quoted newline in its header",
            ('"a\nb",' + ",".join(few) + "\n").encode(),
            "text/csv",
        ),
    ]


@pytest.mark.usefixtures("no_frames")
def test_a_million_columns_is_a_400_before_any_dataframe(signed: Any, unsigned: Any) -> None:
    bodies = _wide_bodies()
    for model, cap in ((signed, 30 + serve.EXTRA_COLUMNS), (unsigned, serve.MAX_COLUMNS)):
        app = serve.make_app(model, serve.Limits(max_body_bytes=1 << 30))
        for what, body, ctype in bodies:
            status, answer = exchange(app, body, ctype)
            assert status == 400, (what, answer)
            assert answer["error_code"] == "BAD_REQUEST", what
            assert f"columns; this model takes at most {cap}" in answer["message"], what


@pytest.mark.usefixtures("no_frames")
def test_the_column_cap_of_a_model_without_signature_comes_from_the_environment(
    unsigned: Any,
) -> None:
    limits = serve.Limits.from_env({"MLRIG_MAX_COLUMNS": "5"})
    assert limits.max_columns == 5
    app = serve.make_app(unsigned, limits)
    status, answer = exchange(app, json.dumps({"inputs": [[0] * 6]}).encode())
    assert status == 400 and "has 6 columns; this model takes at most 5" in answer["message"]
    with pytest.raises(SystemExit, match="mlrig-serve"):
        serve.Limits.from_env({"MLRIG_MAX_COLUMNS": "0"})


def test_columns_up_to_the_cap_are_scored(signed: Any) -> None:
    app = serve.make_app(signed, serve.Limits())
    extra = [f"id{i}" for i in range(serve.EXTRA_COLUMNS)]  # MLflow ignores extra columns
    body = {"dataframe_split": {"columns": COLUMNS + extra, "data": [[0.0] * (30 + len(extra))]}}
    assert exchange(app, json.dumps(body).encode()) == (200, {"predictions": [0]})
    csv = (",".join(COLUMNS + extra) + "\n" + ",".join(["1"] * (30 + len(extra))) + "\n").encode()
    assert exchange(app, csv, "text/csv") == (200, {"predictions": [0]})


# -- the body cap fits the container's memory --------------------------------------------------
def test_the_memory_limit_is_read_from_cgroup_v2_or_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("268435456\n")
    assert serve.memory_limit(str(v2)) == 256 << 20
    (v2 / "memory.max").write_text("max\n")
    assert serve.memory_limit(str(v2)) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("1073741824\n")
    assert serve.memory_limit(str(v1)) == 1 << 30
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert serve.memory_limit(str(v1)) is None  # v1's "no limit"
    assert serve.memory_limit(str(tmp_path / "none")) is None
    assert serve.resident_bytes() > 0


def test_the_body_cap_is_what_the_memory_limit_holds() -> None:
    configured = serve.Limits()  # 64 MiB, 2 at once
    fitted = configured.fit_memory(1 << 30, 150 << 20)
    want = ((1 << 30) - (150 << 20) - serve.HEADROOM) // (serve.EXPANSION * 2)
    assert fitted.max_body_bytes == want < configured.max_body_bytes and fitted.memory_bound
    # every concurrent scoring at the measured expansion fits in the memory left
    assert 2 * serve.EXPANSION * want + (150 << 20) <= 1 << 30
    assert configured.fit_memory(None, 150 << 20) == configured  # no limit: as configured
    roomy = configured.fit_memory(64 << 30, 150 << 20)
    assert roomy == configured and not roomy.memory_bound  # the smaller of the two
    four = serve.Limits(max_concurrent_scoring=4).fit_memory(1 << 30, 150 << 20)
    assert four.max_body_bytes < want
    tiny = configured.fit_memory(64 << 20, 60 << 20)
    assert tiny.max_body_bytes == serve.MIN_BODY_BYTES


def test_a_body_under_the_configured_cap_but_over_the_memory_is_refused_unread(
    signed: Any,
) -> None:
    limits = serve.Limits().fit_memory(256 << 20, 150 << 20)
    app = serve.make_app(signed, limits)
    body = b"x" * (limits.max_body_bytes + 1)
    assert len(body) < serve.Limits().max_body_bytes  # the old cap let it in
    status, answer = exchange(app, body)
    assert status == 413 and answer["error_code"] == "RESOURCE_LIMIT_EXCEEDED"
    assert str(limits.max_body_bytes) in answer["message"]
    assert "mlrig image run --memory" in answer["message"]
    status, answer = exchange(app, body, declare=False)  # chunked: stopped while read
    assert status == 413 and "--memory" in answer["message"]


def test_the_server_states_its_fitted_cap_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], signed: Any
) -> None:
    import sys
    import types

    ran: dict[str, Any] = {}
    fake = types.SimpleNamespace(run=lambda app, **kw: ran.update(kw))
    monkeypatch.setitem(sys.modules, "uvicorn", fake)
    monkeypatch.setattr(serve.app, "Model", lambda *a: signed)
    monkeypatch.setattr(serve.app, "memory_limit", lambda: 512 << 20)
    monkeypatch.setattr(serve.app, "resident_bytes", lambda: 100 << 20)
    serve.main()
    err = capsys.readouterr().err
    want = ((512 << 20) - (100 << 20) - serve.HEADROOM) // (serve.EXPANSION * 2)
    assert f"max_body_bytes={want}" in err and "memory_bound=True" in err
    assert f"body cap {want} bytes" in err and ran["port"] == 8080


# -- the container restarts unless stopped, and a memory kill is one line ----------------------
class FakeEngine:
    """docker-py's client as far as image_run and doctor use it: containers by name, inspect
    data, and `containers.run`'s keyword arguments."""

    def __init__(self, containers: dict[str, dict[str, Any]]) -> None:
        import types

        self.by_name = containers
        self.runs: list[dict[str, Any]] = []
        self.api = types.SimpleNamespace(containers=self._list, inspect_container=self._inspect)
        self.containers = types.SimpleNamespace(run=self._run)

    def _list(self, all: bool, filters: dict[str, str]) -> list[dict[str, Any]]:  # noqa: A002
        prefix = filters["name"].lstrip("^/")
        return [{"Id": n} for n in self.by_name if n.startswith(prefix)]

    def _inspect(self, ident: str) -> dict[str, Any]:
        return {"Name": f"/{ident}", **self.by_name[ident]}

    def _run(self, image: str, **kwargs: Any) -> Any:
        import types

        self.runs.append({"image": image, **kwargs})
        return types.SimpleNamespace(id="c0ffee")


def _inspect(status: str, oom: bool, code: int, restarts: int, memory: int) -> dict[str, Any]:
    return {
        "State": {"Status": status, "OOMKilled": oom, "ExitCode": code},
        "RestartCount": restarts,
        "HostConfig": {"Memory": memory, "RestartPolicy": {"Name": "unless-stopped"}},
    }


OOM_RESTARTED = _inspect("running", True, 0, 2, 384 << 20)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    from mlrig.adapters import docker as docker_adapter

    fake = FakeEngine(
        {
            "mlrig-serve-8080": OOM_RESTARTED,
            "mlrig-serve-8081": _inspect("running", False, 0, 0, 1 << 30),
            "someone-else": _inspect("exited", True, 137, 0, 0),
        }
    )
    monkeypatch.setattr(docker_adapter, "client", lambda: fake)
    return fake


def test_serving_containers_restart_unless_stopped(engine: FakeEngine) -> None:
    from mlrig.adapters import docker as docker_adapter

    docker_adapter.run_container("img:1", name="mlrig-serve-9", environment={}, memory_bytes=1)
    assert engine.runs[0]["restart_policy"] == {"Name": "unless-stopped"}
    assert engine.runs[0]["mem_limit"] == engine.runs[0]["memswap_limit"] == 1


def test_a_memory_kill_is_one_line_in_image_status_and_doctor(engine: FakeEngine) -> None:
    from typer.testing import CliRunner

    from mlrig.core.doctor import doctor
    from mlrig.main import app

    oom = (
        "mlrig-serve-8080 running; killed for using more than its 384 MiB memory limit "
        "(exit 137); restarted 2 times"
    )
    result = CliRunner().invoke(app, ["image", "status"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [oom, "mlrig-serve-8081 running"]  # not someone-else

    check = doctor._serving_containers()
    assert (check.status, check.detail, check.needed) == (doctor.WARN, oom, False)
    assert "--memory" in check.fix
    engine.by_name["mlrig-serve-8080"] = _inspect("exited", True, 137, 0, 384 << 20)
    check = doctor._serving_containers()
    assert check.detail == (
        "mlrig-serve-8080 exited; killed for using more than its 384 MiB memory limit (exit 137)"
    )
    del engine.by_name["mlrig-serve-8080"]
    check = doctor._serving_containers()
    assert (check.status, check.detail) == (doctor.OK, "mlrig-serve-8081 running")
    assert CliRunner().invoke(app, ["image", "status"]).exit_code == 0


def test_image_run_names_the_state_of_the_container_in_its_way(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.image import run as image_run
    from mlrig.errors import Conflict

    monkeypatch.setattr(docker_adapter, "image_exists", lambda ref: True)
    with pytest.raises(Conflict) as caught:
        image_run.run("img:1", port=8080)
    assert "killed for using more than its 384 MiB memory limit" in caught.value.message
    assert caught.value.hint and "docker rm -f mlrig-serve-8080" in caught.value.hint
    assert engine.runs == []


@pytest.mark.parametrize("status,restarts", [("restarting", 1), ("running", 1), ("exited", 0)])
def test_a_server_the_engine_restarts_during_start_is_a_failed_start(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, status: str, restarts: int
) -> None:
    from mlrig.adapters import http
    from mlrig.core.image import run as image_run
    from mlrig.errors import ServiceError

    engine.by_name["c0ffee"] = _inspect(status, True, 137, restarts, 40 << 20)

    def refused(url: str, timeout: float) -> int:
        raise ConnectionRefusedError

    monkeypatch.setattr(http, "status", refused)
    with pytest.raises(ServiceError, match="exited before it became healthy"):
        image_run._wait_healthy("img:1", "c0ffee", "http://127.0.0.1:1", timeout=60)


def test_an_oversized_input_example_in_the_image_is_refused_before_it_is_read(
    engine: FakeEngine,
) -> None:
    from mlrig.core.image import run as image_run
    from mlrig.errors import UsageError

    def get_archive(container: str, path: str) -> tuple[Any, dict[str, Any]]:
        def stream() -> Any:
            raise AssertionError("the example's bytes were read")
            yield b""

        return stream(), {"name": "serving_input_example.json", "size": 9 << 30}

    engine.api.get_archive = get_archive
    with pytest.raises(UsageError, match="is 9663676416 bytes, more than 8388608"):
        image_run._example("c0ffee")


def test_a_smoke_example_that_is_not_an_object_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import types

    from mlrig.adapters import http
    from mlrig.core.image import run as image_run
    from mlrig.errors import ServiceError

    answer = types.SimpleNamespace(
        status=200, text='{"predictions": [1, 2]}', json=lambda: {"predictions": [1, 2]}
    )
    monkeypatch.setattr(http, "post", lambda *a, **kw: answer)
    assert image_run.smoke_check("http://127.0.0.1:1", b'["inputs", 1]') == [1, 2]
    answer.json = lambda: ["not", "an", "object"]
    with pytest.raises(ServiceError, match="unexpected answer"):
        image_run.smoke_check("http://127.0.0.1:1", b'{"inputs": [[1], [2]]}')


@pytest.fixture(scope="module")
def pyfunc_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A model of another flavor (a python_model), scored through MLflow's scoring server."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    class PyZeros(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return np.zeros(len(model_input), dtype=int)

    path = tmp_path_factory.mktemp("pyfunc") / "m"
    x = pd.DataFrame({c: [0.5] for c in COLUMNS})
    mlflow.pyfunc.save_model(
        str(path), python_model=PyZeros(), signature=infer_signature(x, np.zeros(1, dtype=int))
    )
    spec = {
        "loader": "pyfunc",
        "mlflow_version": "3",
        "input_columns": [{"name": c, "type": "double"} for c in COLUMNS],
    }
    (path / "mlrig-serving.json").write_text(json.dumps(spec))
    return serve.Model(str(path))


def test_mlflows_own_scoring_route_has_the_same_bounds(pyfunc_model: Any) -> None:
    app = serve.make_app(pyfunc_model, serve.Limits(max_body_bytes=1 << 30))
    ok = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[0.5] * 30] * 2}}).encode()
    assert exchange(app, ok) == (200, {"predictions": [0, 0]})
    status, answer = exchange(app, b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nested deeper than" in answer["message"]
    for what, body, ctype in _wide_bodies():
        status, answer = exchange(app, body, ctype)
        assert status == 400, (what, answer)
        assert "columns; this model takes at most 1030" in answer["message"], what
    # MLflow's parsing costs more per body byte (up to ~84x, measured): a smaller cap
    assert pyfunc_model.expansion == serve.PYFUNC_EXPANSION > serve.EXPANSION
    fitted = serve.Limits().fit_memory(1 << 30, 150 << 20, pyfunc_model.expansion)
    assert 2 * 84 * fitted.max_body_bytes + (150 << 20) <= 1 << 30


def test_a_parquet_body_that_decodes_past_the_memory_is_refused_from_its_footer(
    signed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    import pandas as pd

    monkeypatch.setattr(serve.scoring, "PARQUET_ENGINE", "pyarrow")
    limits = serve.Limits().fit_memory(1 << 30, 150 << 20)  # ~10 MiB bodies in 1 GiB
    app = serve.make_app(signed, limits)
    small, bomb = io.BytesIO(), io.BytesIO()
    pd.DataFrame({c: np.zeros(2) for c in COLUMNS}).to_parquet(small)
    # ~50 KB of zeros that decode to 69 MiB of doubles (peak ~285 MiB, measured)
    pd.DataFrame({c: np.zeros(300_000) for c in COLUMNS}).to_parquet(bomb)
    assert len(bomb.getvalue()) < limits.max_body_bytes // 100
    assert exchange(app, small.getvalue(), serve.PARQUET) == (200, {"predictions": [0, 0]})

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the Parquet data was decoded")

    monkeypatch.setattr(pd, "read_parquet", forbidden)
    status, answer = exchange(app, bomb.getvalue(), serve.PARQUET)
    assert status == 413 and answer["error_code"] == "RESOURCE_LIMIT_EXCEEDED", answer
    assert "300000 rows" in answer["message"]


def test_an_image_label_that_is_not_a_commit_names_no_registry_tag() -> None:
    from mlrig.core.oci import push as oci_push

    labels = {"io.mlrig.model.name": "bc", "io.mlrig.model.version": "2"}
    for commit in ("../../x", "a/b:c@d", "-rf x", "ABCDEF1", "abc"):
        tags = oci_push.tags_for({**labels, "io.mlrig.git.commit": commit}, "x")
        assert tags == ["bc-v2"], commit
    tags = oci_push.tags_for({**labels, "io.mlrig.git.commit": "0123abc" * 6}, "x")
    assert tags == ["bc-v2", "bc-v2-0123abc"]


def test_doctor_never_fails_on_the_serving_containers_row(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlrig.core.doctor import doctor
    from mlrig.core.image import run as image_run
    from mlrig.errors import ServiceError

    def down() -> Any:
        raise ServiceError("no Docker engine answers")

    def broken() -> Any:
        raise RuntimeError("the engine's answer had no Id")

    for fails, status in ((down, doctor.SKIP), (broken, doctor.WARN)):
        monkeypatch.setattr(image_run, "status", fails)
        check = doctor._guard("serving containers", doctor._serving_containers)
        assert check.status == status and not doctor.failed([check])
    monkeypatch.setattr(image_run, "status", lambda: [])
    assert doctor._serving_containers().status == doctor.SKIP


def test_a_csv_header_is_counted_as_csv_reads_it() -> None:
    assert serve._csv_width("a,b,c\n1,2,3\n") == 3
    assert serve._csv_width('"a,b",c\n1,2\n') == 2  # a quoted comma is not a column
    assert serve._csv_width('"a\nb",c,d\n1,2,3\n') == 3  # nor is a quoted newline a record
    assert serve._csv_width("a,b") == 2  # no newline at all
    with pytest.raises(serve.BadRequest, match="spans more than 1000 lines"):
        serve._csv_width('"' + "\n" * 5000 + '",b\n')  # an open quote: bounded, not walked
