"""Pure logic behind serving images: pinned requirements, the server's model spec, OCI
labels and the Dockerfile text. No I/O beyond reading files handed in; unit-tested."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import metadata
from string import Template
from typing import Any

from mlrig.errors import UsageError

# The server's own dependencies, pinned here so the dependency layer is reproducible: the HTTP
# server, and for Lambda (mlrig_serve.aws_lambda) AWS's runtime interface client and the ASGI
# adapter, with their own dependencies pinned too (wheels for amd64 and arm64; ~2 MB in all).
SERVER_REQUIREMENTS = [
    "uvicorn==0.54.0",
    "httptools==0.9.0",
    "awslambdaric==4.2.2",
    "simplejson==4.3.0",
    "snapshot-restore-py==1.0.0",
    "mangum==0.22.0",
    "typing-extensions==4.16.0",
]
# What the scikit-learn fast path imports besides the model's own packages.
FAST_PATH_PACKAGES = ("numpy", "pandas", "cloudpickle")
COLUMN_TYPES = {"double", "float", "long", "integer", "boolean", "string"}
LABEL_PREFIX = "io.mlrig"
PIN_HINT = (
    "log the model with explicit pins, e.g. "
    "pip_requirements=['scikit-learn==1.5.2', 'pandas==2.2.3']"
)
_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*"
    r"(?P<version>[A-Za-z0-9.+!_-]+)\s*(;.*)?$"
)


# CPU-only builds of packages whose default wheel pulls GPU libraries into every install:
# xgboost's manylinux wheels (2.0 on) depend on nvidia-nccl-cu12 (~490 MB, loaded only for
# multi-GPU training); xgboost-cpu is the same package built without it, published from
# 2.1.1 on under the same import name. {name: (cpu-only name, first version it exists for)}
CPU_ONLY_WHEELS = {"xgboost": ("xgboost-cpu", (2, 1, 1))}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pinned(text: str, source: str = "requirements.txt") -> list[tuple[str, str]]:
    """[(line, canonical name)] for every requirement; every one must be `name==version`."""
    pinned, loose = [], []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if match:
            pinned.append((line, canonical(match["name"])))
        else:
            loose.append(line)
    if loose:
        raise UsageError(
            f"the model's {source} has requirements that are not pinned with "
            f"'==': {', '.join(loose[:5])}",
            hint=PIN_HINT,
        )
    if not pinned:
        raise UsageError(f"the model's {source} lists no requirements", hint=PIN_HINT)
    return pinned


def host_pin(package: str) -> str:
    """`package==version` as installed next to mlrig (the versions that saved the model)."""
    return f"{package}=={metadata.version(package)}"


def _release(version: str) -> tuple[int, ...]:
    parts = re.match(r"^\d+(\.\d+)*", version)
    return tuple(int(n) for n in parts[0].split(".")) if parts else ()


def cpu_only(line: str, name: str) -> str:
    """The pin of the CPU-only build when the package has one for that version (the serving
    image has no GPU), else the line as is."""
    swap = CPU_ONLY_WHEELS.get(name)
    match = _PIN.match(line)
    if not swap or not match or _release(match["version"]) < swap[1]:
        return line
    return f"{swap[0]}=={match['version']}"


@dataclass(frozen=True)
class ServingPlan:
    """What goes into the image: the server's loader choice and the requirements."""

    spec: dict[str, Any]
    requirements: list[str]

    @property
    def requirements_text(self) -> str:
        return "\n".join(self.requirements) + "\n"

    @property
    def requirements_sha256(self) -> str:
        return hashlib.sha256(self.requirements_text.encode()).hexdigest()


def input_columns(mlmodel: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The column schema the fast path enforces, or None when it is not a plain column one."""
    raw = (mlmodel.get("signature") or {}).get("inputs")
    if not raw:
        return None
    cols = json.loads(raw) if isinstance(raw, str) else raw
    if not all(isinstance(c, dict) and "name" in c and c.get("type") in COLUMN_TYPES for c in cols):
        return None
    return [
        {"name": c["name"], "type": c["type"], "required": c.get("required", True)} for c in cols
    ]


def plan(mlmodel: dict[str, Any], requirements_text: str) -> ServingPlan:
    """Choose the loader and compute the image's requirements from a model's files."""
    flavors = mlmodel.get("flavors") or {}
    pyfunc = flavors.get("python_function")
    if not pyfunc:
        raise UsageError(
            "the model has no python_function flavor, so it cannot be served",
            hint="log it with an mlflow.<flavor>.log_model call",
        )
    pins = parse_pinned(requirements_text)
    mlflow_version = str(mlmodel.get("mlflow_version") or "")
    columns = input_columns(mlmodel)
    sk = flavors.get("sklearn") or {}
    fast = (
        pyfunc.get("loader_module") == "mlflow.sklearn"
        and sk.get("pickled_model")
        and (columns is not None or not mlmodel.get("signature"))
    )
    spec: dict[str, Any] = {"mlflow_version": mlflow_version, "input_columns": columns}
    reqs = [cpu_only(line, name) for line, name in pins if name not in ("mlflow", "mlflow-skinny")]
    have = {name for _, name in pins}
    if fast:
        fmt = sk.get("serialization_format") or "cloudpickle"
        spec.update(
            loader="sklearn",
            model_file=sk["pickled_model"],
            serialization_format=fmt,
            skops_trusted_types=sk.get("skops_trusted_types"),
            predict_fn=pyfunc.get("predict_fn") or "predict",
        )
        extra = [p for p in FAST_PATH_PACKAGES if p not in have]
        if fmt == "skops" and "skops" not in have:
            extra.append("skops")
        reqs += [host_pin(p) for p in extra]
    else:
        if not mlflow_version:
            raise UsageError(
                "the model's MLmodel file does not say which MLflow saved it",
                hint="re-log the model with a current MLflow",
            )
        spec.update(loader="pyfunc")
        reqs.append(f"mlflow-skinny=={mlflow_version}")
        reqs += [host_pin(p) for p in ("pandas",) if p not in have]
    server = [r for r in SERVER_REQUIREMENTS if canonical(r.split("==")[0]) not in have]
    return ServingPlan(spec=spec, requirements=sorted(reqs, key=str.lower) + server)


@dataclass(frozen=True)
class Provenance:
    model_uri: str
    model_name: str | None = None
    model_version: str | None = None
    run_id: str | None = None
    git_commit: str | None = None
    git_remote: str | None = None
    dvc_data: dict[str, str] = field(default_factory=dict)
    git_dirty: str | None = None  # "true" | "false", as the run recorded it
    exp_name: str | None = None
    exp_ref: str | None = None

    def labels(self, mlrig_version: str, requirements_sha256: str) -> dict[str, str]:
        """OCI labels; no timestamps, so an unchanged rebuild keeps the same image ID."""
        items = {
            "org.opencontainers.image.title": self.model_name or "",
            "org.opencontainers.image.version": self.model_version or "",
            "org.opencontainers.image.revision": self.git_commit or "",
            "org.opencontainers.image.source": self.git_remote or "",
            f"{LABEL_PREFIX}.version": mlrig_version,
            f"{LABEL_PREFIX}.model.uri": self.model_uri,
            f"{LABEL_PREFIX}.model.name": self.model_name or "",
            f"{LABEL_PREFIX}.model.version": self.model_version or "",
            f"{LABEL_PREFIX}.mlflow.run-id": self.run_id or "",
            f"{LABEL_PREFIX}.git.commit": self.git_commit or "",
            f"{LABEL_PREFIX}.git.dirty": self.git_dirty or "",
            f"{LABEL_PREFIX}.exp.name": self.exp_name or "",
            f"{LABEL_PREFIX}.exp.ref": self.exp_ref or "",
            f"{LABEL_PREFIX}.dvc.data": ",".join(
                f"{k}={v}" for k, v in sorted(self.dvc_data.items())
            ),
            f"{LABEL_PREFIX}.requirements.sha256": requirements_sha256,
        }
        return {k: v for k, v in items.items() if v}


def render_dockerfile(template: str, **values: str) -> str:
    return Template(template).substitute(values)


def default_tag(name: str | None, version: str | None, run_id: str | None) -> str:
    repo = re.sub(r"[^a-z0-9._-]+", "-", (name or "model").lower()).strip("-.") or "model"
    tag = f"v{version}" if version else f"run-{(run_id or 'local')[:12]}"
    return f"mlrig/{repo}:{tag}"
