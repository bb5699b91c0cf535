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

Capture (environment): MLRIG_CAPTURE_PERCENT of answered predictions are written as JSON
lines in SageMaker Data Capture's schema under MLRIG_CAPTURE_DIR by a background writer
(on AWS: `s3://BUCKET/captures/ENDPOINT`; under Lambda written by an internal extension after
the answer of the invocation that makes the buffer due), every answer carries its
X-Inference-Id, and GET /capture reports the counters.

The package, by idea: `limits` (what a request may cost: the body cap, concurrency, columns,
the container's memory), `payload` (request bodies: JSON decoded in slices, nesting depth,
widths, predictions encoded in slices), `load` (skops without default trust, for a model
whose build recorded its exact types), `scoring` (the loaded model and its input parsing and
schema checks), `capture` (sampled records, the bounded buffer and its writer), `s3put`
(one SigV4-signed S3 PUT by the standard library, capture's writer on AWS), `extension`
(capture's writer as a Lambda internal extension), `app` (the ASGI app and `main`) and
`aws_lambda` (the app as a Lambda handler, imported only when Lambda starts the image). The
image copies the package beside `serve.py`, its entry point.
"""

from __future__ import annotations

from . import app, capture, limits, load, payload, scoring
from .app import MODEL_DIR, Disconnected, main, make_app
from .capture import Capture, Settings
from .limits import (
    EXPANSION,
    EXTRA_COLUMNS,
    HEADROOM,
    MAX_COLUMNS,
    MAX_JSON_DEPTH,
    MIN_BODY_BYTES,
    PARQUET_EXPANSION,
    PYFUNC_EXPANSION,
    BadRequest,
    Limits,
    memory_limit,
    resident_bytes,
)
from .payload import (
    GC_PAUSE,
    ROWS_PER_SLICE,
    SLICED_JSON_BYTES,
    _csv_width,
    _dumps_predictions,
    _loads_sliced,
    _too_deep,
    _width,
)
from .scoring import CONTENT_TYPES, FORMATS, PARQUET, PARQUET_ENGINE, TYPES, Model

__all__ = [
    "CONTENT_TYPES",
    "EXPANSION",
    "EXTRA_COLUMNS",
    "FORMATS",
    "GC_PAUSE",
    "HEADROOM",
    "MAX_COLUMNS",
    "MAX_JSON_DEPTH",
    "MIN_BODY_BYTES",
    "MODEL_DIR",
    "PARQUET",
    "PARQUET_ENGINE",
    "PARQUET_EXPANSION",
    "PYFUNC_EXPANSION",
    "ROWS_PER_SLICE",
    "SLICED_JSON_BYTES",
    "Settings",
    "TYPES",
    "BadRequest",
    "Capture",
    "Disconnected",
    "Limits",
    "Model",
    "_csv_width",
    "_dumps_predictions",
    "_loads_sliced",
    "_too_deep",
    "_width",
    "app",
    "capture",
    "limits",
    "load",
    "main",
    "make_app",
    "memory_limit",
    "payload",
    "resident_bytes",
    "scoring",
]
