"""Request and response bodies, read without holding the event loop: JSON decoded a row at a
time when big, its nesting depth and an input's width checked before any parser or DataFrame
sees it, the CSV header's width, predictions encoded in slices, collection paused meanwhile."""

from __future__ import annotations

import codecs
import gc
import io
import json
import re
import threading
from typing import Any

from .limits import BadRequest

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
