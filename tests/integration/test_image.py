"""Serving images for real: a model logged to the local stack's MLflow, built on dockerd,
run with host networking, pushed to htpasswd registries (the stack's, and ECR via moto)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from mlrig import contract
from mlrig.adapters import ecr
from mlrig.adapters.registry import RegistryClient
from mlrig.contract import BasicAuth, Registry, SecretRef
from mlrig.core.image import build as image
from mlrig.core.image import model as image_model
from mlrig.core.image import push as serving_push
from mlrig.core.image import run as image_run
from mlrig.core.stack.local.stack import free_port
from mlrig.errors import RemoteError, ServiceError
from mlrig.main import app
from tests.helpers import VENV_BIN, register_model, registry_process

pytestmark = pytest.mark.integration
runner = CliRunner()
MODEL = "bc-image"
ECR_HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
MOTO_PASSWORD = "123456789012-auth-token"


@pytest.fixture(scope="module")
def v1(image_env: dict) -> dict[str, Any]:
    version, expected = register_model(MODEL, 1.0)
    built = image.build(f"models:/{MODEL}/{version}")
    return {"version": version, "expected": expected, "built": built}


@pytest.fixture(scope="module")
def v2(v1: dict) -> dict[str, Any]:
    """A retrained model, same dependencies: a new version of the same registered model."""
    version, expected = register_model(MODEL, 0.05)
    built = image.build(f"models:/{MODEL}/{version}")
    return {"version": version, "expected": expected, "built": built}


def local_registry(image_env: dict) -> RegistryClient:
    out = image_env["outputs"]
    return RegistryClient(
        f"http://{out.registry.host}",
        image_env["env"]["MLRIG_REGISTRY_USERNAME"],
        image_env["env"]["MLRIG_REGISTRY_PASSWORD"],
    )


def one_line_error(result: Any, code: int) -> str:
    """Progress lines may precede it; the error itself is one line, with no traceback."""
    assert result.exit_code == code, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == errors[0]
    assert "pushed" not in result.output.lower()
    return errors[0]


def oci_stack(name: str, host: str, password_env: str) -> None:
    out = contract.load("local")
    contract.save(
        out.model_copy(
            update={
                "name": name,
                "registry": Registry(
                    kind="oci",
                    url=f"{host}/models",
                    auth=BasicAuth(
                        username="mlrig", password=SecretRef(source="env", ref=password_env)
                    ),
                ),
            }
        )
    )


def local_tags(ref: str) -> list[str]:
    from mlrig.adapters import docker as docker_adapter

    return list(docker_adapter.client().api.inspect_image(ref).get("RepoTags") or [])


# -- build & run ------------------------------------------------------------------------------
def test_image_is_layered_labelled_and_non_root(v1: dict) -> None:
    from mlflow import MlflowClient

    from mlrig.adapters import docker as docker_adapter
    from mlrig.version import __version__

    built = v1["built"]
    info = docker_adapter.client().api.inspect_image(built.ref)
    cfg = info["Config"]
    labels = cfg["Labels"]
    mv = MlflowClient().get_model_version(MODEL, v1["version"])
    assert labels["io.mlrig.mlflow.run-id"] == mv.run_id
    assert labels["io.mlrig.model.name"] == MODEL
    assert labels["io.mlrig.model.version"] == v1["version"]
    assert labels["io.mlrig.version"] == __version__
    assert cfg["User"] == "1000:1000"
    assert cfg["Healthcheck"]["Test"][0] == "CMD"
    history = docker_adapter.client().api.history(built.ref)
    last_layer = next(h for h in history if h["Size"] > 0)
    assert "COPY dir:" in last_layer["CreatedBy"] and last_layer["Size"] < 1_000_000


def test_run_smoke_checks_the_input_example(v1: dict) -> None:
    from mlrig.adapters import docker as docker_adapter

    port = free_port()
    result = runner.invoke(app, ["image", "run", v1["built"].ref, "--port", str(port), "--smoke"])
    assert result.exit_code == 0, result.output
    assert f"predictions {v1['expected']}" in result.output
    assert not docker_adapter.client().containers.list(
        all=True, filters={"name": f"mlrig-serve-{port}"}
    )


def test_running_server_speaks_mlflow_protocol(v1: dict) -> None:
    running = image_run.run(v1["built"].ref, port=free_port())
    try:
        from sklearn.datasets import load_breast_cancer

        x = load_breast_cancer(as_frame=True).data.head(3)
        split = json.loads(x.to_json(orient="split"))
        del split["index"]
        bodies = [
            ({"dataframe_split": split}, "application/json"),
            ({"dataframe_records": json.loads(x.to_json(orient="records"))}, "application/json"),
            ({"inputs": {c: x[c].tolist() for c in x.columns}}, "application/json"),
            (x.to_csv(index=False), "text/csv"),
        ]
        for body, ctype in bodies:
            data = body if isinstance(body, str) else json.dumps(body)
            resp = requests.post(
                f"{running.url}/invocations", data=data, headers={"Content-Type": ctype}, timeout=10
            )
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"predictions": v1["expected"]}
        assert requests.get(f"{running.url}/health", timeout=5).status_code == 200
        assert requests.get(f"{running.url}/version", timeout=5).text
        bad = requests.post(
            f"{running.url}/invocations",
            data="{}",
            timeout=5,
            headers={"Content-Type": "application/json"},
        )
        assert bad.status_code == 400 and bad.json()["error_code"] == "BAD_REQUEST"
    finally:
        from mlrig.adapters import docker as docker_adapter

        docker_adapter.client().containers.get(running.container).remove(force=True)


def listening(container: str, port: int) -> set[str]:
    """Local addresses (kernel hex) of every socket listening on port, read from
    /proc/net/tcp{,6} inside the container (host networking: the host's own sockets)."""
    from mlrig.adapters import docker as docker_adapter

    script = (
        "for f in ('/proc/net/tcp', '/proc/net/tcp6'):\n"
        "    for line in open(f).readlines()[1:]:\n"
        "        p = line.split()\n"
        "        if p[3] == '0A': print(p[1])\n"
    )
    result = docker_adapter.client().containers.get(container).exec_run(["python", "-c", script])
    assert result.exit_code == 0, result.output
    found = set()
    for local in bytes(result.output).decode().split():
        addr, hex_port = local.split(":")
        if int(hex_port, 16) == port:
            found.add(addr)
    return found


LOOPBACK_V4 = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it
ANY_V4 = "00000000"


def test_run_listens_on_loopback_only_with_a_memory_limit(v1: dict) -> None:
    from mlrig.adapters import docker as docker_adapter

    port = free_port()
    name = f"mlrig-serve-{port}"
    result = runner.invoke(
        app, ["image", "run", v1["built"].ref, "--port", str(port), "--memory", "768m"]
    )
    try:
        assert result.exit_code == 0, result.output
        out = " ".join(result.output.split())
        assert f"listening on 127.0.0.1:{port}, memory limit 768 MiB" in out
        assert requests.get(f"http://127.0.0.1:{port}/ping", timeout=5).status_code == 200
        assert listening(name, port) == {LOOPBACK_V4}  # nothing on 0.0.0.0 or another address
        host_config = docker_adapter.client().api.inspect_container(name)["HostConfig"]
        assert host_config["Memory"] == 768 * 2**20
        assert host_config["MemorySwap"] == 768 * 2**20  # no swap beyond the limit
    finally:
        docker_adapter.client().api.remove_container(name, force=True)


def test_run_defaults_to_loopback_and_1g_and_binds_what_host_says(v1: dict) -> None:
    from mlrig.adapters import docker as docker_adapter

    running = image_run.run(v1["built"].ref, port=free_port())
    try:
        port = int(running.url.rsplit(":", 1)[1])
        assert running.bind == f"127.0.0.1:{port}" and running.url == f"http://127.0.0.1:{port}"
        assert listening(running.container, port) == {LOOPBACK_V4}
        memory = docker_adapter.client().api.inspect_container(running.container)["HostConfig"]
        assert memory["Memory"] == running.memory_bytes == 2**30
    finally:
        docker_adapter.remove_container(running.container)
    # an explicit --host is honoured and reported; it is still checked through loopback only
    wide = image_run.run(v1["built"].ref, port=free_port(), host="0.0.0.0")  # noqa: S104
    try:
        port = int(wide.url.rsplit(":", 1)[1])
        assert wide.bind == f"0.0.0.0:{port}" and wide.url == f"http://127.0.0.1:{port}"
        assert listening(wide.container, port) == {ANY_V4}
    finally:
        docker_adapter.remove_container(wide.container)


def derived_image(base: str, tag: str, tmp_path: Path, dockerfile: str) -> str:
    from mlrig.adapters import docker as docker_adapter

    (tmp_path / "Dockerfile").write_text(f"FROM {base}\n{dockerfile}")
    docker_adapter.consume_stream(
        docker_adapter.client().api.build(
            path=str(tmp_path), tag=tag, network_mode="host", decode=True, rm=True, forcerm=True
        ),
        "building",
    )
    return tag


def serve_containers(port: int) -> list[Any]:
    from mlrig.adapters import docker as docker_adapter

    exact = {"name": f"^/mlrig-serve-{port}$"}
    return list(docker_adapter.client().containers.list(all=True, filters=exact))


def test_failed_smoke_carries_the_log_or_keeps_the_container(v1: dict, tmp_path: Path) -> None:
    from mlrig.adapters import docker as docker_adapter

    # a healthy server whose own input example names a column the model does not have
    (tmp_path / "serving_input_example.json").write_text(
        json.dumps({"dataframe_split": {"columns": ["nope"], "data": [[1.0]]}})
    )
    ref = derived_image(
        v1["built"].ref,
        "mlrig-test/bad-example:1",
        tmp_path,
        "COPY serving_input_example.json /opt/model/serving_input_example.json\n",
    )
    try:
        port = free_port()
        result = runner.invoke(app, ["image", "run", ref, "--port", str(port), "--smoke"])
        text = " ".join(one_line_error(result, 5).split())
        assert "to its own input example" in text and "container log:" in text
        assert "rerun with --keep" in text and "docker logs" in text
        assert not serve_containers(port)  # removed, and the error does not point at it

        port = free_port()
        result = runner.invoke(app, ["image", "run", ref, "--port", str(port), "--smoke", "--keep"])
        text = " ".join(one_line_error(result, 5).split())
        name = f"mlrig-serve-{port}"
        assert f"container kept: `docker logs {name}`, then `docker rm -f {name}`" in text
        assert [c.name for c in serve_containers(port)] == [name]
        assert docker_adapter.client().api.logs(name)  # the command it prints works
    finally:
        for c in serve_containers(port):
            c.remove(force=True)
        docker_adapter.client().api.remove_image(ref)


def test_the_image_refuses_an_oversized_body_before_reading_it(v1: dict, tmp_path: Path) -> None:
    """The body limit holds in the built image (its own HTTP parser), not only in-process."""
    from mlrig.adapters import docker as docker_adapter

    limit = 4096
    ref = derived_image(
        v1["built"].ref, "mlrig-test/small-body:1", tmp_path, f"ENV MLRIG_MAX_BODY_BYTES={limit}\n"
    )
    running = image_run.run(ref, port=free_port())
    try:
        url = f"{running.url}/invocations"
        csv = {"Content-Type": "text/csv"}
        declared = requests.post(url, data=b"x" * (limit + 1), headers=csv, timeout=10)
        assert declared.status_code == 413, declared.text
        assert declared.json()["error_code"] and str(limit) in declared.json()["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: refused once it passes the limit
            for _ in range(16):
                yield b"y" * 1024

        streamed = requests.post(url, data=chunks(), headers=csv, timeout=10)
        assert streamed.status_code == 413, streamed.text
        # the server is still up and answers a request under the limit as before
        from sklearn.datasets import load_breast_cancer

        small = load_breast_cancer(as_frame=True).data.head(1).to_csv(index=False)
        assert len(small) < limit
        ok = requests.post(url, data=small, headers=csv, timeout=10)
        assert ok.status_code == 200 and ok.json() == {"predictions": v1["expected"][:1]}
    finally:
        docker_adapter.remove_container(running.container)
        docker_adapter.client().api.remove_image(ref)


def test_a_server_that_dies_at_start_reports_its_last_log_lines(v1: dict, tmp_path: Path) -> None:
    from mlrig.adapters import docker as docker_adapter

    ref = derived_image(
        v1["built"].ref, "mlrig-test/bad-env:1", tmp_path, "ENV MLRIG_MAX_BODY_BYTES=lots\n"
    )
    port = free_port()
    try:
        result = runner.invoke(app, ["image", "run", ref, "--port", str(port), "--smoke"])
        text = " ".join(one_line_error(result, 5).split())
        assert "exited before it became healthy" in text
        assert "a limit in the environment is not a number" in text  # from the container's log
        assert not serve_containers(port)
        result = runner.invoke(
            app, ["image", "run", v1["built"].ref, "--port", str(port), "--memory", "40m"]
        )
        assert "killed for using more than its --memory limit" in one_line_error(result, 5)
        assert not serve_containers(port)
    finally:
        for c in serve_containers(port):
            c.remove(force=True)
        docker_adapter.client().api.remove_image(ref)


def imported_by(*argv: str) -> tuple[set[str], str]:
    """Every module a whole `mlrig` command imported (`-X importtime`, a fresh process), and
    its standard error."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(VENV_BIN / "mlrig"), *argv],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    modules = {ln.rsplit("|", 1)[-1].strip() for ln in lines if ln.startswith("import time:")}
    assert {"mlrig.main", "docker", "requests"} <= modules  # the listing is real
    return modules, proc.stderr


def test_whole_build_and_push_never_import_mlflow(v1: dict, image_env: dict) -> None:
    """`import mlflow` was most of a whole `mlrig image build`: registry reads and the
    model's files go over MLflow's REST API and artifact proxy instead, and a push writes
    its model-version tags over REST too. The real commands, each in a fresh process."""
    from mlrig.adapters import docker as docker_adapter

    version, _ = register_model(MODEL, 0.3)  # a new version: its model layer is really built
    ref = "mlrig-test/no-mlflow:1"
    try:
        built, err = imported_by(
            "image", "build", "--model", f"models:/{MODEL}/{version}", "-t", ref
        )
        assert "mlrig.core.image.build" in built
        assert not [m for m in built if m == "mlflow" or m.startswith("mlflow.")]
        # v1 built the serving base from the same pins: this build ran only the model's steps
        assert "building the serving base" not in err
        assert "the model as one layer on the serving base" in " ".join(err.split())
        labels = docker_adapter.client().api.inspect_image(ref)["Config"]["Labels"]
        assert labels["io.mlrig.model.version"] == version
        pushed, _ = imported_by("image", "push", "--stack", "local", ref)
        assert "mlrig.core.image.push" in pushed
        assert not [m for m in pushed if m == "mlflow" or m.startswith("mlflow.")]
    finally:
        docker_adapter.client().api.remove_image(ref, noprune=True)


def test_the_proxy_download_holds_what_mlflows_client_downloads(
    image_env: dict, tmp_path: Path
) -> None:
    """Same files, same bytes (nested folders and MLflow's registered_model_meta included)."""
    import mlflow
    import mlflow.artifacts

    from mlrig.adapters import mlflow as mlflow_adapter

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input

    nested = tmp_path / "extra" / "deeper"
    nested.mkdir(parents=True)
    (nested / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "extra" / "notes with space.txt").write_text("x")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Echo(),
            artifacts={"extra": str(tmp_path / "extra")},
            registered_model_name="bc-nested",
            pip_requirements=[f"mlflow=={mlflow.__version__}"],
        )
    version = str(info.registered_model_version)
    uri = "models:/bc-nested@fresh"
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias("bc-nested", "fresh", version)
    mlflow_adapter.download_model_version("bc-nested", version, tmp_path / "rest", uri=uri)
    mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/bc-nested/{version}", dst_path=str(tmp_path / "client")
    )

    def files(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
        }

    got, want = files(tmp_path / "rest"), files(tmp_path / "client")
    assert any(name.endswith("deeper/table.csv") for name in want)
    assert "registered_model_meta" in want
    assert got == want


def test_labels_reach_the_image_exactly(v1: dict, tmp_path: Path) -> None:
    """Labels go into the image's config as they are: quotes, dollars, backslashes and
    line breaks included."""
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.oci import cache as image_cache

    labels = {
        "io.mlrig.test.quotes": 'say "hi"',
        "io.mlrig.test.dollar": "$HOME and ${PATH}",
        "io.mlrig.test.backslash": "C:\\path\\ end\\",
        "io.mlrig.test.lines": "two\nlines",
    }
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    cached = image_cache.lookup(v1["built"].image_id)
    assert cached is not None
    image_id = image.build_model_image(
        tmp_path, cached.base_id, ref="mlrig-test/labels:1", labels=labels
    )
    try:
        got = docker_adapter.client().api.inspect_image(image_id)["Config"]["Labels"]
        assert {k: got.get(k) for k in labels} == labels
    finally:
        docker_adapter.client().api.remove_image("mlrig-test/labels:1", noprune=True)


# -- push to the local stack -------------------------------------------------------------------
def test_push_verifies_digest_and_repush_is_a_no_op(v1: dict, image_env: dict) -> None:
    result = runner.invoke(app, ["image", "push", "--stack", "local", v1["built"].ref])
    assert result.exit_code == 0, result.output
    ref = result.stdout.strip().splitlines()[-1]
    repo, digest = ref.split("@")
    assert repo == image_env["outputs"].registry_url and digest.startswith("sha256:")
    client = local_registry(image_env)
    tag = f"{MODEL}-v{v1['version']}"
    assert client.manifest_digest("models", tag) == digest
    again = runner.invoke(app, ["image", "push", "--stack", "local", v1["built"].ref])
    assert again.exit_code == 0 and "already in the registry" in again.output
    assert again.stdout.strip().splitlines()[-1] == ref
    # the model version names the image it was pushed as, once however often it is pushed
    from mlflow import MlflowClient

    mv_tags = MlflowClient().get_model_version(MODEL, v1["version"]).tags
    assert mv_tags["mlrig.image.digest"] == digest
    assert mv_tags["mlrig.image.repository"] == repo
    assert mv_tags["mlrig.image.refs"].split().count(ref) == 1


def test_new_model_version_pushes_only_its_model_layer(v1: dict, v2: dict, image_env: dict) -> None:
    out = image_env["outputs"]
    pushed = [serving_push.push(v["built"].ref, out) for v in (v1, v2)]
    client = local_registry(image_env)

    def manifest(tag: str) -> dict:
        resp = client._get(
            f"/v2/models/manifests/{tag}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        return dict(resp.json())

    m1, m2 = (manifest(f"{MODEL}-v{v['version']}") for v in (v1, v2))
    assert [la["digest"] for la in m1["layers"][:-1]] == [la["digest"] for la in m2["layers"][:-1]]
    assert m1["layers"][-1]["digest"] != m2["layers"][-1]["digest"]
    assert m2["layers"][-1]["size"] < 200_000  # the model (~40 kB) and its metadata
    assert pushed[1].digest != pushed[0].digest


def test_tag_with_another_digest_is_a_conflict(v1: dict, image_env: dict, tmp_path: Path) -> None:
    from mlrig.adapters import docker as docker_adapter

    serving_push.push(v1["built"].ref, image_env["outputs"])
    (tmp_path / "Dockerfile").write_text(f"FROM {v1['built'].ref}\nLABEL other=1\n")
    docker_adapter.consume_stream(
        docker_adapter.client().api.build(
            path=str(tmp_path),
            tag="mlrig-test/other:1",
            network_mode="host",
            decode=True,
            rm=True,
            forcerm=True,
        ),
        "building",
    )
    before = local_registry(image_env).manifest_digest("models", f"{MODEL}-v{v1['version']}")
    result = runner.invoke(app, ["image", "push", "--stack", "local", "mlrig-test/other:1"])
    text = one_line_error(result, 7)
    assert "already exists with a different image" in text
    assert (
        local_registry(image_env).manifest_digest("models", f"{MODEL}-v{v1['version']}") == before
    )
    assert local_tags("mlrig-test/other:1") == ["mlrig-test/other:1"]
    docker_adapter.client().api.remove_image("mlrig-test/other:1")


def test_a_second_tag_is_the_verified_manifest_stored_again(
    v1: dict, image_env: dict, tmp_path: Path
) -> None:
    """A git commit label gives an image two tags: the engine pushes the first, the second
    stores the manifest just verified through the registry's API; both read back."""
    from mlrig.adapters import docker as docker_adapter

    labels = "io.mlrig.model.name=bc-two-tags io.mlrig.model.version=1"
    ref = derived_image(
        v1["built"].ref,
        "mlrig-test/two-tags:1",
        tmp_path,
        f"LABEL {labels} io.mlrig.git.commit=0123456789abcdef\n",
    )
    host = image_env["outputs"].registry.host
    seen: list[str] = []
    try:
        pushed = serving_push.push(ref, image_env["outputs"], progress=seen.append)
        assert pushed.tags == ["bc-two-tags-v1", "bc-two-tags-v1-0123456"]
        client = local_registry(image_env)
        assert {client.manifest_digest("models", t) for t in pushed.tags} == {pushed.digest}
        assert len([m for m in seen if m.startswith("pushing")]) == 1  # one engine push
        assert {f"{host}/models:{t}" for t in pushed.tags} <= set(local_tags(ref))
        again = serving_push.push(ref, image_env["outputs"])
        assert (again.tags, again.unchanged, again.digest) == ([], pushed.tags, pushed.digest)
    finally:
        for tag in local_tags(ref):
            docker_adapter.client().api.remove_image(tag, noprune=True)


def test_wrong_password_fails_before_pushing(
    v1: dict, image_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLRIG_TEST_BAD_PW", "not-the-password")
    oci_stack("wrongpw", image_env["outputs"].registry.host, "MLRIG_TEST_BAD_PW")
    result = runner.invoke(app, ["image", "push", "--stack", "wrongpw", v1["built"].ref])
    assert "rejected the credentials" in one_line_error(result, 6)


def test_unreachable_registry(v1: dict, image_env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLRIG_TEST_PW", "x")
    oci_stack("gone", f"127.0.0.1:{free_port()}", "MLRIG_TEST_PW")
    result = runner.invoke(app, ["image", "push", "--stack", "gone", v1["built"].ref])
    assert "unreachable" in one_line_error(result, 5)


def test_registry_stopped_mid_push(
    v1: dict, image_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLRIG_TEST_PW", "pw")
    with registry_process({"mlrig": "pw"}) as (host, proc):
        oci_stack("midpush", host, "MLRIG_TEST_PW")

        def kill_on_first_upload(chunk: dict) -> None:
            if chunk.get("status") == "Pushing" and proc.poll() is None:
                proc.kill()
                proc.wait(5)

        with pytest.raises((RemoteError, ServiceError)) as err:
            serving_push.push(
                v1["built"].ref, contract.load("midpush"), on_chunk=kill_on_first_upload
            )
        assert proc.poll() is not None  # it really died during the push
    assert "pushed" not in err.value.one_line().lower()
    assert not [t for t in local_tags(v1["built"].ref) if t.startswith(host)]


# -- ECR through moto, its data plane mapped to a local registry ---------------------------------
def ecr_stack(moto_url: str) -> None:
    out = contract.load("local")
    contract.save(
        out.model_copy(
            update={
                "name": "ecr",
                "kind": "aws",
                "region": "us-east-1",
                "registry": Registry(kind="ecr", url=f"{ECR_HOST}/{MODEL}", endpoint_url=moto_url),
            }
        )
    )


def test_ecr_push_with_token_and_endpoint_override(
    v1: dict, image_env: dict, aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv("HOME", str(tmp_path))  # to see that ~/.docker is left alone
    boto3.client("ecr", endpoint_url=aws_env, region_name="us-east-1").create_repository(
        repositoryName=MODEL, imageTagMutability="IMMUTABLE"
    )
    ecr_stack(aws_env)
    # a cached token that looks valid but the registry no longer accepts: refreshed once
    ecr._write_cache(
        ECR_HOST,
        ecr.EcrAuth(
            "AWS", "revoked", f"https://{ECR_HOST}", datetime.now(UTC) + timedelta(hours=3)
        ),
    )
    with registry_process({"AWS": MOTO_PASSWORD}) as (host, _proc):
        result = runner.invoke(
            app, ["image", "push", "--stack", "ecr", "--registry-endpoint", host, v1["built"].ref]
        )
        assert result.exit_code == 0, result.output
        ref = result.stdout.strip().splitlines()[-1]
        assert ref.startswith(f"{ECR_HOST}/{MODEL}@sha256:")
        client = RegistryClient(f"http://{host}", "AWS", MOTO_PASSWORD)
        assert client.manifest_digest(MODEL, f"{MODEL}-v{v1['version']}") == ref.split("@")[1]
    token = base64.b64decode(
        boto3.client("ecr", endpoint_url=aws_env).get_authorization_token()["authorizationData"][0][
            "authorizationToken"
        ]
    ).decode()
    assert token == f"AWS:{MOTO_PASSWORD}"
    assert not (tmp_path / ".docker" / "config.json").exists()
    assert MOTO_PASSWORD not in result.output


def test_ecr_token_the_registry_rejects(v1: dict, image_env: dict, aws_env: str) -> None:
    ecr_stack(aws_env)
    ecr.forget(ECR_HOST)
    with registry_process({"AWS": "a-newer-token"}) as (host, _proc):
        result = runner.invoke(
            app, ["image", "push", "--stack", "ecr", "--registry-endpoint", host, v1["built"].ref]
        )
    assert "rejected the ECR authorization token" in one_line_error(result, 6)


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input_is_one_line_each(
    v1: dict, image_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.adapters import docker as docker_adapter

    containers = len(docker_adapter.client().containers.list(all=True))
    r = runner.invoke(app, ["image", "build", "--model", f"models:/{MODEL}/999"])
    assert "does not exist" in one_line_error(r, 2)
    loose, _ = register_model("bc-loose", 1.0, pins=False)
    r = runner.invoke(app, ["image", "build", "--model", f"models:/bc-loose/{loose}"])
    assert "not pinned" in one_line_error(r, 2)
    r = runner.invoke(
        app,
        [
            "image",
            "build",
            "--model",
            f"models:/{MODEL}/1",
            "--base-image",
            "mlrig-test/no-such-base:1",
        ],
    )
    assert "not present" in one_line_error(r, 4)
    r = runner.invoke(app, ["image", "build", "--model", f"models:/{MODEL}/1", "--stack", "nope"])
    assert "no stack named 'nope'" in one_line_error(r, 3)
    r = runner.invoke(app, ["image", "run", "mlrig-test/absent:1"])
    assert "does not exist" in one_line_error(r, 2)
    r = runner.invoke(app, ["image", "build", "--model", f"models:/{MODEL}@no-such-alias"])
    assert "does not exist" in one_line_error(r, 2)
    with monkeypatch.context() as m:
        m.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
        r = runner.invoke(app, ["image", "build", "--model", f"models:/{MODEL}/1"])
        assert "rejected the credentials" in one_line_error(r, 6)
    with monkeypatch.context() as m:
        m.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
        r = runner.invoke(app, ["image", "build", "--model", f"models:/{MODEL}/1"])
        assert "unreachable" in one_line_error(r, 5)
    assert len(docker_adapter.client().containers.list(all=True)) == containers
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    docker_adapter.client.cache_clear()
    try:
        r = runner.invoke(app, ["image", "build", "--model", f"models:/{MODEL}/1"])
        assert "no Docker engine answers" in one_line_error(r, 5)
    finally:
        monkeypatch.delenv("DOCKER_HOST")
        docker_adapter.client.cache_clear()


def test_generated_repo_defaults_to_its_latest_model(v2: dict, tmp_path: Path) -> None:
    # a generated repo's project_name is a Python package name (the answers file is checked
    # when read), so its registered model is too: the same model under such a name
    from mlflow import MlflowClient

    client = MlflowClient()
    name = MODEL.replace("-", "_")
    latest = client.copy_model_version(f"models:/{MODEL}/{v2['version']}", name)
    (tmp_path / ".copier-answers.yml").write_text(f"project_name: {name}\nstack: local\n")
    assert image_model.default_model_uri(tmp_path) == f"models:/{name}/{latest.version}"


def test_labels_name_the_run_not_the_repo_the_build_ran_in(v1: dict, tmp_path: Path) -> None:
    """A run made outside any pipeline: the labels carry what the run recorded, never the
    HEAD or dvc.lock of the unrelated repo the build happened to run in."""
    import subprocess

    from mlflow import MlflowClient

    from mlrig.adapters import docker as docker_adapter

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  train:\n    cmd: python t.py\n"
        "    deps:\n    - path: data/raw.csv\n      md5: abc123\n"
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "dvc.lock"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "data"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    built = image.build(f"models:/{MODEL}/{v1['version']}", repo=repo, tag="mlrig-test/prov:1")
    try:
        labels = docker_adapter.client().api.inspect_image(built.ref)["Config"]["Labels"]
        run = MlflowClient().get_run(built.provenance.run_id)
        recorded = run.data.tags.get("mlflow.source.git.commit")
        assert head not in labels.values()
        assert labels.get("io.mlrig.git.commit") == recorded
        assert labels.get("org.opencontainers.image.revision") == recorded
        assert "io.mlrig.dvc.data" not in labels  # the run recorded no DVC hashes
        # only labels differ from v1's image: every layer is shared
        layers = docker_adapter.client().api.inspect_image(v1["built"].ref)["RootFS"]
        assert docker_adapter.client().api.inspect_image(built.ref)["RootFS"] == layers
    finally:
        docker_adapter.client().api.remove_image(built.ref, noprune=True)


def test_other_flavors_are_served_by_mlflow_pyfunc(image_env: dict) -> None:
    """A custom pyfunc model: the image carries mlflow-skinny and MLflow's own scoring."""
    import mlflow
    import numpy
    import pandas
    from mlflow.pyfunc import scoring_server

    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input["x"] * 2

    example = pandas.DataFrame({"x": [1.0, 2.5]})
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Doubler(),
            input_example=example,
            registered_model_name="bc-pyfunc",
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"pandas=={pandas.__version__}",
                f"numpy=={numpy.__version__}",
            ],
        )
    uri = f"models:/bc-pyfunc/{info.registered_model_version}"
    built = image.build(uri, tag="mlrig-test/pyfunc:1")
    try:
        running = image_run.run(built.ref, port=free_port(), smoke=True)
        model = mlflow.pyfunc.load_model(uri)
        body = json.dumps({"dataframe_split": json.loads(example.to_json(orient="split"))})
        want = scoring_server.invocations(
            body, "application/json", model, model.metadata.get_input_schema()
        )
        assert running.smoke_predictions == json.loads(want.response)["predictions"]
    finally:
        from mlrig.adapters import docker as docker_adapter

        docker_adapter.client().api.remove_image(built.ref, noprune=True)
