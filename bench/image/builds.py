"""Builds and pushes, each a whole command: mlrig, MLflow's Dockerfile and BentoML, the
registry manifests that say which bytes a new version moved, samples taken in turns."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import (
    MLRIG,
    run_timed,
    sh,
)
from workspace import MLFLOW, MODEL, Bench


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
