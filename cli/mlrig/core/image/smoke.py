"""The proof `image build` asks of an image before it tags it: started once (loopback, a free
port, the engine that built it, `image run`'s memory limit), it must load the model and answer
one request: MLflow's `serving_input_example.json` saved with the model, else one row made
from the model's signature. A failure names the error the server died of (a missing shared
library, a missing module) or its wrong answer, and the container is gone either way.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mlrig.adapters import docker as docker_adapter
from mlrig.core.image import run as image_run
from mlrig.errors import ServiceError, UsageError
from mlrig.wait import Abandoned, WaitTimeout

EXAMPLE_NAME = "serving_input_example.json"  # what mlflow's log_model(input_example=...) saves
START_TIMEOUT = 180.0  # a cold start of a large model on a busy 2-CPU machine
NAME_PREFIX = "mlrig-build-check-"
MAX_TENSOR_VALUES = 100_000  # a synthesized tensor larger than this is not a smoke test
_COLUMN_VALUES: dict[str, Any] = {
    "double": 0.0,
    "float": 0.0,
    "long": 0,
    "integer": 0,
    "boolean": False,
    "string": "",
}
# the last line of a Python traceback: `OSError: libgomp.so.1: cannot open shared object file`
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
_MISSING_LIB = re.compile(r"([\w.+-]+\.so[\w.]*): cannot open shared object file")


class _Column(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    name: str | None = None


class _TensorSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")
    dtype: str
    shape: list[int] = Field(max_length=8)


class _Tensor(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["tensor"]
    name: str | None = None
    tensor_spec: _TensorSpec = Field(alias="tensor-spec")


_COLUMNS = TypeAdapter(list[_Column])
_TENSORS = TypeAdapter(list[_Tensor])


@dataclass(frozen=True)
class Request:
    body: bytes
    source: str  # what the body is, for the progress line and an error


def _tensor_value(dtype: str) -> Any:
    if dtype.startswith(("float", "int", "uint")):
        return 0
    return {"bool": False, "str": "", "object": ""}.get(dtype)


def _zeros(shape: list[int], value: Any) -> Any:
    return [_zeros(shape[1:], value) for _ in range(shape[0])] if shape else value


def synthesized(mlmodel: dict[str, Any]) -> bytes | None:
    """One row from the model's input signature (zeros, False, empty strings), as MLflow's
    scoring protocol takes it; None when there is no signature or one this cannot fill."""
    raw = (mlmodel.get("signature") or {}).get("inputs")
    try:
        spec = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return None
    if not spec or not isinstance(spec, list):
        return None
    if all(isinstance(item, dict) and item.get("type") == "tensor" for item in spec):
        return _synthesized_tensors(spec)
    try:
        columns = _COLUMNS.validate_python(spec)
    except ValidationError:
        return None
    if any(c.type not in _COLUMN_VALUES or not c.name for c in columns):
        return None
    split = {
        "columns": [c.name for c in columns],
        "data": [[_COLUMN_VALUES[c.type] for c in columns]],
    }
    return json.dumps({"dataframe_split": split}).encode()


def _synthesized_tensors(spec: list[Any]) -> bytes | None:
    try:
        tensors = _TENSORS.validate_python(spec)
    except ValidationError:
        return None
    if len(tensors) > 1 and any(t.name is None for t in tensors):
        return None  # several tensors, some unnamed: MLflow could not route them either
    arrays: dict[str | None, Any] = {}
    for tensor in tensors:
        shape = [1 if n == -1 else n for n in tensor.tensor_spec.shape]
        value = _tensor_value(tensor.tensor_spec.dtype)
        size = 1
        for n in shape:
            size *= n
        if not shape or value is None or min(shape) < 1 or size > MAX_TENSOR_VALUES:
            return None
        arrays[tensor.name] = _zeros(shape, value)
    if None in arrays:
        return json.dumps({"inputs": arrays[None]}).encode()
    return json.dumps({"inputs": arrays}).encode()


def request_for(model_dir: Path, mlmodel: dict[str, Any]) -> Request | None:
    """The request the check sends: the model's saved example, else a synthesized row; None
    when it has neither (the check then proves only that the model loads)."""
    example = model_dir / EXAMPLE_NAME
    if example.is_file():
        if example.stat().st_size > image_run.MAX_EXAMPLE_BYTES:
            raise UsageError(
                f"the model's {EXAMPLE_NAME} is larger than "
                f"{image_run.MAX_EXAMPLE_BYTES >> 20} MiB",
                hint="log the model with an input_example of a few rows",
            )
        body = example.read_bytes()
        try:
            json.loads(body)
        except ValueError:
            raise UsageError(
                f"the model's {EXAMPLE_NAME} is not JSON",
                hint="log the model again with input_example=...",
            ) from None
        return Request(body, "its input example")
    made = synthesized(mlmodel)
    return Request(made, "a row made from its signature") if made else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def failure(logs: str) -> str:
    """The line that says why the server stopped: a traceback's last line (its exception),
    else the last line it printed."""
    lines = [ln.strip() for ln in logs.splitlines() if ln.strip()]
    errors = [ln for ln in lines if _ERROR_LINE.match(ln)]
    return (errors or lines or ["it printed nothing"])[-1][:300]


def hint_for(line: str) -> str:
    if lib := _MISSING_LIB.search(line):
        return (
            f"the model's packages need the system library {lib[1]}, which the serving image "
            "lacks: use a wheel that bundles it, or build on a --base-image that has it"
        )
    if line.startswith(("ModuleNotFoundError", "ImportError")):
        return "add the missing package to the model's pip_requirements and log it again"
    return "fix the model or its requirements and log it again"


def check(
    image_id: str, ref: str, request: Request | None, *, timeout: float = START_TIMEOUT
) -> None:
    """Start image_id once and wait until it serves; send request and check the answer. A
    failure raises ServiceError naming what went wrong; the container is removed either way."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    memory = image_run.memory_bytes(image_run.DEFAULT_MEMORY)
    container = docker_adapter.run_container(
        image_id,
        name=f"{NAME_PREFIX}{image_id[7:19]}-{port}",
        environment={"PORT": str(port), "HOST": "127.0.0.1"},
        memory_bytes=memory,
    )
    try:
        try:
            image_run.wait_serving(container, url, timeout, f"{ref} to load its model")
        except (Abandoned, WaitTimeout) as exc:
            state = docker_adapter.container_state(container)
            if state.oom_killed:
                why = f"killed for using more than {memory >> 20} MiB while loading the model"
            else:
                why = failure(docker_adapter.container_logs(container, tail=40))
            when = (
                "stopped" if isinstance(exc, Abandoned) else f"did not serve within {timeout:g} s"
            )
            raise ServiceError(
                f"{ref} was not tagged: the image {when} before serving: {why}", hint=hint_for(why)
            ) from None
        if request is None:
            return
        try:
            image_run.smoke_check(url, request.body, request.source)
        except ServiceError as exc:
            raise ServiceError(
                f"{ref} was not tagged: the model loaded but {exc.message.splitlines()[0][:300]}",
                hint="log the model with an input_example it answers"
                if request.source.startswith("a row")
                else "fix the model or its example and log it again",
            ) from None
    finally:
        docker_adapter.remove_container(container)
