"""The deploy benchmark's set-up: a throw-away local stack, three registered versions of one
scikit-learn pipeline, each built and pushed by mlrig (whole commands, untimed), and the
cleanup that leaves the engine as it was (endpoints, peers' containers, tags, the stack)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import MLRIG, fresh_home, sh, stack_env

MODEL = "bench-deploy"
STACK = "local"
STARTED = time.monotonic()


def log(msg: str) -> None:
    print(f"• {time.monotonic() - STARTED:5.0f} s  {msg}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    home: Path
    env: dict[str, str]  # fresh MLRIG_HOME + `mlrig stack env`: what a user's shell has
    body: bytes = b""  # one row of the breast-cancer data, MLflow's dataframe_split
    versions: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # local tags: mlrig/bench-deploy:vN
    endpoints: set[str] = field(default_factory=set)
    containers: set[str] = field(default_factory=set)  # the peers' containers
    groups: set[int] = field(default_factory=set)  # the peers' process groups

    def ref(self, v: str) -> str:
        return f"models:/{MODEL}/{v}"

    def mlrig(self, *args: str) -> str:
        """A whole mlrig command on the bench's stack, untimed; its stdout."""
        return sh(self.home, MLRIG, *args, "--stack", STACK, env=self.env)

    def deploy_json(self, *args: str) -> dict[str, object]:
        return dict(json.loads(self.mlrig("deploy", *args, "--json")))


def register(c: float) -> tuple[str, bytes]:
    """Log and register the pipeline with C=c (in-process, untimed): its version and a
    one-row request body."""
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
    mlflow.set_experiment("deploy-bench")
    with contextlib.redirect_stdout(sys.stderr), mlflow.start_run():  # its "View run" lines
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            pip_requirements=reqs,
            input_example=x.head(3),
            registered_model_name=MODEL,
        )
    one = x.head(1)
    body = {"dataframe_split": {"columns": list(one.columns), "data": one.values.tolist()}}
    return str(info.registered_model_version), json.dumps(body).encode()


def setup() -> Bench:
    home, env = fresh_home("mlrig-deploy-bench-")
    log("mlrig stack up --local (a throw-away home)")
    sh(home, MLRIG, "stack", "up", "--local", env=env)
    client = {**env, **stack_env(home, env, STACK)}
    os.environ.update(client)  # registration and the state reads talk to the same stack
    b = Bench(home, client)
    for c in (1.0, 0.05, 0.3):
        version, b.body = register(c)
        tag = f"mlrig/{MODEL}:v{version}"
        log(f"version {version}: mlrig image build + push")
        sh(home, MLRIG, "image", "build", "-m", b.ref(version), "--tag", tag, env=client)
        b.tags.append(tag)
        b.mlrig("image", "push", tag)
        b.versions.append(version)
    return b


def stop_group(pgid: int) -> None:
    """SIGTERM to a peer's process group, then SIGKILL what is left after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
        for _ in range(100):
            os.killpg(pgid, 0)
            time.sleep(0.1)
        os.killpg(pgid, signal.SIGKILL)


def cleanup(b: Bench) -> None:
    """Every endpoint and peer the run made, the stack, the tags (layers stay as cache)."""
    for name in sorted(b.endpoints):
        subprocess.run(
            [MLRIG, "deploy", "delete", name, "--stack", STACK], env=b.env, capture_output=True
        )
    for container in sorted(b.containers):
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    for pgid in b.groups:
        stop_group(pgid)
    subprocess.run([MLRIG, "stack", "down", "--stack", STACK], env=b.env, capture_output=True)
    listed = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    registry = b.env.get("MLRIG_REGISTRY_URL", "").split("/", 1)[0]
    pushed = [t for t in listed if registry and t.startswith(f"{registry}/")]
    for tag in [*b.tags, *pushed]:
        subprocess.run(["docker", "rmi", "--no-prune", tag], capture_output=True)
    shutil.rmtree(b.home, ignore_errors=True)
