"""Serving-image benchmark: `mlflow models build-docker`, `bentoml containerize` and
`mlrig image build`, in one run, on the same model (breast-cancer LogisticRegression
pipeline) and the same offline base: size, cold build, rebuild after a new model version,
bytes pushed for it, `docker run` to first correct prediction, one-row latency, throughput.
Run: .venv/bin/python bench/image_bench.py [--requests 2000] [--seconds 10] [--no-bentoml]
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import record, utc_stamp

from mlrig.wait import WaitTimeout, wait_until

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
        f"{m.__name__}=={m.__version__}" for m in (numpy, pandas, scipy, cloudpickle)
    ]
    mlflow.set_experiment("image-bench")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            pip_requirements=reqs,
            input_example=x.head(3),
            registered_model_name=MODEL,
        )
    row = x.head(1)
    body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
    return str(info.registered_model_version), body, model.predict(row).tolist()


# -- builds -------------------------------------------------------------------------------------
def build_context(path: Path, tag: str, nocache: bool) -> float:
    from mlrig.adapters import docker as docker_adapter

    start = time.monotonic()
    docker_adapter.consume_stream(
        docker_adapter.client().api.build(
            path=str(path),
            tag=tag,
            network_mode="host",
            rm=True,
            forcerm=True,
            decode=True,
            nocache=nocache,
        ),
        f"building {tag}",
    )
    return time.monotonic() - start


def mlflow_build(version: str, tag: str, stand_in: str, nocache: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "models",
                "generate-dockerfile",
                "-m",
                f"models:/{MODEL}/{version}",
                "--env-manager",
                "local",
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
        )
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
    from mlrig.adapters.registry import RegistryClient
    from mlrig.core import serving_push

    first = serving_push.push(old_ref, outputs)
    second = serving_push.push(new_ref, outputs)
    target = serving_push.target_for(outputs)
    client = RegistryClient(target.api_base, target.username, target.password)

    def manifest(digest: str) -> dict[str, Any]:
        resp = client._get(
            f"/v2/{target.repository}/manifests/{digest}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        return dict(resp.json())

    m1, m2 = manifest(first.digest), manifest(second.digest)
    old = {la["digest"] for la in m1["layers"]}
    return m2["config"]["size"] + sum(la["size"] for la in m2["layers"] if la["digest"] not in old)


# -- serving ------------------------------------------------------------------------------------
@dataclass
class Contender:
    """How to start one image and ask it for the one-row prediction."""

    name: str
    refs: tuple[str, str]  # model version 1, version 2 (served: version 2)
    port: int
    env: dict[str, str]
    path: str
    body: bytes
    answer: Callable[[Any], Any]  # the predictions inside a decoded answer


def post(conn: http.client.HTTPConnection, c: Contender) -> tuple[int, bytes]:
    conn.request("POST", c.path, body=c.body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


# a server still starting refuses, resets, or answers half-written or foreign JSON
NOT_YET = (OSError, http.client.HTTPException, ValueError, KeyError, TypeError)


def until_answered(c: Contender, ok: Callable[[int, bytes], bool], interval: float) -> bool:
    """Post the one-row request (a fresh connection each time) until `ok(status, body)`;
    False when 180 s pass without it."""

    def answered() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=2)
        try:
            return ok(*post(conn, c))
        finally:
            conn.close()

    try:
        wait_until(answered, timeout=180, what=c.refs[1], interval=interval, retry_on=NOT_YET)
    except WaitTimeout:
        return False
    return True


def cold_start(c: Contender, expected: list[int]) -> float:
    from mlrig.adapters import docker as docker_adapter

    cli = docker_adapter.client()
    start = time.monotonic()
    container = cli.containers.run(c.refs[1], detach=True, network_mode="host", environment=c.env)
    try:
        if not until_answered(
            c, lambda status, out: status == 200 and c.answer(json.loads(out)) == expected, 0.02
        ):
            raise SystemExit(f"{c.refs[1]} never answered correctly")
        return time.monotonic() - start
    finally:
        container.remove(force=True)


def serve(c: Contender) -> Callable[[], None]:
    from mlrig.adapters import docker as docker_adapter

    container = docker_adapter.client().containers.run(
        c.refs[1], detach=True, network_mode="host", environment=c.env
    )
    # nginx answers 502 until MLflow's workers are up
    if not until_answered(c, lambda status, _out: status == 200, 0.05):
        container.remove(force=True)
        raise SystemExit(f"{c.refs[1]} never became ready")
    time.sleep(3)  # let every worker finish loading before measuring
    return lambda: container.remove(force=True)


def latency(c: Contender, n: int, errors: list[str]) -> tuple[float, float]:
    """Sequential one-row requests on one keep-alive connection; non-200s are recorded."""
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    for _ in range(200):
        post(conn, c)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        status, out = post(conn, c)
        times.append(time.perf_counter() - start)
        if status != 200:
            errors.append(f"{status}: {out[:200]!r}")
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000


def throughput(c: Contender, seconds: float, errors: list[str], clients: int = 4) -> float:
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
        while time.monotonic() < stop:
            status, out = post(conn, c)
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


# -- BentoML (a benchmark dependency only: its own venv) ------------------------------------------
BENTO_DIR = Path(__file__).resolve().parent / "bentoml_service"
BENTOML_VERSION = "1.4.40"
BENTO_PORT = 3000  # bentoml serve's default inside its image


def bentoml_venv(path: Path) -> Path:
    """A venv with BentoML and the host's scikit-learn stack, created on first use."""
    from importlib import metadata

    exe = path / "bin" / "python"
    pins = [f"bentoml=={BENTOML_VERSION}"] + [
        f"{p}=={metadata.version(p)}" for p in ("scikit-learn", "numpy", "pandas", "scipy")
    ]
    marker = path / "mlrig-pins.txt"
    if not exe.exists() or not marker.exists() or marker.read_text() != "\n".join(pins):
        log(f"creating {path} with {', '.join(pins)}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
        subprocess.run([str(exe), "-m", "pip", "install", "-q", *pins], check=True)
        marker.write_text("\n".join(pins))
    return exe


def bentoml_build(
    exe: Path, bentoml_home: Path, base: str, c: float, tag: str, nocache: bool
) -> float:
    """Save the same pipeline into BentoML's store, `bentoml build`, `bentoml containerize`."""
    from importlib import metadata

    env = {
        **os.environ,
        "BENTOML_HOME": str(bentoml_home),
        "BENTOML_DO_NOT_TRACK": "true",
        "DOCKER_BUILDKIT": "0",
    }  # this engine has no buildx
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        shutil.copy(BENTO_DIR / "service.py", project / "service.py")
        pins = [f"{p}=={metadata.version(p)}" for p in ("scikit-learn", "numpy", "pandas", "scipy")]
        (project / "bentofile.yaml").write_text(
            json.dumps(
                {
                    "service": "service:BreastCancer",
                    "include": ["service.py"],
                    "python": {"packages": pins},
                    "docker": {"base_image": base},
                }
            )
        )
        save = (
            "import sys, bentoml\n"
            "from sklearn.datasets import load_breast_cancer\n"
            "from sklearn.linear_model import LogisticRegression\n"
            "from sklearn.pipeline import make_pipeline\n"
            "from sklearn.preprocessing import StandardScaler\n"
            "x, y = load_breast_cancer(return_X_y=True)\n"
            "m = make_pipeline(StandardScaler(), LogisticRegression(C=float(sys.argv[1]),"
            " max_iter=500)).fit(x, y)\n"
            "bentoml.sklearn.save_model('bench-bc', m)\n"
        )
        subprocess.run([str(exe), "-c", save, str(c)], env=env, check=True, capture_output=True)
        bentoml = str(exe.with_name("bentoml"))
        start = time.monotonic()
        for argv in (
            [bentoml, "build"],
            [
                bentoml,
                "containerize",
                "breast_cancer:latest",
                "--backend",
                "docker",
                "--opt",
                "network=host",
                "-t",
                tag,
            ]
            + (["--opt", "no-cache"] if nocache else []),
        ):
            proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{' '.join(argv[1:3])} failed: {proc.stderr[-800:]}")
        return time.monotonic() - start


# -- main ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--no-bentoml", action="store_true", help="leave BentoML out")
    parser.add_argument(
        "--bentoml-venv", type=Path, default=Path.home() / ".cache" / "mlrig-bench" / "bentoml-venv"
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mlrig-image-bench-"))
    os.environ["MLRIG_HOME"] = str(home)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    from mlrig.core import engine, stacks
    from mlrig.core.local_stack import LocalStack, port_is_free

    for port in (REF_PORT, 8000) + (() if args.no_bentoml else (BENTO_PORT,)):
        if not port_is_free(port):
            raise SystemExit(f"port {port} must be free (a reference image listens on it)")
    base = engine.ensure_base_image(log)
    stack = LocalStack("bench")
    try:
        outputs = stack.up(progress=log)
        os.environ.update(stacks.client_env(outputs))
        results = run(outputs, base, args, home)
    finally:
        stack.down()
        shutil.rmtree(home, ignore_errors=True)
    report(results, base, args)


def stand_in(base: str, tag: str, extra: str = "") -> None:
    """The offline base shaped like python:<ver>-slim (what both references build FROM)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Dockerfile").write_text(
            f"FROM {base}\nRUN ln -sf /usr/bin/python3 /usr/bin/python && "
            f"rm -f /usr/lib/python3*/EXTERNALLY-MANAGED\n{extra}"
        )
        build_context(Path(tmp), tag, nocache=False)


def run(outputs: Any, base: str, args: argparse.Namespace, home: Path) -> dict[str, dict[str, Any]]:
    import mlflow.artifacts

    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.local_stack import free_port

    v1, body_doc, expected = register(1.0)
    v2, _, _ = register(0.05)
    with tempfile.TemporaryDirectory() as tmp:
        model_bytes = sum(
            f.stat().st_size
            for f in Path(
                mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{v2}", dst_path=tmp)
            ).rglob("*")
            if f.is_file()
        )
    mlflow_base = f"mlrig-bench/python:{platform.python_version()}-slim"
    stand_in(base, mlflow_base)
    names = ["mlflow", "bentoml", "mlrig"] if not args.no_bentoml else ["mlflow", "mlrig"]
    res: dict[str, dict[str, Any]] = {n: {} for n in names}
    refs = {
        "mlflow": ("mlrig-bench/mlflow:mlflow-v1", "mlrig-bench/mlflow:mlflow-v2"),
        "bentoml": ("mlrig-bench/bentoml:bentoml-v1", "mlrig-bench/bentoml:bentoml-v2"),
    }
    if "bentoml" in names:
        exe = bentoml_venv(args.bentoml_venv)
        bento_base = "mlrig-bench/bentoml-base:py3.11"
        # uv inside BentoML's build reads SSL_CERT_FILE to trust this machine's TLS proxy
        stand_in(base, bento_base, "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n")
    log("cold builds (no cache)")
    res["mlflow"]["cold_build_s"] = mlflow_build(v1, refs["mlflow"][0], mlflow_base, True)
    if "bentoml" in names:
        res["bentoml"]["cold_build_s"] = bentoml_build(
            exe, home / "bentoml", bento_base, 1.0, refs["bentoml"][0], True
        )
    ref1, res["mlrig"]["cold_build_s"] = mlrig_build(v1, nocache=True)
    log("rebuilds after a new model version")
    res["mlflow"]["rebuild_s"] = mlflow_build(v2, refs["mlflow"][1], mlflow_base, False)
    if "bentoml" in names:
        res["bentoml"]["rebuild_s"] = bentoml_build(
            exe, home / "bentoml", bento_base, 0.05, refs["bentoml"][1], False
        )
    ref2, res["mlrig"]["rebuild_s"] = mlrig_build(v2, nocache=False)
    refs["mlrig"] = (ref1, ref2)
    api = docker_adapter.client().api
    for name in names:
        info = api.inspect_image(refs[name][1])
        res[name]["size_mb"] = info["Size"] / 1e6
        res[name]["layers"] = len(info["RootFS"]["Layers"])
    log("pushes (v1 then v2) to the stack's registry")
    for name in names:
        res[name]["pushed_new_version_kb"] = new_bytes(outputs, *refs[name]) / 1e3
    port = free_port()
    row = body_doc["dataframe_split"]["data"]
    mlflow_body = json.dumps(body_doc).encode()
    contenders = {
        "mlflow": Contender(
            "mlflow",
            refs["mlflow"],
            REF_PORT,
            {},
            "/invocations",
            mlflow_body,
            lambda d: d["predictions"],
        ),
        "bentoml": Contender(
            "bentoml",
            refs.get("bentoml", ("", "")),
            BENTO_PORT,
            {},
            "/predict",
            json.dumps({"input": row}).encode(),
            lambda d: d,
        ),
        "mlrig": Contender(
            "mlrig",
            refs["mlrig"],
            port,
            {"PORT": str(port)},
            "/invocations",
            mlflow_body,
            lambda d: d["predictions"],
        ),
    }
    log("cold starts")
    for name in names:
        res[name]["start_s_all"] = []
    for _ in range(args.starts):  # alternate, so a busy machine slows all alike
        for name in names:
            res[name]["start_s_all"].append(cold_start(contenders[name], expected))
    for name in names:
        res[name]["start_s"] = statistics.median(res[name]["start_s_all"])
        log(f"serving {name}")
        stop = serve(contenders[name])
        try:
            errors: list[str] = []
            res[name]["p50_ms"], res[name]["p99_ms"] = latency(
                contenders[name], args.requests, errors
            )
            res[name]["rps"] = throughput(contenders[name], args.seconds, errors)
            res[name]["errors"] = len(errors)
            res[name]["first_errors"] = errors[:3]
        finally:
            stop()
    res["model"] = {"model_kb": model_bytes / 1e3}
    for name in names:  # the stand-in bases stay, as build cache for the next run
        for ref in refs[name]:
            api.remove_image(ref, force=True)
    for img in api.images():
        for tag in img.get("RepoTags") or []:
            if tag.startswith(f"{outputs.registry.host}/"):
                api.remove_image(tag, force=True)
    return res


ROWS = [
    ("image size (MB)", "size_mb", "{:.0f}"),
    ("layers", "layers", "{}"),
    ("cold build (s)", "cold_build_s", "{:.1f}"),
    ("rebuild after new model version (s)", "rebuild_s", "{:.1f}"),
    ("bytes pushed for the new version (kB)", "pushed_new_version_kb", "{:.0f}"),
    ("docker run -> first correct prediction (s)", "start_s", "{:.2f}"),
    ("p50 one-row latency (ms)", "p50_ms", "{:.2f}"),
    ("p99 one-row latency (ms)", "p99_ms", "{:.2f}"),
    ("throughput, 4 clients (req/s)", "rps", "{:.0f}"),
    ("non-200 answers while measuring", "errors", "{}"),
]


def report(res: dict[str, dict[str, Any]], base: str, args: argparse.Namespace) -> None:
    from importlib import metadata

    from rich.console import Console
    from rich.table import Table

    names = [n for n in ("mlflow", "bentoml", "mlrig") if n in res]
    heads = {
        "mlflow": "mlflow build-docker",
        "bentoml": "bentoml containerize",
        "mlrig": "mlrig image build",
    }
    others = [n for n in names if n != "mlrig"]
    cols = [""] + [heads[n] for n in names] + [f"mlrig / {n}" for n in others]
    table = Table(title="serving images, same model and base, one run")
    for col in cols:
        table.add_column(col)
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for label, key, fmt in ROWS:
        cells = [label] + [fmt.format(res[n][key]) for n in names]
        cells += [
            f"{res['mlrig'][key] / res[n][key]:.2f}" if res[n][key] and key != "errors" else "-"
            for n in others
        ]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    Console().print(table)
    load = os.getloadavg()
    meta = {
        "when": datetime.now(UTC).isoformat(),
        "cpus": os.cpu_count(),
        "load_avg_end": [round(x, 2) for x in load],
        "base_image": base,
        "model_kb": res["model"]["model_kb"],
        "versions": {p: metadata.version(p) for p in ("mlflow", "scikit-learn", "docker")}
        | ({"bentoml": BENTOML_VERSION} if "bentoml" in res else {}),
        "requests": args.requests,
        "seconds": args.seconds,
    }
    print(
        f"model artifacts: {meta['model_kb']:.0f} kB; CPUs: {meta['cpus']}; "
        f"load average at the end: {meta['load_avg_end']}"
    )
    md.append(f"\n{json.dumps(meta)}")
    record(f"image-{utc_stamp()}", {"meta": meta, **res}, "\n".join(md))


if __name__ == "__main__":
    main()
