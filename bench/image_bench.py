"""Serving-image benchmark: `mlrig image build` / `push` vs `bentoml build` + `containerize` vs
MLflow's Dockerfile build, on the same model (breast-cancer LogisticRegression pipeline) and the
same offline base. Every timing is a whole command in a fresh process, the way users run it,
interleaved sample by sample in one run: rebuild after a new model version (the headline),
push of that version, cold builds; plus bytes moved per version, image size and serving.
Run: .venv/bin/python bench/image_bench.py [--samples 5] [--quick] [--no-bentoml]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BIN,
    CLIENT,
    IN_PROCESS,
    MLRIG,
    WHOLE,
    WHOLE_INTERLEAVED,
    fresh_home,
    interleave,
    machine,
    markdown,
    record,
    row,
    run_timed,
    sh,
    utc_stamp,
)

from mlrig.wait import WaitTimeout, wait_until

MODEL = "bench-bc"
REF_PORT = 8080  # MLflow's image listens on nginx :8080 (uvicorn :8000), not configurable
BENTO_PORT = 3000  # bentoml serve's default inside its image
MLFLOW = str(BIN / "mlflow")
BENTO_DIR = Path(__file__).resolve().parent / "bentoml_service"
BENTOML_VERSION = "1.4.40"
# how the rows that are not timings were taken
INSPECT = "docker image inspect (last version)"
MANIFESTS = "registry manifests: config + layers no earlier version had"
# row labels shared by the tools, so a report can put them side by side
REBUILD = "rebuild after a new model version"
COLD = "cold build (--no-cache), 1 sample"
PUSH = "push of a new model version (only its new layers move)"
PUSH_TWO = "push of a new model version under two tags (version, version-commit)"
GIT_COMMIT = "mlflow.source.git.commit"
COMMIT = "5eed" * 10  # the commit the two-tag versions' runs name
BYTES = "bytes moved for a new model version"
RATIO = "bytes moved / the model's bytes (goal <= 1.5)"
TOOLS = {
    "mlrig": "mlrig image build",
    "bentoml": "bentoml build + containerize",
    # build-docker runs this docker build itself, with no network option: this engine's
    # bridge network has no DNS, so its apt/pip steps could not run (see README)
    "mlflow": "mlflow generate-dockerfile + docker build --network host",
}


STARTED = time.monotonic()


def log(msg: str) -> None:
    print(f"• {time.monotonic() - STARTED:5.0f} s  {msg}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    """One run's set-up: the client's environment, the registry, where things live."""

    home: Path
    env: dict[str, str]  # fresh MLRIG_HOME + `mlrig stack env`: what a user's shell has
    docker_env: dict[str, str]  # env + a temporary DOCKER_CONFIG logged in to the registry
    registry: str  # host:port
    repository: str  # mlrig's repository on it
    auth: tuple[str, str]
    base: str  # mlrig's offline base, which the stand-ins are made from
    bento_exe: Path | None = None
    bento_env: dict[str, str] = field(default_factory=dict)
    project: Path | None = None  # the BentoML project (service.py + bentofile.yaml)
    mlflow_from: str = ""  # the base MLflow's Dockerfile names, once tagged onto the stand-in
    tags: list[str] = field(default_factory=list)  # every image tag the run made
    containers: list[str] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)  # the parts of summed samples

    def part(self, tool: str, step: str, seconds: float) -> float:
        self.parts.setdefault(f"{tool}|{step}", []).append(seconds)
        return seconds

    def part_rows(self, what: str, method: str) -> list[dict[str, Any]]:
        """One row per part of the summed samples, then forget them."""
        out = []
        for key, samples in self.parts.items():
            tool, step = key.split("|")
            out.append(row(f"{what}, part: `{step}`", tool, samples, method=method))
        self.parts.clear()
        return out

    def tagged(self, ref: str) -> str:
        self.tags.append(ref)
        return ref


# -- the model: one pipeline, a new version per sample ----------------------------------------
def register(c: float, commit: str = "") -> tuple[str, dict[str, Any], list[int]]:
    """Log and register the pipeline with C=c (in-process, untimed set-up): its version, the
    one-row request body and the host's own prediction for that row. Its run names `commit`
    as its git commit, or none (MLflow would take the bench's own checkout's when it runs
    from one): mlrig pushes a version with a commit under two tags, one without under one."""
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
    with contextlib.redirect_stdout(sys.stderr), mlflow.start_run() as run:  # "View run" lines
        if commit:
            mlflow.set_tag(GIT_COMMIT, commit)
        elif GIT_COMMIT in run.data.tags:
            mlflow.MlflowClient().delete_tag(run.info.run_id, GIT_COMMIT)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            pip_requirements=reqs,
            input_example=x.head(3),
            registered_model_name=MODEL,
        )
    one = x.head(1)
    body = {"dataframe_split": {"columns": list(one.columns), "data": one.values.tolist()}}
    return str(info.registered_model_version), body, model.predict(one).tolist()


def model_bytes(version: str) -> int:
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{version}", dst_path=tmp))
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bento_save(b: Bench, c: float) -> None:
    """The same pipeline into BentoML's model store (its venv's python, untimed)."""
    assert b.bento_exe is not None
    save = (
        "import sys, bentoml\n"
        "from sklearn.datasets import load_breast_cancer\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import StandardScaler\n"
        "x, y = load_breast_cancer(return_X_y=True)\n"
        "m = make_pipeline(StandardScaler(), LogisticRegression(C=float(sys.argv[1]),"
        " max_iter=500)).fit(x, y)\n"
        f"bentoml.sklearn.save_model('{MODEL}', m)\n"
    )
    sh(b.home, str(b.bento_exe), "-c", save, str(c), env=b.bento_env)


# -- builds: whole commands -------------------------------------------------------------------
def docker(b: Bench, *args: str) -> str:
    return sh(b.home, "docker", *args, env=b.docker_env)


def mlrig_build(b: Bench, version: str, tag: str, nocache: bool) -> float:
    argv = [MLRIG, "image", "build", "-m", f"models:/{MODEL}/{version}", "--tag", tag]
    return run_timed(argv + (["--no-cache"] if nocache else []), env=b.env, cwd=b.home)


def mlrig_build_in_process(version: str, tag: str) -> float:
    from mlrig.core.image import build as image

    start = time.perf_counter()
    image.build(f"models:/{MODEL}/{version}", tag=tag)
    return time.perf_counter() - start


def mlflow_build(b: Bench, version: str, tag: str, nocache: bool) -> float:
    """`mlflow models generate-dockerfile`, then the `docker build` build-docker itself runs
    (plus --network host): two whole commands, summed."""
    with tempfile.TemporaryDirectory(dir=b.home) as tmp:
        ctx = Path(tmp) / "ctx"
        gen = run_timed(
            [MLFLOW, "models", "generate-dockerfile", "-m", f"models:/{MODEL}/{version}"]
            + ["--env-manager", "local", "-d", str(ctx)],
            env=b.env,
            cwd=b.home,
        )
        if not b.mlflow_from:  # untimed, once: its exact base name onto the offline stand-in
            python_slim(b, (ctx / "Dockerfile").read_text().split("FROM ", 1)[1].split()[0])
        argv = ["docker", "build", "-t", tag, "-f", "Dockerfile", "--platform", "linux/amd64"]
        argv += ["--network", "host"] + (["--no-cache"] if nocache else []) + ["."]
        build = run_timed(argv, env=b.docker_env, cwd=ctx)
    b.part("mlflow", "mlflow models generate-dockerfile", gen)
    b.part("mlflow", "docker build", build)
    return gen + build


def bentoml_build(b: Bench, tag: str, nocache: bool) -> float:
    """`bentoml build` then `bentoml containerize`: two whole commands, summed."""
    assert b.bento_exe is not None
    bentoml = str(b.bento_exe.with_name("bentoml"))
    build = run_timed([bentoml, "build"], env=b.bento_env, cwd=b.project)
    argv = [bentoml, "containerize", "breast_cancer:latest", "--backend", "docker"]
    argv += ["--opt", "network=host", "-t", tag] + (["--opt", "no-cache"] if nocache else [])
    containerize = run_timed(argv, env=b.bento_env, cwd=b.project)
    b.part("bentoml", "bentoml build", build)
    b.part("bentoml", "bentoml containerize", containerize)
    return build + containerize


# -- offline stand-ins for the references' python:<ver>-slim ------------------------------------
def stand_in(b: Bench, tag: str, extra: str = "") -> None:
    """The offline base shaped like python:<ver>-slim (what both references build FROM)."""
    with tempfile.TemporaryDirectory(dir=b.home) as tmp:
        (Path(tmp) / "Dockerfile").write_text(
            f"FROM {b.base}\nRUN ln -sf /usr/bin/python3 /usr/bin/python && "
            f"rm -f /usr/lib/python3*/EXTERNALLY-MANAGED\n{extra}"
        )
        sh(Path(tmp), "docker", "build", "--network", "host", "-t", tag, ".", env=b.docker_env)
    b.tagged(tag)


def image_id(ref: str) -> str | None:
    proc = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", ref], capture_output=True, text=True
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def python_slim(b: Bench, name: str) -> None:
    """Tag the stand-in with the base name MLflow's Dockerfile uses (python:3.11.7-slim): the
    classic builder does not pull an image that is present."""
    ours = f"mlrig-bench/{name}"
    stand_in(b, ours)
    present = image_id(name)
    if present and present != image_id(ours):
        raise SystemExit(f"{name} exists on this engine and is not the bench's stand-in")
    docker(b, "tag", ours, name)
    if not present:
        b.tagged(name)
    b.mlflow_from = name


# -- push and bytes ---------------------------------------------------------------------------
def mlrig_push(b: Bench, ref: str) -> float:
    return run_timed([MLRIG, "image", "push", ref], env=b.env, cwd=b.home)


def docker_push(b: Bench, ref: str, repository: str, tag: str) -> float:
    """`docker push` of the same image retagged into another repository (the tag untimed)."""
    remote = b.tagged(f"{b.registry}/{repository}:{tag}")
    docker(b, "tag", ref, remote)
    return run_timed(["docker", "push", remote], env=b.docker_env)


def manifest(b: Bench, repository: str, tag: str) -> dict[str, Any]:
    import requests

    resp = requests.get(
        f"http://{b.registry}/v2/{repository}/manifests/{tag}",
        auth=b.auth,
        headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json,"
            "application/vnd.oci.image.manifest.v1+json"
        },
        timeout=30,
    )
    resp.raise_for_status()
    return dict(resp.json())


def new_bytes(manifests: list[dict[str, Any]]) -> list[float]:
    """For each version after the first: config + the layers no earlier version had."""
    seen: set[str] = set()
    out = []
    for i, m in enumerate(manifests):
        fresh = [la for la in m["layers"] if la["digest"] not in seen]
        if i:
            out.append(float(m["config"]["size"] + sum(la["size"] for la in fresh)))
        seen.update(la["digest"] for la in m["layers"])
    return out


def alternate(
    contenders: dict[str, Callable[[int], float]], samples: int
) -> dict[str, list[float]]:
    """interleave(), first A B then B A: the engine mounts a layer it pushed to another
    repository of the same registry instead of uploading it, which favours the second."""
    out: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for i in range(samples):
        for name in names if i % 2 == 0 else names[::-1]:
            out[name].append(contenders[name](i))
    return out


# -- serving (client-side) --------------------------------------------------------------------
@dataclass
class Contender:
    """How to start one image and ask it for the one-row prediction."""

    name: str
    ref: str
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
        wait_until(answered, timeout=180, what=c.ref, interval=interval, retry_on=NOT_YET)
    except WaitTimeout:
        return False
    return True


@contextlib.contextmanager
def container(b: Bench, c: Contender) -> Iterator[None]:
    """`docker run -d` (the CLI, host networking) of c's image; removed on the way out."""
    name = f"mlrig-image-bench-{c.name}"
    b.containers.append(name)
    argv = ["docker", "run", "-d", "--rm", "--name", name, "--network", "host"]
    argv += [f"--env={k}={v}" for k, v in c.env.items()] + [c.ref]
    try:
        sh(b.home, *argv, env=b.docker_env)
        yield
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, env=b.docker_env)
        b.containers.remove(name)


def cold_start(b: Bench, c: Contender, expected: list[int]) -> float:
    """From spawning `docker run -d` to the first answer equal to the host's prediction."""
    start = time.perf_counter()
    with container(b, c):
        if not until_answered(
            c, lambda status, out: status == 200 and c.answer(json.loads(out)) == expected, 0.02
        ):
            raise SystemExit(f"{c.ref} never answered correctly")
        return time.perf_counter() - start


def latency(c: Contender, n: int, errors: list[str]) -> list[float]:
    """Sequential one-row requests on one keep-alive connection (ms); non-200s recorded."""
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    for _ in range(200):
        post(conn, c)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        status, out = post(conn, c)
        times.append((time.perf_counter() - start) * 1000)
        if status != 200:
            errors.append(f"{status}: {out[:200]!r}")
    return times


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


def serving_rows(
    b: Bench, refs: dict[str, str], body: dict[str, Any], expected: list[int], args: Any
) -> list[dict[str, Any]]:
    from mlrig.core.stack.local.stack import free_port

    port = free_port()
    mlflow_body = json.dumps(body).encode()
    bento_body = json.dumps({"input": body["dataframe_split"]["data"]}).encode()
    every = {
        "mlflow": Contender(
            "mlflow", refs["mlflow"], REF_PORT, {}, "/invocations", mlflow_body, _predictions
        ),
        "bentoml": Contender(
            "bentoml", refs.get("bentoml", ""), BENTO_PORT, {}, "/predict", bento_body, _itself
        ),
        "mlrig": Contender(
            "mlrig",
            refs["mlrig"],
            port,
            {"PORT": str(port)},
            "/invocations",
            mlflow_body,
            _predictions,
        ),
    }
    contenders = {n: every[n] for n in refs}
    log(f"cold starts, {args.starts} each, interleaved")
    starts = interleave(
        {n: (lambda _i, c=c: cold_start(b, c, expected)) for n, c in contenders.items()},
        args.starts,
    )
    rows = []
    for name, c in contenders.items():
        tool = f"{name} image"
        rows.append(
            row(
                "`docker run -d` (CLI, host network) -> first correct prediction, polled "
                "every 20 ms",
                tool,
                starts[name],
                method=CLIENT,
            )
        )
        log(f"serving {name}")
        errors: list[str] = []
        with container(b, c):
            # nginx answers 502 until MLflow's workers are up
            if not until_answered(c, lambda status, _out: status == 200, 0.05):
                raise SystemExit(f"{c.ref} never became ready")
            time.sleep(3)  # let every worker finish loading before measuring
            times = latency(c, args.requests, errors)
            rps = throughput(c, args.seconds, errors)
        p99 = sorted(times)[int(len(times) * 0.99) - 1]
        rows += [
            row(
                "one-row latency, sequential on one keep-alive connection (median = p50)",
                tool,
                times,
                unit="ms",
                method=CLIENT,
            ),
            row(
                "p99 one-row latency (of the requests above)", tool, [p99], unit="ms", method=CLIENT
            ),
            row(
                f"throughput, 4 client threads for {args.seconds:g} s",
                tool,
                [rps],
                unit="req/s",
                method=CLIENT,
            ),
            row(
                "non-200 answers while measuring",
                tool,
                [float(len(errors))],
                unit="",
                method=CLIENT,
            ),
        ]
        if errors:
            log(f"{name}: {len(errors)} non-200 answers, first: {errors[0]}")
    return rows


def _predictions(d: Any) -> Any:
    return d["predictions"]


def _itself(d: Any) -> Any:
    return d


# -- BentoML (a benchmark dependency only: its own venv) ----------------------------------------
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


def bentoml_project(b: Bench, base: str) -> None:
    from importlib import metadata

    assert b.bento_exe is not None
    b.project = b.home / "bento-project"
    b.project.mkdir()
    shutil.copy(BENTO_DIR / "service.py", b.project / "service.py")
    pins = [f"{p}=={metadata.version(p)}" for p in ("scikit-learn", "numpy", "pandas", "scipy")]
    (b.project / "bentofile.yaml").write_text(
        json.dumps(
            {
                "service": "service:BreastCancer",
                "include": ["service.py"],
                "python": {"packages": pins},
                "docker": {"base_image": base},
            }
        )
    )
    b.bento_env = {
        **b.docker_env,
        "BENTOML_HOME": str(b.home / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }


# -- set-up -----------------------------------------------------------------------------------
def stack_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """The `export` lines of `mlrig stack env` as a dict."""
    out: dict[str, str] = {}
    for line in sh(home, MLRIG, "stack", "env", "--stack", "local", env=env).splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


def setup(home: Path, env: dict[str, str], base: str) -> Bench:
    log("mlrig stack up --local (a throw-away home)")
    sh(home, MLRIG, "stack", "up", "--local", env=env)
    client = {**env, **stack_env(home, env)}
    registry, repository = client["MLRIG_REGISTRY_URL"].split("/", 1)
    auth = (client["MLRIG_REGISTRY_USERNAME"], client["MLRIG_REGISTRY_PASSWORD"])
    config = home / "docker-config"
    config.mkdir()
    # this engine has no buildx: the classic builder, as `docker build` falls back to anyway
    docker_env = {**client, "DOCKER_CONFIG": str(config), "DOCKER_BUILDKIT": "0"}
    if "DOCKER_API_VERSION" not in os.environ:
        docker_env["DOCKER_API_VERSION"] = "1.41"  # CLI 28 talking to engine 20.10
    subprocess.run(
        ["docker", "login", registry, "-u", auth[0], "--password-stdin"],
        input=auth[1],
        env=docker_env,
        check=True,
        capture_output=True,
        text=True,
    )
    os.environ.update(client)  # registration and the in-process row talk to the same stack
    return Bench(home, client, docker_env, registry, repository, auth, base)


def cleanup(b: Bench) -> None:
    """Untag every image the run tagged; their layers stay as build cache (no prune)."""
    for name in list(b.containers):
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, env=b.docker_env)
    listed = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        env=b.docker_env,
    ).stdout.split()
    # every name on this run's own registry too: mlrig push adds <model>-v<N>-<commit>
    pushed = [tag for tag in listed if tag.startswith(f"{b.registry}/")]
    for tag in dict.fromkeys(list(reversed(b.tags)) + pushed):
        subprocess.run(["docker", "rmi", "--no-prune", tag], capture_output=True, env=b.docker_env)


# -- the run ----------------------------------------------------------------------------------
def run(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    tools = ["mlrig"] + ([] if args.no_bentoml else ["bentoml"]) + ["mlflow"]
    if "bentoml" in tools:
        b.bento_exe = bentoml_venv(args.bentoml_venv)
        bento_base = "mlrig-bench/bentoml-base:py3.11"
        # uv inside BentoML's build reads SSL_CERT_FILE to trust this machine's TLS proxy
        stand_in(b, bento_base, "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n")
        bentoml_project(b, bento_base)

    versions: list[str] = []
    cs: list[float] = []
    request: dict[str, Any] = {}  # the one-row request and the host's answer to it

    def new_version(c: float) -> str:
        version, request["body"], request["expected"] = register(c)
        if "bentoml" in tools:
            bento_save(b, c)
        versions.append(version)
        cs.append(c)
        return version

    def ref(tool: str, version: str) -> str:
        return f"mlrig-bench/{tool}:v{version}"

    builders: dict[str, Callable[[str, bool], float]] = {
        "mlrig": lambda v, nc: mlrig_build(b, v, b.tagged(ref("mlrig", v)), nc),
        "bentoml": lambda v, nc: bentoml_build(b, b.tagged(ref("bentoml", v)), nc),
        "mlflow": lambda v, nc: mlflow_build(b, v, b.tagged(ref("mlflow", v)), nc),
    }
    rows: list[dict[str, Any]] = []

    first = new_version(1.0)
    log(f"{'cold builds (--no-cache)' if args.cold else 'first builds (cache kept)'}: {tools}")
    firsts = {t: builders[t](first, args.cold) for t in tools}
    cold = [row(COLD, TOOLS[t], [firsts[t]], method=WHOLE) for t in tools]
    cold += b.part_rows(COLD, WHOLE)

    log(f"rebuilds after a new model version: {args.samples} samples, interleaved")
    inproc: list[str] = []

    def before(i: int) -> None:
        c = round(0.05 + 0.2 * (i + 1), 3)  # the same pipeline, another C
        new_version(c)
        if args.in_process:
            inproc.append(register(c)[0])  # its own new version (a built one would be cached)

    contenders: dict[str, Callable[[int], float]] = {
        t: (lambda i, t=t: builders[t](versions[i + 1], False)) for t in tools
    }
    if args.in_process:
        contenders["in-process"] = lambda i: mlrig_build_in_process(
            inproc[i], b.tagged(ref("mlrig-inproc", inproc[i]))
        )
    rebuilt = interleave(contenders, args.samples, before=before)
    rows += [row(REBUILD, TOOLS[t], rebuilt[t]) for t in tools]
    rows += b.part_rows(REBUILD, WHOLE_INTERLEAVED)
    if args.in_process:
        rows.append(
            row(
                REBUILD,
                "mlrig: image.build() in the bench's process",
                rebuilt["in-process"],
                method=IN_PROCESS,
            )
        )
    rows += cold if args.cold else []  # after the headline

    log("pushes: mlrig image push vs docker push of the same image, interleaved")
    mlrig_push(b, ref("mlrig", first))  # the earlier version both repositories already hold
    docker_push(b, ref("mlrig", first), "docker-push", f"{MODEL}-v{first}")
    pushed = alternate(
        {
            "mlrig": lambda i: mlrig_push(b, ref("mlrig", versions[i + 1])),
            "docker": lambda i: docker_push(
                b, ref("mlrig", versions[i + 1]), "docker-push", f"{MODEL}-v{versions[i + 1]}"
            ),
        },
        args.samples,
    )
    rows.append(row(PUSH, "mlrig image push (checks tags, verifies the digest)", pushed["mlrig"]))
    rows.append(row(PUSH, "docker push (same image, second repository)", pushed["docker"]))

    # a version trained in a git repository: mlrig names it <model>-v<N> and
    # <model>-v<N>-<commit>; the same two names with docker are two pushes
    log(f"two-tag pushes: {args.samples} versions whose runs name a commit (builds untimed)")
    twos = []
    for i in range(args.samples):
        version = register(round(0.07 + 0.2 * (i + 1), 3), commit=COMMIT)[0]
        mlrig_build(b, version, b.tagged(ref("mlrig", version)), False)
        twos.append(version)
    two_tags = [f"{MODEL}-v{{}}", f"{MODEL}-v{{}}-{COMMIT[:7]}"]
    pushed_two = alternate(
        {
            "mlrig": lambda i: mlrig_push(b, ref("mlrig", twos[i])),
            "docker": lambda i: sum(
                docker_push(b, ref("mlrig", twos[i]), "docker-push", t.format(twos[i]))
                for t in two_tags
            ),
        },
        args.samples,
    )
    rows.append(row(PUSH_TWO, "mlrig image push (both tags, each read back)", pushed_two["mlrig"]))
    rows.append(
        row(PUSH_TWO, "docker push of each tag (two commands, summed)", pushed_two["docker"])
    )

    log("bytes moved per version")
    for version in versions:  # mlrig's own pushes of every version are in its repository
        b.tagged(f"{b.registry}/{b.repository}:{MODEL}-v{version}")
    model_kb = [model_bytes(v) / 1e3 for v in versions]
    moved: dict[str, list[float]] = {
        "mlrig": new_bytes([manifest(b, b.repository, f"{MODEL}-v{v}") for v in versions])
    }
    for t in tools[1:] if args.reference_bytes else []:  # pushed the same way, untimed
        for v in versions:
            remote = b.tagged(f"{b.registry}/bench-{t}:v{v}")
            docker(b, "tag", ref(t, v), remote)
            docker(b, "push", remote)
        moved[t] = new_bytes([manifest(b, f"bench-{t}", f"v{v}") for v in versions])
    for t in moved:
        rows.append(row(BYTES, TOOLS[t], [x / 1e3 for x in moved[t]], unit="kB", method=MANIFESTS))
    ratios = [x / 1e3 / kb for x, kb in zip(moved["mlrig"], model_kb[1:], strict=True)]
    rows.append(row(RATIO, "mlrig image build + push", ratios, unit="x", method=MANIFESTS))

    last = {t: ref(t, versions[-1]) for t in tools}
    for t in tools:
        info = json.loads(docker(b, "image", "inspect", last[t]))[0]
        rows.append(row("image size", TOOLS[t], [info["Size"] / 1e6], unit="MB", method=INSPECT))
        rows.append(
            row("layers", TOOLS[t], [float(len(info["RootFS"]["Layers"]))], unit="", method=INSPECT)
        )

    if args.serving:
        rows += serving_rows(b, last, request["body"], request["expected"], args)

    med = statistics.median

    def verdict(goal: str, got: dict[str, list[float]], rival: str, name: str) -> str:
        """mlrig's median seconds in `got` against the rival's, and whether the goal is met."""
        mine, theirs = med(got["mlrig"]), med(got[rival])
        ok = "met" if mine <= theirs else "NOT met"
        return f"{goal}: {mine:.2f} s vs {name} {theirs:.2f} s (median): {ok}"

    summary = []
    if "bentoml" in tools:
        goal = "goal `mlrig image build` <= `bentoml build` + `bentoml containerize`"
        summary.append(verdict(goal, rebuilt, "bentoml", "BentoML"))
    summary += [
        f"goal a new version moves <= 1.5x the model's bytes: {max(moved['mlrig']) / 1e3:.1f} kB "
        f"for a {model_kb[-1]:.0f} kB model, at most {max(ratios):.2f}x: "
        + ("met" if max(ratios) <= 1.5 else "NOT met"),
        verdict(
            "goal `mlrig image push` <= `docker push` of the same image (one tag each)",
            pushed,
            "docker",
            "docker push",
        ),
        verdict(
            "under two tags: `mlrig image push` <= `docker push` of each",
            pushed_two,
            "docker",
            "two docker pushes",
        ),
        "MLflow: `mlflow models build-docker` runs `docker build` with no network option and "
        "this engine's bridge network has no DNS, so its row is `mlflow models "
        "generate-dockerfile` + that `docker build` with `--network host`, both whole commands",
    ]
    return {
        "rows": rows,
        "summary": summary,
        "model_versions": versions,
        "two_tag_versions": twos,
        "in_process_versions": inproc,
        "c": cs,
        "model_kb": model_kb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=5, help="rebuild and push samples")
    parser.add_argument("--starts", type=int, default=5, help="cold starts per image")
    parser.add_argument("--requests", type=int, default=2000, help="latency requests")
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput seconds")
    parser.add_argument(
        "--no-cold",
        dest="cold",
        action="store_false",
        help="first builds keep the cache and are not reported",
    )
    parser.add_argument("--no-serving", dest="serving", action="store_false")
    parser.add_argument("--no-in-process", dest="in_process", action="store_false")
    parser.add_argument("--no-bentoml", action="store_true", help="leave BentoML out")
    parser.add_argument(
        "--no-reference-bytes",
        dest="reference_bytes",
        action="store_false",
        help="count bytes moved for mlrig only (the references' first push is ~1.2 GB each)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a development run: 2 samples, no cold builds, no reference bytes, 1 start, "
        "300 requests, 2 s",
    )
    parser.add_argument(
        "--bentoml-venv", type=Path, default=Path.home() / ".cache" / "mlrig-bench" / "bentoml-venv"
    )
    args = parser.parse_args()
    if args.quick:
        args.samples, args.starts, args.requests, args.seconds = 2, 1, 300, 2.0
        args.cold = args.reference_bytes = False
    if args.serving:
        from mlrig.core.stack.local.stack import port_is_free

        for port in (REF_PORT, 8000) + (() if args.no_bentoml else (BENTO_PORT,)):
            if not port_is_free(port):
                raise SystemExit(f"port {port} must be free (a reference image listens on it)")
    from mlrig.core.setup import engine
    from mlrig.version import __version__

    meta = machine(("mlflow", "scikit-learn", "docker")) | {
        "settings": {k: str(v) for k, v in vars(args).items()}
    }
    if not args.no_bentoml:
        meta["versions"]["bentoml"] = BENTOML_VERSION
    meta["versions"]["docker_cli"] = subprocess.run(
        ["docker", "version", "-f", "{{.Client.Version}}"], capture_output=True, text=True
    ).stdout.strip()
    meta["versions"]["mlrig"] = __version__
    home, env = fresh_home("mlrig-image-bench-")
    os.environ["MLRIG_HOME"] = env["MLRIG_HOME"]
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # the bench's own downloads
    base = engine.ensure_base_image(log)
    meta["base_image"] = base
    b: Bench | None = None
    try:
        b = setup(home, env, base)
        result = run(b, args)
    finally:
        if b is not None:
            cleanup(b)
        subprocess.run([MLRIG, "stack", "down", "--stack", "local"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    rows = result.pop("rows")
    table = markdown(rows) + "\n\n" + "".join(f"- {s}\n" for s in result["summary"])
    print(table)
    print(
        f"model artifacts: {result['model_kb'][-1]:.0f} kB; CPUs: {meta['cpus']}; load average "
        f"at the start {meta['load_avg']}, at the end {meta['load_avg_after']}"
    )
    record(f"image-{utc_stamp()}", {"meta": meta, "rows": rows, **result}, table)


if __name__ == "__main__":
    main()
