"""The image benchmark's workspace: its settings, the Bench record, the model versions it
registers, BentoML's own venv and project, set-up on a fresh local stack and cleanup."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import (
    BIN,
    MLRIG,
    row,
    sh,
    stack_env,
)

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
