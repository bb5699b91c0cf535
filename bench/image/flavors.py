"""Image size per model flavor (`image_bench.py --flavors`): the flavor zoo of the image tests
(scikit-learn Pipeline + ColumnTransformer, xgboost, LightGBM, a custom PythonModel with an
artifact, a tensor-signature model), each logged by plain MLflow code and built by
`mlrig image build` as a whole command, which starts and checks the image before tagging it;
the size is the engine's (docker image inspect .Size). The xgboost model is built once more
in process with its pin as written (`xgboost==V`, the CUDA wheel included): the size the CPU-only
wheel saves."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo: tests.helpers' zoo
from common import IN_PROCESS, MLRIG, WHOLE, row, run_timed
from workspace import Bench, log

SIZE = "image size, MB (docker image inspect .Size)"
BUILT = "image build, its serving base built (pip install from PyPI)"
REUSED = "image build, its serving base already built (model layer + start check)"
AS_PINNED = "xgboost as pinned (xgboost==V with nvidia-nccl-cu12), in process"


def _size(b: Bench, ref: str) -> float:
    out = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", ref],
        env=b.docker_env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip()) / 1e6


def _bases(b: Bench) -> set[str]:
    out = subprocess.run(
        ["docker", "image", "ls", "-q", "--no-trunc", "mlrig/serving-base"],
        env=b.docker_env,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def _untag(b: Bench, ref: str) -> None:
    subprocess.run(["docker", "rmi", "--no-prune", ref], env=b.docker_env, capture_output=True)


def flavor_rows(b: Bench, as_pinned: bool) -> tuple[list[dict[str, Any]], list[str]]:
    import mlflow

    from tests.helpers import ZOO, log_flavor

    mlflow.set_experiment("bench-flavors")
    rows: list[dict[str, Any]] = []
    sizes: dict[str, float] = {}
    for flavor in ZOO:
        with mlflow.start_run(run_name=f"bench-{flavor}"):
            uri, _rows = log_flavor(flavor, f"bench-{flavor}")
        tag = f"mlrig-bench/flavor-{flavor}:1"
        log(f"mlrig image build {uri}")
        before = _bases(b)
        seconds = run_timed(
            [MLRIG, "image", "build", "-m", uri, "--tag", tag], env=b.env, cwd=b.home
        )
        sizes[flavor] = _size(b, tag)
        rows.append(row(f"{flavor}: {SIZE}", "mlrig", [sizes[flavor]], unit="MB", method=WHOLE))
        what = BUILT if _bases(b) - before else REUSED
        rows.append(row(f"{flavor}: {what}", "mlrig", [seconds], method=WHOLE))
        _untag(b, tag)
        if flavor == "xgboost" and as_pinned:
            rows.append(_as_pinned(b, uri))
    summary = [
        f"xgboost image {sizes['xgboost']:.0f} MB (goal <= 450 MB): its pin is installed as "
        "xgboost-cpu, the same package without the 490 MB NVIDIA NCCL wheel",
        "every build above started its image once and had it answer the model's input "
        "example (the tensor model: a row made from its signature) before tagging it",
        "build times say whether the flavor's serving base had to be built (pip install) or "
        "was on the engine already; taken on a machine shared by 8 sessions: noisy; sizes "
        "are not",
    ]
    return rows, summary


def _as_pinned(b: Bench, uri: str) -> dict[str, Any]:
    """The same xgboost model with its pin installed as written, built in this process."""
    from mlrig.core.image import build as image
    from mlrig.core.shared import serving_model

    saved = dict(serving_model.CPU_ONLY_WHEELS)
    serving_model.CPU_ONLY_WHEELS.clear()
    tag = "mlrig-bench/flavor-xgboost-as-pinned:1"
    try:
        log(f"in process: image build {uri} with xgboost as pinned")
        start = time.perf_counter()
        image.build(uri, tag=tag)
        log(f"  {time.perf_counter() - start:.0f} s")
        size = _size(b, tag)
    finally:
        serving_model.CPU_ONLY_WHEELS.update(saved)
        _untag(b, tag)
    return row(f"xgboost: {SIZE}", AS_PINNED, [size], unit="MB", method=IN_PROCESS)
