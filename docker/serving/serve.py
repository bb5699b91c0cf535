"""mlrig's in-container model server: MLflow's scoring protocol on a bare ASGI app (uvicorn).

Loads the model once at start. scikit-learn models are unpickled directly and their input
is parsed and schema-checked here (MLflow's pyfunc path costs ~10 ms per one-row request);
any other flavor goes through `mlflow.pyfunc` (mlflow-skinny) and MLflow's own parsing.

Limits (environment): MLRIG_MAX_BODY_BYTES (default 64 MiB) caps a request body, refused
with 413 before it is read; at start the cap is lowered to what the container's memory limit
holds (see `fit_memory`). MLRIG_MAX_CONCURRENT_SCORING (default 2) requests are read and
scored at once, the rest wait their turn; MLRIG_BODY_TIMEOUT_SECONDS (default 60) bounds how
long a client may take to send its body. JSON nested deeper than MAX_JSON_DEPTH, and input
wider than the model's signature plus EXTRA_COLUMNS (without a signature: MLRIG_MAX_COLUMNS,
default 10,000), is a 400 before any DataFrame is built. Scoring runs off the event loop, and
a big JSON batch is decoded and encoded in slices, so /ping keeps answering while it is scored.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import gc
import importlib.util
import io
import json
import os
import re
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

MODEL_DIR = os.environ.get("MLRIG_MODEL_DIR", "/opt/model")
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = ["text/csv", "application/json", PARQUET]
REQUIRED_INPUT_FORMAT = (
    "The input must be a JSON dictionary with exactly one of the input fields "
    "{'dataframe_split', 'dataframe_records', 'instances', 'inputs'}"
)
# MLflow's signature types -> (numpy dtype, accepted numpy kinds): ints widen to floats as
# MLflow's schema enforcement allows; anything else is the 400 MLflow would answer.
TYPES: dict[str, tuple[str, str]] = {
    "double": ("float64", "fiub"),
    "float": ("float32", "fiub"),
    "long": ("int64", "iub"),
    "integer": ("int32", "iub"),
    "boolean": ("bool", "b"),
    "string": ("object", "OSU"),
}


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status, self.code = status, code


# Peak memory of one request over its body's size, measured in-process (peak RSS growth while
# `Model.invocations` scores 16 MiB bodies, all-double schema): dataframe_split 5.4-23x (30
# columns of floats .. one column of 0s), dataframe_records 12.7-29x, inputs as columns
# 11.7-22x, inputs as rows 11.7-31x, CSV 9.9-14x, empty rows/records 20x. The worst, a one-
# column batch of small ints as rows, sets the factor, with margin for the allocator. Any
# other flavor is parsed by MLflow's scoring server, measured the same way (8 MiB bodies):
# dataframe_split 17-52x, dataframe_records 17-41x, inputs as rows 17-84x, CSV 13-16x.
EXPANSION = 40
PYFUNC_EXPANSION = 100
PARQUET_EXPANSION = 7  # peak over the decoded size, measured 4.2-5.6x (one column .. 30)
HEADROOM = 32 * 2**20  # the event loop, uvicorn's buffers, the answer being written
MIN_BODY_BYTES = 16 * 2**10
MAX_JSON_DEPTH = 64  # the envelope, its format key and a tensor of numpy's 32 dimensions
MAX_COLUMNS = 10_000  # MLRIG_MAX_COLUMNS: the input of a model without a signature
EXTRA_COLUMNS = 1000  # columns beyond the signature's (MLflow ignores them): ids and the like


class Limits(NamedTuple):  # not a dataclass: tests load this file without registering it
    """What one request may cost the server.

    The body cap is the smaller of MLRIG_MAX_BODY_BYTES and what the container's memory
    holds: each of the concurrent scorings may use EXPANSION times its body (`fit_memory`)."""

    max_body_bytes: int = 64 * 2**20
    max_concurrent_scoring: int = 2
    body_timeout_seconds: float = 60.0
    max_columns: int = MAX_COLUMNS  # for a model without a signature
    memory_bound: bool = False  # max_body_bytes was lowered to fit the memory limit

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Limits:
        env = dict(os.environ if env is None else env)
        default = cls()
        try:
            limits = cls(
                max_body_bytes=int(env.get("MLRIG_MAX_BODY_BYTES", default.max_body_bytes)),
                max_concurrent_scoring=int(
                    env.get("MLRIG_MAX_CONCURRENT_SCORING", default.max_concurrent_scoring)
                ),
                body_timeout_seconds=float(
                    env.get("MLRIG_BODY_TIMEOUT_SECONDS", default.body_timeout_seconds)
                ),
                max_columns=int(env.get("MLRIG_MAX_COLUMNS", default.max_columns)),
            )
        except ValueError as exc:
            raise SystemExit(
                f"mlrig-serve: a limit in the environment is not a number: {exc}"
            ) from exc
        if (
            min(limits.max_body_bytes, limits.max_concurrent_scoring, limits.max_columns) < 1
            or limits.body_timeout_seconds <= 0
        ):
            raise SystemExit(f"mlrig-serve: limits must be positive, got {limits}")
        return limits

    def fit_memory(
        self, memory_limit: int | None, in_use: int, expansion: int = EXPANSION
    ) -> Limits:
        """The body cap lowered so that every concurrent scoring fits the memory the
        container has left (`memory_limit` minus `in_use`, the loaded model's resident size)."""
        if memory_limit is None:
            return self
        spare = memory_limit - in_use - HEADROOM
        fits = max(MIN_BODY_BYTES, spare // (expansion * self.max_concurrent_scoring))
        if fits >= self.max_body_bytes:
            return self
        return self._replace(max_body_bytes=fits, memory_bound=True)


def memory_limit(root: str = "/sys/fs/cgroup") -> int | None:
    """This container's memory limit in bytes (cgroup v2, else v1), or None when unlimited."""
    for path in (f"{root}/memory.max", f"{root}/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # v1 writes ~2**63 for "no limit"
            return int(text)
        return None
    return None


def resident_bytes() -> int:
    """This process's resident memory now (Linux)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# -- model ------------------------------------------------------------------------------------
class Model:
    """The loaded model plus what the request path needs from its MLmodel file."""

    def __init__(self, model_dir: str, max_columns: int = MAX_COLUMNS) -> None:
        self.max_columns = max_columns  # without a signature
        self.request_memory = 0  # what one scoring may use (0: unbounded); make_app sets it
        with open(os.path.join(model_dir, "mlrig-serving.json")) as fh:
            self.spec: dict[str, Any] = json.load(fh)
        self.columns: list[dict[str, Any]] | None = self.spec.get("input_columns")
        self.mlflow_version = str(self.spec.get("mlflow_version") or "unknown")
        self.pyfunc: Any = None
        if self.spec["loader"] == "sklearn":
            self.predictor = self._load_sklearn(model_dir, self.spec)
            self.predict_fn = getattr(self.predictor, self.spec.get("predict_fn") or "predict")
        else:
            import mlflow.pyfunc

            self.pyfunc = mlflow.pyfunc.load_model(model_dir)
        self.names = [c["name"] for c in self.columns or []]
        self.all_double = bool(self.columns) and all(
            c["type"] == "double" for c in self.columns or []
        )
        # A model fitted on exactly the schema's columns gets the float64 matrix MLflow's
        # DataFrame would turn into anyway: same numbers, without scikit-learn's per-step
        # DataFrame checks (1.3 of 2.1 ms per one-row request).
        fitted = getattr(self.predictor, "feature_names_in_", None) if self.pyfunc is None else None
        self.matrix_ok = self.all_double and (fitted is None or list(fitted) == self.names)
        if self.matrix_ok:
            import warnings

            warnings.filterwarnings("ignore", message="X does not have valid feature names")

    @staticmethod
    def _load_sklearn(model_dir: str, spec: dict[str, Any]) -> Any:
        path = os.path.join(model_dir, spec["model_file"])
        fmt = spec["serialization_format"]
        if fmt == "skops":
            import skops.io

            return skops.io.load(path, trusted=spec.get("skops_trusted_types"))
        import cloudpickle  # reads plain pickles too

        with open(path, "rb") as fh:
            return cloudpickle.load(fh)

    @property
    def column_cap(self) -> int:
        return len(self.names) + EXTRA_COLUMNS if self.names else self.max_columns

    def _check_width(self, width: int) -> None:
        if width > self.column_cap:
            raise BadRequest(
                f"The input has {width} columns; this model takes at most {self.column_cap} "
                + (
                    f"(its signature's {len(self.names)} plus {EXTRA_COLUMNS} it ignores)."
                    if self.names
                    else "(MLRIG_MAX_COLUMNS)."
                )
            )

    # request path --------------------------------------------------------------------------
    def invocations(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        mime, params = _content_type(content_type)
        if mime == "application/json" and _too_deep(body, MAX_JSON_DEPTH):
            raise BadRequest(f"The JSON input is nested deeper than {MAX_JSON_DEPTH} levels.")
        if self.pyfunc is not None:
            return self._mlflow_invocations(body, content_type)
        if params.get("charset", "utf-8").lower() != "utf-8":
            return 415, b"The scoring server only supports UTF-8", "text/plain"
        if set(params) - {"charset"}:
            return (
                415,
                (
                    f"Unrecognized content type parameters: {', '.join(set(params) - {'charset'})}"
                ).encode(),
                "text/plain",
            )
        if mime == "application/json":
            frame = self._parse_json(body)
        elif mime == "text/csv":
            frame = self._parse_csv(body)
        elif mime == PARQUET and not PARQUET_ENGINE:
            return (
                415,
                (
                    b"This model server's image has no Parquet reader (pyarrow or "
                    b"fastparquet): send JSON or CSV, or add pyarrow to the model's "
                    b"requirements."
                ),
                "text/plain",
            )
        elif mime == PARQUET:
            frame = self._parse_parquet(body)
        else:
            return (
                415,
                (
                    f"This predictor only supports the following content types: "
                    f"Types: {CONTENT_TYPES}. Got '{content_type}'."
                ).encode(),
                "text/plain",
            )
        try:
            raw = self.predict_fn(frame)
        except Exception as exc:
            raise BadRequest(
                "Encountered an unexpected error while evaluating the model. "
                "Verify that the serialized input Dataframe is compatible with the "
                "model for inference."
            ) from exc
        return 200, _dumps_predictions(_jsonable(raw)), "application/json"

    def _parse_json(self, body: bytes) -> Any:
        try:
            doc = json.loads(body) if len(body) < SLICED_JSON_BYTES else _loads_sliced(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(
                f"Ensure that input is a valid JSON formatted string. Error: '{exc!r}'"
            ) from exc
        if not isinstance(doc, dict):
            raise BadRequest(f"{REQUIRED_INPUT_FORMAT}. Received a {type(doc).__name__}.")
        keys = [k for k in doc if k in FORMATS]
        if len(keys) != 1:
            raise BadRequest(
                f"{REQUIRED_INPUT_FORMAT}. Received dictionary with input fields: {list(doc)}."
            )
        key, data = keys[0], doc[keys[0]]
        self._check_width(_width(key, data))
        if key == "dataframe_split":
            if not isinstance(data, dict):
                raise BadRequest("dataframe_split must be a dictionary with 'columns' and 'data'")
            fast = self._fast_split(data)
            if fast is not None:
                return fast
        return self._enforce(self._frame(key, data))

    def _fast_split(self, data: dict[str, Any]) -> Any:
        """All-double schema and a plain numeric matrix: one numpy block, no per-column work."""
        if not (
            self.columns
            and self.all_double
            and set(data) <= {"columns", "data"}
            and data.get("columns") == self.names
        ):
            return None
        import numpy as np
        import pandas as pd

        rows, width = data.get("data"), len(self.names)
        if not isinstance(rows, list) or not rows:
            return None
        arr = np.empty((len(rows), width), dtype=np.float64)
        # In blocks: one np.asarray over a big batch holds the interpreter lock for as long as
        # it takes (0.15 s for 28 MB), and /ping waits on that lock.
        for start in range(0, len(rows), ROWS_PER_SLICE):
            try:
                block = np.asarray(rows[start : start + ROWS_PER_SLICE], dtype=np.float64)
            except (ValueError, TypeError):
                return None  # let the general path produce MLflow's error
            if block.ndim != 2 or block.shape[1] != width:
                return None
            arr[start : start + len(block)] = block
        for end in range(len(rows), 0, -ROWS_PER_SLICE):  # freeing millions of floats at
            del rows[max(0, end - ROWS_PER_SLICE) : end]  # once is another long pause
        return arr if self.matrix_ok else pd.DataFrame(arr, columns=self.names)

    @staticmethod
    def _frame(key: str, data: Any) -> Any:
        import pandas as pd

        try:
            if key == "dataframe_split":
                return pd.DataFrame(
                    data=data.get("data"), columns=data.get("columns"), index=data.get("index")
                )
            if key == "dataframe_records" or (
                key == "instances" and isinstance(data, list) and data and isinstance(data[0], dict)
            ):
                if not isinstance(data, list):
                    raise BadRequest("dataframe_records must be a list of records")
                return pd.DataFrame.from_records(data)
            if isinstance(data, dict):  # inputs/instances as {column: values}
                return pd.DataFrame({k: v if isinstance(v, list) else [v] for k, v in data.items()})
            if isinstance(data, list) and data and isinstance(data[0], dict):
                return pd.DataFrame.from_records(data)
            return pd.DataFrame(data)
        except BadRequest:
            raise
        except Exception as exc:
            raise BadRequest(f"Failed to parse data as a pandas DataFrame: {exc}") from exc

    def _parse_csv(self, body: bytes) -> Any:
        import pandas as pd

        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"Ensure that input is valid UTF-8. Error: '{exc}'") from exc
        self._check_width(_csv_width(text))
        try:
            dtypes = (
                {c["name"]: TYPES.get(c["type"], ("object", ""))[0] for c in self.columns}
                if self.columns
                else None
            )
            frame = pd.read_csv(io.StringIO(text), dtype=dtypes)
        except Exception as exc:
            raise BadRequest(
                "Failed to parse input as a Pandas DataFrame. Ensure that the "
                "input is a valid CSV-formatted Pandas DataFrame produced using "
                f"the `pandas.DataFrame.to_csv()` method. Error: '{exc}'"
            ) from exc
        return self._enforce(frame)

    def _parse_parquet(self, body: bytes) -> Any:
        import pandas as pd

        self._check_parquet(body)
        try:
            frame = pd.read_parquet(io.BytesIO(body))
        except Exception as exc:
            raise BadRequest(
                "Failed to parse input as a Pandas DataFrame. Ensure that the "
                "input is a valid Parquet Pandas DataFrame produced using the "
                f"`pandas.DataFrame.to_parquet()` method. Error: '{exc}'"
            ) from exc
        return self._enforce(frame, typed=True)

    def _enforce(self, frame: Any, typed: bool = False) -> Any:
        """MLflow's column-schema rules: required columns present, safe casts, schema order.

        `typed` input (Parquet) keeps its own dtypes, which MLflow checks at predict time with
        its stricter upcast rules and answers INVALID_PARAMETER_VALUE; JSON and CSV were
        already cast to the schema while parsing, where MLflow answers BAD_REQUEST."""
        if not self.columns:
            return frame
        import pandas as pd

        duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        if duplicated:  # MLflow answers these with the same 400 (its enforcement trips on them)
            raise BadRequest(
                f"Failed to enforce schema of data '{frame}' with schema "
                f"'{self.names}'. Error: Duplicate column names {duplicated}.",
                code="INVALID_PARAMETER_VALUE",
            )
        if all(isinstance(c, int) for c in frame.columns) and len(frame.columns) == len(self.names):
            frame.columns = self.names  # positional data, as MLflow names it from the schema
        missing = [
            c["name"]
            for c in self.columns
            if c.get("required", True) and c["name"] not in frame.columns
        ]
        if missing:
            raise BadRequest(
                f"Failed to enforce schema of data '{frame}' with schema "
                f"'{self.names}'. Error: Model is missing inputs {missing}.",
                code="INVALID_PARAMETER_VALUE",
            )
        out = {}
        for col in self.columns:
            name = col["name"]
            if name not in frame.columns:
                continue
            dtype, kinds = TYPES.get(col["type"], ("object", "OSU"))
            values = frame[name]
            if not (_upcasts(values, dtype) if typed else values.dtype.kind in kinds):
                raise BadRequest(
                    f"Failed to enforce schema of data '{frame}' with schema "
                    f"'{self.names}'. Error: Incompatible input types for column "
                    f"{name}. Can not safely convert {values.dtype} to {dtype}.",
                    code="INVALID_PARAMETER_VALUE" if typed else "BAD_REQUEST",
                )
            out[name] = values.astype(dtype) if dtype != "object" else values
        return pd.DataFrame(out)

    @property
    def expansion(self) -> int:
        return EXPANSION if self.pyfunc is None else PYFUNC_EXPANSION

    def _check_parquet(self, body: bytes) -> None:
        """Width and decoded size from the footer, before any data is decompressed: Parquet
        is compressed, so a small body can decode to gigabytes. (fastparquet: not checked.)"""
        if PARQUET_ENGINE != "pyarrow":
            return
        import pyarrow.parquet as pq

        try:
            meta = pq.read_metadata(io.BytesIO(body))
        except Exception:  # noqa: BLE001 - reading the data says what is wrong
            return
        self._check_width(meta.num_columns)
        groups = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        decoded = max(meta.num_rows * meta.num_columns * 8, groups)
        if self.request_memory and decoded * PARQUET_EXPANSION > self.request_memory:
            raise BadRequest(
                f"The Parquet input decodes to ~{decoded} bytes ({meta.num_rows} rows), more "
                f"than this server scores at once ({self.request_memory // PARQUET_EXPANSION} "
                "bytes). Send smaller batches, or give the container more memory.",
                status=413,
                code="RESOURCE_LIMIT_EXCEEDED",
            )

    def _mlflow_width(self, body: bytes, mime: str) -> None:
        """A column-schema model's input is no wider than the sklearn path allows, checked
        before MLflow builds its DataFrame (one more parse; malformed input is MLflow's to
        answer). Tensor models have no columns to count: the body cap bounds them."""
        if not self.names:
            return
        try:
            if mime == "text/csv":
                width = _csv_width(body.decode("utf-8"))
            elif mime == "application/json":
                doc = json.loads(body)
                keys = [k for k in FORMATS if isinstance(doc, dict) and k in doc]
                width = _width(keys[0], doc[keys[0]]) if len(keys) == 1 else 0
                del doc
            else:
                return
        except (ValueError, RecursionError):
            return
        self._check_width(width)

    def _mlflow_invocations(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc import scoring_server

        mime = _content_type(content_type)[0]
        if mime == PARQUET:
            self._check_parquet(body)
        else:
            self._mlflow_width(body, mime)

        try:
            res = scoring_server.invocations(
                body, content_type, self.pyfunc, self.pyfunc.metadata.get_input_schema()
            )
        except MlflowException as exc:
            return exc.get_http_status_code(), exc.serialize_as_json().encode(), "application/json"
        body_out = res.response.encode() if isinstance(res.response, str) else res.response
        return res.status, body_out, res.mimetype


# json.loads holds the interpreter lock for the whole document (0.9 s for 28 MB), so a big
# body is decoded a row at a time instead, letting the event loop's thread answer in between.
SLICED_JSON_BYTES = 1 << 20
ROWS_PER_SLICE = 4096
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, as the json module matches it


def _loads_sliced(body: bytes) -> Any:
    """`json.loads(body)`, same result and same errors, but objects and arrays of objects or
    arrays are walked here, so each C call decodes one row, never the whole batch."""
    decoder = codecs.getincrementaldecoder(json.detect_encoding(body))("surrogatepass")
    step = 1 << 22  # 4 MiB of text per C call
    parts = [decoder.decode(body[i : i + step]) for i in range(0, len(body), step)]
    text = "".join([*parts, decoder.decode(b"", final=True)])
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    value, end = _decode_at(text, _skip(text, 0), 0)
    end = _skip(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _too_deep(body: bytes, limit: int) -> bool:
    """Whether the JSON text in body nests arrays/objects deeper than limit, read on the raw
    bytes in vectorised slices (brackets inside strings do not count), before any parser
    recurses into it. Invalid JSON is left to the parser to report."""
    if body.count(b"[") + body.count(b"{") <= limit:  # one-row requests: no scan needed
        return False
    import numpy as np

    if b"\\" in body:  # escaped backslashes, then escaped quotes: neither ends a string
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    step = np.zeros(256, dtype=np.int8)
    step[[ord("["), ord("{")]], step[[ord("]"), ord("}")]] = 1, -1
    data = np.frombuffer(body, dtype=np.uint8)
    depth = quotes = 0
    for start in range(0, len(data), 1 << 22):
        chunk = data[start : start + (1 << 22)]
        inside = (np.cumsum(chunk == ord('"'), dtype=np.int64) + quotes) & 1
        quotes = int(inside[-1])
        levels = np.cumsum(step[chunk] * (1 - inside).astype(np.int8), dtype=np.int64) + depth
        if int(levels.max()) > limit:
            return True
        depth = int(levels[-1])
    return False


def _width(key: str, data: Any) -> int:
    """How many columns a DataFrame built from this input would have, at most."""
    if key == "dataframe_split" and isinstance(data, dict):
        columns = data.get("columns")
        return max(len(columns) if isinstance(columns, list) else 0, _width("", data.get("data")))
    if isinstance(data, dict):
        return len(data)
    if not isinstance(data, list):
        return 1
    width = max((len(row) for row in data if isinstance(row, list)), default=1)
    records = [row for row in data if isinstance(row, dict)]
    return max(width, len(set().union(*records))) if records else width


def _csv_width(text: str) -> int:
    """Fields in the CSV header, which may span lines inside quotes (a CSV's widest record
    is refused by pandas unless it matches the header)."""
    import csv

    end = quotes = 0
    for _ in range(1000):
        found = text.find("\n", end)
        found = len(text) if found < 0 else found
        quotes += text.count('"', end, found)
        end = found + 1
        if quotes % 2 == 0 or end >= len(text):
            break
    else:
        raise BadRequest("The CSV header spans more than 1000 lines.")
    header = text[:end]
    csv.field_size_limit(max(csv.field_size_limit(), len(header) + 1))
    try:
        return len(next(csv.reader(io.StringIO(header)), []))
    except csv.Error:  # not CSV the csv module reads: count every comma
        return header.count(",") + 1


def _dumps_predictions(predictions: Any) -> bytes:
    """`json.dumps({"predictions": ...})`, a slice of rows per C call when the list is long."""
    if not isinstance(predictions, list) or len(predictions) <= ROWS_PER_SLICE:
        return json.dumps({"predictions": predictions}).encode()
    step = ROWS_PER_SLICE
    parts = [json.dumps(predictions[i : i + step])[1:-1] for i in range(0, len(predictions), step)]
    return ('{"predictions": [' + ", ".join(parts) + "]}").encode()


def _skip(text: str, i: int) -> int:
    match = _SPACE.match(text, i)
    return match.end() if match else i


class _GcPause:
    """Python's full collections walk every object, and a big batch allocates millions of
    rows: each collection stopped the event loop for 0.25-0.3 s. Rows hold no cycles, so
    while any big batch is being scored, collection waits (cyclic garbage only; refcounting
    still frees everything else at once)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders = 0
        self.resume = False

    def __enter__(self) -> None:
        with self.lock:
            if self.holders == 0:
                self.resume = gc.isenabled()
                gc.disable()
            self.holders += 1

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.holders -= 1
            if self.holders == 0 and self.resume:
                gc.enable()


GC_PAUSE = _GcPause()


def _decode_at(text: str, i: int, depth: int) -> tuple[Any, int]:
    c = text[i : i + 1]
    if depth < 2 and c == "{":  # the envelope and its format key; records go whole
        out: dict[str, Any] = {}
        i = _skip(text, i + 1)
        if text[i : i + 1] == "}":
            return out, i + 1
        while True:
            if text[i : i + 1] != '"':
                raise json.JSONDecodeError(
                    "Expecting property name enclosed in double quotes", text, i
                )
            key, i = _DECODER.raw_decode(text, i)
            i = _skip(text, i)
            if text[i : i + 1] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
            out[key], i = _decode_at(text, _skip(text, i + 1), depth + 1)
            i = _skip(text, i)
            if text[i : i + 1] == "}":
                return out, i + 1
            if text[i : i + 1] != ",":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            i = _skip(text, i + 1)
    first = _skip(text, i + 1)
    if depth < 3 and c == "[" and text[first : first + 1] in ("[", "{"):  # a list of rows
        items: list[Any] = []
        i = first
        while True:  # rows: each one is a short C call
            item, i = _decode_at(text, i, depth + 1)
            items.append(item)
            i = _skip(text, i)
            if text[i : i + 1] == "]":
                return items, i + 1
            if text[i : i + 1] != ",":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            i = _skip(text, i + 1)
    return _DECODER.raw_decode(text, i)  # a scalar, a column of scalars, or a row


# MLflow reads Parquet with whichever engine pandas finds; the lean image may have neither.
PARQUET_ENGINE = next((m for m in ("pyarrow", "fastparquet") if importlib.util.find_spec(m)), None)


def _upcasts(values: Any, dtype: str) -> bool:
    """MLflow's predict-time rule (mlflow.models.utils._enforce_mlflow_datatype) for a column
    that arrives typed: same kind and no narrower, small ints to double, 0/1 int64 to floats."""
    import numpy as np

    have, want = values.dtype, np.dtype(dtype)
    if want.kind == "O":
        return have.kind == "O"  # object or pandas' string dtype
    if have.kind == "O":
        have = values.infer_objects().dtype
        if want.kind == "b" and have.kind == "O":
            return True  # MLflow passes these through so None is not cast to False
    if have == want:
        return True
    if have.kind == want.kind:
        return have.itemsize <= want.itemsize
    if have.kind == "u" and want.kind == "i":
        return have.itemsize < want.itemsize
    if have.kind in "iu" and want == np.float64 and have.itemsize <= 6:
        return True
    return have == np.int64 and want.kind == "f" and bool(values.dropna().isin((0, 1)).all())


def _content_type(value: str) -> tuple[str, dict[str, str]]:
    parts = [p.strip() for p in (value or "").split(";")]
    params = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in parts[1:])}
    return parts[0].lower(), params


def _jsonable(raw: Any) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(raw, pd.DataFrame):
        return json.loads(raw.to_json(orient="records"))
    if isinstance(raw, pd.Series | np.ndarray):
        return raw.tolist()
    if isinstance(raw, np.generic):
        return raw.item()
    return raw


# -- ASGI -------------------------------------------------------------------------------------
class Disconnected(Exception):
    """The client left before its body arrived: there is no one to answer."""


def _too_large(limits: Limits) -> BadRequest:
    return BadRequest(
        f"The request body is larger than this server accepts ({limits.max_body_bytes} bytes). "
        + (
            "Send smaller batches, or give the container more memory "
            "(`mlrig image run --memory`): the cap is what its memory limit holds."
            if limits.memory_bound
            else "Send smaller batches, or start the server with a larger MLRIG_MAX_BODY_BYTES."
        ),
        status=413,
        code="RESOURCE_LIMIT_EXCEEDED",
    )


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses these before the app sees them
    return None


async def _read_body(receive: Any, limits: Limits) -> bytes:
    """The body, chunk by chunk, refused with 413 the moment it passes `limit` (chunked
    uploads declare no length, so this is the only place they can be stopped)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise Disconnected
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise _too_large(limits)
        chunks.append(chunk)
        if not msg.get("more_body"):
            return b"".join(chunks)


def _error_body(exc: BadRequest) -> bytes:
    return json.dumps({"error_code": exc.code, "message": str(exc)}).encode()


def make_app(model: Model, limits: Limits | None = None) -> Any:
    limits = limits or Limits.from_env()
    model.max_columns = limits.max_columns
    model.request_memory = limits.max_body_bytes * model.expansion
    version = model.mlflow_version.encode()
    # Parsing and predicting run on these threads, never on the event loop, so /ping and
    # /health answer while a big batch scores. The semaphore admits that many requests to
    # read and score at once; the rest wait with their bodies still in the socket, so a flood
    # queues instead of multiplying memory.
    executor = ThreadPoolExecutor(
        max_workers=limits.max_concurrent_scoring, thread_name_prefix="mlrig-score"
    )
    slots = asyncio.Semaphore(limits.max_concurrent_scoring)

    async def invocations(scope: dict[str, Any], receive: Any) -> tuple[int, bytes, str]:
        declared = _declared_length(scope["headers"])
        if declared is not None and declared > limits.max_body_bytes:
            raise _too_large(limits)  # answered before a byte is read
        async with slots:
            try:
                body = await asyncio.wait_for(
                    _read_body(receive, limits), limits.body_timeout_seconds
                )
            except TimeoutError:
                raise BadRequest(
                    f"The request body did not arrive within {limits.body_timeout_seconds:g} s.",
                    status=408,
                    code="DEADLINE_EXCEEDED",
                ) from None
            ctype_in = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(executor, score, body, ctype_in)

    def score(body: bytes, ctype_in: str) -> tuple[int, bytes, str]:
        big = len(body) >= SLICED_JSON_BYTES
        with GC_PAUSE if big else contextlib.nullcontext():
            return model.invocations(body, ctype_in)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        extra: list[tuple[bytes, bytes]] = []
        if path in ("/ping", "/health") and method in ("GET", "HEAD"):
            status, body, ctype = 200, b"\n", "application/json"
        elif path == "/version" and method == "GET":
            status, body, ctype = 200, version, "application/json"
        elif path == "/invocations" and method == "POST":
            try:
                status, body, ctype = await invocations(scope, receive)
            except Disconnected:
                return
            except BadRequest as exc:
                status, ctype, body = exc.status, "application/json", _error_body(exc)
                if exc.status in (408, 413):  # the body was not read to its end
                    extra.append((b"connection", b"close"))
            except RecursionError:  # a parser past the interpreter's depth: the input's fault
                exc = BadRequest(f"The input is nested deeper than {MAX_JSON_DEPTH} levels.")
                status, ctype, body = 400, "application/json", _error_body(exc)
            except Exception as exc:  # the server must answer, never die on one request
                traceback.print_exc()
                status, ctype = 500, "application/json"
                body = json.dumps({"error_code": "INTERNAL_ERROR", "message": repr(exc)}).encode()
        elif path in ("/ping", "/health", "/version", "/invocations"):
            status, body, ctype = 405, b'{"detail":"Method Not Allowed"}', "application/json"
        else:
            status, body, ctype = 404, b'{"detail":"Not Found"}', "application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype.encode()),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    import uvicorn

    configured = Limits.from_env()
    model = Model(MODEL_DIR, configured.max_columns)
    memory, in_use = memory_limit(), resident_bytes()
    limits = configured.fit_memory(memory, in_use, model.expansion)
    port = int(os.environ.get("PORT", "8080"))
    host = os.environ.get("HOST", "0.0.0.0")  # noqa: S104 - a container's server
    print(
        f"mlrig-serve: model loaded, listening on {host}:{port}; {limits}",
        file=sys.stderr,
        flush=True,
    )
    if limits.memory_bound:
        print(
            f"mlrig-serve: body cap {limits.max_body_bytes} bytes (MLRIG_MAX_BODY_BYTES "
            f"{configured.max_body_bytes}): memory limit {memory}, {in_use} in use after "
            f"loading the model, {model.expansion}x a body while it is scored, "
            f"{limits.max_concurrent_scoring} at once",
            file=sys.stderr,
            flush=True,
        )
    uvicorn.run(
        make_app(model, limits),
        host=host,
        port=port,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level=os.environ.get("LOG_LEVEL", "warning"),
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
