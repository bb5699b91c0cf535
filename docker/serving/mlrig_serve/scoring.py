"""The loaded model and the request path in front of it: a scikit-learn model's input parsed
and schema-checked here (JSON, CSV, Parquet), any other flavor through MLflow's pyfunc and its
own parsing, both held to the columns the model takes."""

from __future__ import annotations

import importlib.util
import io
import json
import os
from typing import Any

from . import payload
from .limits import (
    EXPANSION,
    EXTRA_COLUMNS,
    MAX_COLUMNS,
    MAX_JSON_DEPTH,
    PARQUET_EXPANSION,
    PYFUNC_EXPANSION,
    BadRequest,
)
from .load import skops_defaults_off
from .payload import (
    _content_type,
    _csv_width,
    _dumps_predictions,
    _jsonable,
    _loads_sliced,
    _too_deep,
    _width,
)

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
        # Loading imports the model's libraries (hundreds of modules, no cyclic garbage to
        # speak of): without collections on the way it takes ~7% less CPU at start.
        with payload.GC_PAUSE:
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
            exact = spec.get("skops_types")
            if exact is not None:
                skops_defaults_off()
            import skops.io

            return skops.io.load(
                path, trusted=exact if exact is not None else spec.get("skops_trusted_types")
            )
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
            doc = json.loads(body) if len(body) < payload.SLICED_JSON_BYTES else _loads_sliced(body)
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
        for start in range(0, len(rows), payload.ROWS_PER_SLICE):
            try:
                block = np.asarray(rows[start : start + payload.ROWS_PER_SLICE], dtype=np.float64)
            except (ValueError, TypeError):
                return None  # let the general path produce MLflow's error
            if block.ndim != 2 or block.shape[1] != width:
                return None
            arr[start : start + len(block)] = block
        for end in range(len(rows), 0, -payload.ROWS_PER_SLICE):  # freeing millions of floats at
            del rows[max(0, end - payload.ROWS_PER_SLICE) : end]  # once is another long pause
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
