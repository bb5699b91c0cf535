"""Serving-image benchmark: `mlflow models build-docker`'s Dockerfile vs `mlrig image build`.

One run, same model (breast-cancer LogisticRegression logged to a real local stack), same
offline base: size, cold build, rebuild after a new model version, bytes pushed for it,
`docker run` to first correct prediction, one-row latency, throughput with 4 clients.
Run: .venv/bin/python bench/image_bench.py [--requests 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "bench-bc"
REF_PORT = 8080  # MLflow's image listens on nginx :8080 (uvicorn :8000), not configurable


def log(msg: str) -> None:
    print(f"• {msg}", file=sys.stderr, flush=True)


def register(c: float) -> tuple[str, dict[str, Any], list[int]]:
    import cloudpickle
    import mlflow
    import numpy
    import pandas
    import scipy
    import sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500)).fit(x, y)
    reqs = [f"scikit-learn=={sklearn.__version__}"] + [
        f"{m.__name__}=={m.__version__}" for m in (numpy, pandas, scipy, cloudpickle)]
    mlflow.set_experiment("image-bench")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=reqs,
                                        input_example=x.head(3), registered_model_name=MODEL)
    row = x.head(1)
    body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
    return str(info.registered_model_version), body, model.predict(row).tolist()


# -- builds -------------------------------------------------------------------------------------
def build_context(path: Path, tag: str, nocache: bool) -> float:
    from mlrig.adapters import docker as docker_adapter

    start = time.monotonic()
    docker_adapter.consume_stream(docker_adapter.client().api.build(
        path=str(path), tag=tag, network_mode="host", rm=True, forcerm=True, decode=True,
        nocache=nocache), f"building {tag}")
    return time.monotonic() - start


def mlflow_stand_in(base: str, tag: str) -> None:
    """The offline base, shaped like python:<ver>-slim for MLflow's Dockerfile."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Dockerfile").write_text(
            f"FROM {base}\nRUN ln -sf /usr/bin/python3 /usr/bin/python && "
            "rm -f /usr/lib/python3*/EXTERNALLY-MANAGED\n")
        build_context(Path(tmp), tag, nocache=False)


def mlflow_build(version: str, tag: str, stand_in: str, nocache: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([str(Path(sys.executable).with_name("mlflow")), "models",
                               "generate-dockerfile", "-m", f"models:/{MODEL}/{version}",
                               "--env-manager", "local", "-d", tmp],
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"generate-dockerfile failed: {proc.stderr[-500:]}")
        dockerfile = Path(tmp) / "Dockerfile"
        lines = dockerfile.read_text().splitlines()
        lines = [f"FROM {stand_in}" if ln.startswith("FROM ") else ln for ln in lines]
        dockerfile.write_text("\n".join(lines) + "\n")
        return build_context(Path(tmp), tag, nocache)


def mlrig_build(version: str, nocache: bool) -> tuple[str, float]:
    from mlrig.core import image

    start = time.monotonic()
    built = image.build(f"models:/{MODEL}/{version}", no_cache=nocache)
    return built.ref, time.monotonic() - start


# -- push ---------------------------------------------------------------------------------------
def new_bytes(outputs: Any, old_ref: str, new_ref: str) -> int:
    """Blob bytes the registry had to receive for new_ref after old_ref was pushed."""
    from mlrig.core import serving_push

    first = serving_push.push(old_ref, outputs)
    second = serving_push.push(new_ref, outputs)
    target = serving_push.target_for(outputs)
    client = serving_push._Registry(target.api_base, target.username, target.password)

    def manifest(digest: str) -> dict[str, Any]:
        resp = client._get(f"/v2/{target.repository}/manifests/{digest}", headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        return dict(resp.json())

    m1, m2 = manifest(first.digest), manifest(second.digest)
    old = {la["digest"] for la in m1["layers"]}
    return m2["config"]["size"] + sum(la["size"] for la in m2["layers"]
                                      if la["digest"] not in old)


# -- serving ------------------------------------------------------------------------------------
def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", "/invocations", body=body,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def cold_start(ref: str, port: int, env: dict[str, str], body: bytes,
               expected: list[int]) -> float:
    from mlrig.adapters import docker as docker_adapter

    cli = docker_adapter.client()
    start = time.monotonic()
    container = cli.containers.run(ref, detach=True, network_mode="host", environment=env)
    try:
        while time.monotonic() - start < 180:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                status, out = post(conn, body)
                conn.close()
                if status == 200 and json.loads(out)["predictions"] == expected:
                    return time.monotonic() - start
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                pass
            time.sleep(0.02)
        raise SystemExit(f"{ref} never answered correctly")
    finally:
        container.remove(force=True)


def serve(ref: str, port: int, env: dict[str, str], body: bytes) -> Callable[[], None]:
    from mlrig.adapters import docker as docker_adapter

    container = docker_adapter.client().containers.run(ref, detach=True, network_mode="host",
                                                       environment=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # nginx answers 502 until MLflow's workers are up
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            if post(conn, body)[0] == 200:
                time.sleep(3)  # let every worker finish loading before measuring
                break
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    else:
        container.remove(force=True)
        raise SystemExit(f"{ref} never became ready")
    return lambda: container.remove(force=True)


def latency(port: int, body: bytes, n: int, errors: list[str]) -> tuple[float, float]:
    """Sequential one-row requests on one keep-alive connection; non-200s are recorded."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(200):
        post(conn, body)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        status, out = post(conn, body)
        times.append(time.perf_counter() - start)
        if status != 200:
            errors.append(f"{status}: {out[:200]!r}")
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000


def throughput(port: int, body: bytes, seconds: float, errors: list[str],
               clients: int = 4) -> float:
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < stop:
            status, out = post(conn, body)
            if status == 200:
                counts[i] += 1
            else:
                errors.append(f"{status}: {out[:200]!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


# -- main ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mlrig-image-bench-"))
    os.environ["MLRIG_HOME"] = str(home)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    from mlrig.core import engine, stacks
    from mlrig.core.local_stack import LocalStack, port_is_free

    if not port_is_free(REF_PORT) or not port_is_free(8000):
        raise SystemExit("ports 8080 and 8000 must be free (MLflow's image uses them)")
    base = engine.ensure_base_image(log)
    stack = LocalStack("bench")
    try:
        outputs = stack.up(progress=log)
        os.environ.update(stacks.client_env(outputs))
        results = run(outputs, base, args)
    finally:
        stack.down()
        shutil.rmtree(home, ignore_errors=True)
    report(results, base, args)


def run(outputs: Any, base: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.local_stack import free_port

    v1, body_doc, expected = register(1.0)
    v2, _, _ = register(0.05)
    body = json.dumps(body_doc).encode()
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        model_bytes = sum(f.stat().st_size for f in Path(mlflow.artifacts.download_artifacts(
            f"models:/{MODEL}/{v2}", dst_path=tmp)).rglob("*") if f.is_file())
    stand_in = f"mlrig-bench/python:{platform.python_version()}-slim"
    mlflow_stand_in(base, stand_in)
    res: dict[str, dict[str, Any]] = {"mlflow": {}, "mlrig": {}}
    log("cold builds (no cache)")
    res["mlflow"]["cold_build_s"] = mlflow_build(v1, "mlrig-bench/mlflow:v1", stand_in, True)
    ref1, res["mlrig"]["cold_build_s"] = mlrig_build(v1, nocache=True)
    log("rebuilds after a new model version")
    res["mlflow"]["rebuild_s"] = mlflow_build(v2, "mlrig-bench/mlflow:v2", stand_in, False)
    ref2, res["mlrig"]["rebuild_s"] = mlrig_build(v2, nocache=False)
    refs = {"mlflow": ("mlrig-bench/mlflow:v1", "mlrig-bench/mlflow:v2"), "mlrig": (ref1, ref2)}
    api = docker_adapter.client().api
    for name, (_old, new) in refs.items():
        info = api.inspect_image(new)
        res[name]["size_mb"] = info["Size"] / 1e6
        res[name]["layers"] = len(info["RootFS"]["Layers"])
    log("pushes (v1 then v2) to the stack's registry")
    for name, (old, new) in refs.items():
        res[name]["pushed_new_version_kb"] = new_bytes(outputs, old, new) / 1e3
    port = free_port()
    envs = {"mlflow": {}, "mlrig": {"PORT": str(port)}}
    ports = {"mlflow": REF_PORT, "mlrig": port}
    log("cold starts")
    for name in ("mlflow", "mlrig"):
        res[name]["start_s_all"] = []
    for _ in range(args.starts):  # alternate, so a busy machine slows both alike
        for name in ("mlflow", "mlrig"):
            res[name]["start_s_all"].append(cold_start(refs[name][1], ports[name], envs[name],
                                                       body, expected))
    for name in ("mlflow", "mlrig"):
        res[name]["start_s"] = statistics.median(res[name]["start_s_all"])
        log(f"serving {name}")
        stop = serve(refs[name][1], ports[name], envs[name], body)
        try:
            errors: list[str] = []
            res[name]["p50_ms"], res[name]["p99_ms"] = latency(ports[name], body,
                                                               args.requests, errors)
            res[name]["rps"] = throughput(ports[name], body, args.seconds, errors)
            res[name]["errors"] = len(errors)
            res[name]["first_errors"] = errors[:3]
        finally:
            stop()
    res["model"] = {"model_kb": model_bytes / 1e3}
    for name, (old, new) in refs.items():
        api.remove_image(old, force=True)
        if name == "mlflow":
            api.remove_image(new, force=True)
    return res


ROWS = [("image size (MB)", "size_mb", "{:.0f}"), ("layers", "layers", "{}"),
        ("cold build (s)", "cold_build_s", "{:.1f}"),
        ("rebuild after new model version (s)", "rebuild_s", "{:.1f}"),
        ("bytes pushed for the new version (kB)", "pushed_new_version_kb", "{:.0f}"),
        ("docker run -> first correct prediction (s)", "start_s", "{:.2f}"),
        ("p50 one-row latency (ms)", "p50_ms", "{:.2f}"),
        ("p99 one-row latency (ms)", "p99_ms", "{:.2f}"),
        ("throughput, 4 clients (req/s)", "rps", "{:.0f}"),
        ("non-200 answers while measuring", "errors", "{}")]


def report(res: dict[str, dict[str, Any]], base: str, args: argparse.Namespace) -> None:
    from importlib import metadata

    from rich.console import Console
    from rich.table import Table

    ref, ours = res["mlflow"], res["mlrig"]
    table = Table(title="serving images: mlflow models build-docker vs mlrig image build")
    for col in ("", "mlflow build-docker", "mlrig", "mlrig / mlflow"):
        table.add_column(col)
    md = ["| | mlflow build-docker | mlrig | mlrig / mlflow |", "|---|---|---|---|"]
    for label, key, fmt in ROWS:
        ratio = f"{ours[key] / ref[key]:.2f}" if ref[key] and key != "errors" else "-"
        cells = [label, fmt.format(ref[key]), fmt.format(ours[key]), ratio]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    Console().print(table)
    meta = {"when": datetime.now(UTC).isoformat(), "cpus": os.cpu_count(),
            "base_image": base, "model_kb": res["model"]["model_kb"],
            "versions": {p: metadata.version(p) for p in ("mlflow", "scikit-learn", "docker")},
            "requests": args.requests, "seconds": args.seconds}
    print(f"model artifacts: {meta['model_kb']:.0f} kB; CPUs: {meta['cpus']}")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"image-{stamp}.json").write_text(json.dumps({"meta": meta, **res}, indent=2))
    (RESULTS / f"image-{stamp}.md").write_text(
        "\n".join(md) + f"\n\n{json.dumps(meta)}\n")


if __name__ == "__main__":
    main()
