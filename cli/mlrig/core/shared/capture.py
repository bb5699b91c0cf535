"""Request capture's contract with the serving image: the record format (SageMaker Data
Capture's schema plus an `mlrig` object), the environment a container is started with, the
counters its GET /capture answers, and the capture folder a container user can write.

Everything here that comes from outside (image labels, MLflow's run id, a container's
counters, a record read back) is validated by these models before it is used.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlrig.errors import UsageError

MOUNT_POINT = "/var/lib/mlrig/captures"  # where the capture folder appears in the container
INFERENCE_ID_HEADER = "X-Inference-Id"
STATS_PATH = "/capture"
PERCENT = "MLRIG_CAPTURE_PERCENT"
DIRECTORY = "MLRIG_CAPTURE_DIR"
ENDPOINT = "MLRIG_ENDPOINT"
MODEL_NAME = "MLRIG_MODEL_NAME"
MODEL_VERSION = "MLRIG_MODEL_VERSION"
IMAGE_DIGEST = "MLRIG_IMAGE_DIGEST"
RUN_ID = "MLRIG_RUN_ID"
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
_USER = re.compile(r"^(?P<uid>\d+)(?::(?P<gid>\d+))?$")


_STRICT = ConfigDict(extra="forbid", frozen=True)  # what mlrig itself writes: nothing else


# -- the served version: what a record, an image's labels and a container's env name --------
# The forms MLflow and the registry make, defined here once: the capture reader (monitor),
# provenance's checks of image labels and tags, and the identity deploy hands a container
# all validate against `Served`'s fields.
ENDPOINT_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"  # deploy's endpoint names (deploy.state)
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$"
VERSION_PATTERN = r"^[1-9][0-9]{0,9}$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
RUN_ID_PATTERN = r"^[0-9a-f]{32}$"


class Served(BaseModel):
    """The model version a capture record (its `mlrig` object) or an image's labels name. Read
    back, other fields are ignored (a newer writer may add some); digest and run may be
    unknown."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    endpoint: str | None = Field(default=None, pattern=ENDPOINT_PATTERN)
    model: str = Field(pattern=MODEL_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    digest: str | None = Field(default=None, pattern=DIGEST_PATTERN)
    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN)

    @classmethod
    def problems(cls, values: dict[str, str]) -> set[str]:
        """The fields of `values` (a subset of Served's) that break their rule."""
        fields = cls.model_fields
        try:
            cls.model_validate({"model": "m", "version": "1", **values})
        except ValidationError as exc:
            return {str(e["loc"][0]) for e in exc.errors() if e["loc"] and e["loc"][0] in fields}
        return set()


class Identity(Served):
    """What every record of a container names: the version deploy verified (all of it)."""

    model_config = _STRICT

    digest: str = Field(pattern=DIGEST_PATTERN)
    run_id: str = Field(pattern=RUN_ID_PATTERN)


# -- the record ---------------------------------------------------------------------------------
# One model of a record. `ReadRecord` is the boundary every record read back crosses (the
# monitor's reader): fields a newer writer adds are ignored, and SageMaker's own records pass.
# `CaptureRecord` narrows it to the agreed format mlrig's serving image writes (the tests hold
# the writer to it): no other field, UUIDs, the millisecond UTC time, the whole identity.
class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ReadBody(_Read):
    observedContentType: str = Field(max_length=200)  # noqa: N815 - SageMaker's field names
    mode: Literal["INPUT", "OUTPUT"]
    data: str
    encoding: Literal["JSON", "BASE64"]

    def value(self) -> Any:
        """The body's JSON value; ValueError when it is none."""
        raw = self.data
        if self.encoding == "BASE64":
            try:
                raw = base64.b64decode(self.data, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ValueError("BASE64 data that is not UTF-8 JSON") from exc
        return json.loads(raw)


class ReadData(_Read):
    endpointInput: ReadBody  # noqa: N815
    endpointOutput: ReadBody  # noqa: N815


class ReadEvent(_Read):
    eventId: str = Field(max_length=100)  # noqa: N815
    inferenceId: str = Field(pattern=r"^[A-Za-z0-9-]{1,100}$")  # noqa: N815
    inferenceTime: datetime  # noqa: N815


class ReadRecord(_Read):
    """One line of a capture file, as every reader takes it."""

    captureData: ReadData  # noqa: N815
    eventMetadata: ReadEvent  # noqa: N815
    eventVersion: str = Field(max_length=20)  # noqa: N815
    mlrig: Served


class CapturedBody(ReadBody):
    model_config = _STRICT


class CaptureData(ReadData):
    model_config = _STRICT

    endpointInput: CapturedBody  # noqa: N815
    endpointOutput: CapturedBody  # noqa: N815


class EventMetadata(ReadEvent):
    model_config = _STRICT

    eventId: str = Field(pattern=_UUID)  # noqa: N815
    inferenceId: str = Field(pattern=_UUID)  # noqa: N815

    @field_validator("inferenceTime", mode="before")
    @classmethod
    def _written_form(cls, value: object) -> object:
        if not isinstance(value, str) or not re.fullmatch(_TIME, value):
            raise ValueError("not a UTC time in milliseconds (2026-12-07T10:00:00.000Z)")
        return value


class CaptureRecord(ReadRecord):
    """One line of a capture file as mlrig's serving image writes it (the agreed format)."""

    model_config = _STRICT

    captureData: CaptureData  # noqa: N815
    eventMetadata: EventMetadata  # noqa: N815
    eventVersion: Literal["0"]  # noqa: N815
    mlrig: Identity


class CaptureStats(BaseModel):
    """A serving container's capture counters (GET /capture)."""

    percent: float = Field(ge=0, le=100)
    writer: str = Field(pattern=r"^[0-9a-f]{1,32}$")
    sampled: int = Field(ge=0)
    written: int = Field(ge=0)
    dropped: int = Field(ge=0)
    errors: int = Field(ge=0)
    queued: int = Field(ge=0)
    files: int = Field(ge=0)
    last_error: str | None = Field(default=None, max_length=500)


def parse_stats(text: str) -> CaptureStats | None:
    """The counters a container answered, or None when they are not counters."""
    try:
        return CaptureStats.model_validate_json(text)
    except (ValidationError, ValueError):
        return None


# -- starting a container with capture --------------------------------------------------------
def check_percent(percent: int | None) -> int | None:
    if percent is not None and not 0 <= percent <= 100:
        raise UsageError(
            f"--capture {percent} is not a share",
            hint="pass 0-100 (percent of predictions to record; 0 turns capture off)",
        )
    return percent


def identity(
    *, endpoint: str | None, model: str | None, version: str | None, digest: str, run_id: str | None
) -> Identity:
    """The record identity from values read back from MLflow or image labels, or one line."""
    try:
        return Identity(
            endpoint=endpoint, model=model or "", version=version or "", digest=digest,
            run_id=run_id or "",
        )  # fmt: skip
    except ValidationError as exc:
        bad = ", ".join(str(e["loc"][0]) for e in exc.errors())
        raise UsageError(
            f"cannot capture: the version's {bad} is missing or not valid",
            hint="capture needs an image built by `mlrig image build` from a registered model "
            "version (its labels name the model, version and run)",
        ) from None


def container_env(percent: int, ident: Identity) -> dict[str, str]:
    env = {
        PERCENT: str(percent),
        DIRECTORY: MOUNT_POINT,
        MODEL_NAME: ident.model,
        MODEL_VERSION: ident.version,
        IMAGE_DIGEST: ident.digest,
        RUN_ID: ident.run_id,
    }
    if ident.endpoint:
        env[ENDPOINT] = ident.endpoint
    return env


def writable_folder(folder: Path, image_user: str) -> str | None:
    """Make folder (0700) writable by the serving container; the user to run the container
    as, or None for the image's own. Run by root, the folder is given to the image's non-root
    user; run by anyone else (who cannot give a folder away), the container runs as them."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    if os.geteuid() != 0:
        return f"{os.getuid()}:{os.getgid()}"
    match = _USER.match(image_user)
    if not match or match["uid"] == "0":
        raise UsageError(
            f"the serving image runs as {image_user or 'root'!r}, not a numeric non-root user",
            hint="rebuild it with `mlrig image build` (its image runs as 1000:1000)",
        )
    uid, gid = int(match["uid"]), int(match["gid"] or match["uid"])
    os.chown(folder, uid, gid)
    return None
