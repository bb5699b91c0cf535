"""The provenance record `mlrig trace` prints and `mlrig checkout` restores from, and the names
(run tags, model-version tags, image labels) the pipeline, push and trace agree on."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# -- run tags written by the generated repo's train stage -------------------------------------
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_SOURCE_NAME = "mlflow.source.name"  # MLflow's own: the script or notebook that ran
TAG_MLFLOW_REPO_URL = "mlflow.source.git.repoURL"  # MLflow's own: the origin, when it knew one
TAG_GIT_REMOTE = "mlrig.git.remote"
TAG_GIT_DIRTY = "mlrig.git.dirty"
TAG_DIRTY_FILES = "mlrig.git.dirty_files"  # JSON {path: md5 | "deleted"}
DIRTY_DELETED = "deleted"
DIRTY_TOO_MANY = "..."  # the key of the capped form {"...": "too many"}
TAG_EXP_NAME = "mlrig.exp.name"
TAG_EXP_BASELINE = "mlrig.exp.baseline"
TAG_EXP_REF = "mlrig.exp.ref"
TAG_STAGE = "dvc.stage"
TAG_DEP_PREFIX = "dvc.dep."
TAG_OUT_PREFIX = "dvc.out."
TAG_PARAMS_MD5 = "mlrig.params.md5"
TAG_REPRO_OF = "mlrig.repro_of"
REPRO_OF_ENV = "MLRIG_REPRO_OF"

# -- MLflow 3 logged models: `mlflow.<flavor>.log_model` returns models:/m-<32 hex> -----------
# the one place the id's form is checked before it reaches a URL or a download
LOGGED_MODEL_URI = re.compile(r"^models:/(?P<id>m-[0-9a-f]{32})/?$")


def logged_model_id(uri: str) -> str | None:
    """The id of an MLflow 3 logged-model URI (models:/m-<32 hex>), None for any other URI."""
    m = LOGGED_MODEL_URI.fullmatch(uri.strip())
    return m["id"] if m else None


# -- model-version tags -------------------------------------------------------------------------
# set on a version whose retrain was undone (an interrupted or failed run): no commit restores
# it, so nothing picks it by default (image build's "latest version")
TAG_UNDONE = "mlrig.undone"

TRAIN_STAGE = "train"
RUN_FILE = "models/mlflow_run.json"
MODEL_FILE = "models/model.pkl"
LOCK_FILE = "dvc.lock"
PIPELINE_FILE = "dvc.yaml"
DATA_RECORD_FILE = "data/snapshot/record.json"  # ingest's record of the snapshot (in git)
# a temporal repo's split (train_from, train_to, test_from, test_to, gap, horizon, ttl)
TAG_TEMPORAL_PREFIX = "mlrig.temporal."
WINDOW_KEYS = ("train_from", "train_to", "test_from", "test_to", "gap", "horizon", "ttl")
# where a remote retrain's run trained (mlrig.core.compute.remote writes them): backend, task,
# cpu, memory_mib, spot, image, wall_seconds, cost_usd
TAG_COMPUTE_PREFIX = "mlrig.compute."
TAG_DATA_PREFIX = "mlrig.data."  # source, md5, rows, ingested_at: the snapshot's record
EXP_REFS = "refs/exps"

# -- model-version tags written by `mlrig image push` -----------------------------------------
MV_IMAGE_DIGEST = "mlrig.image.digest"
MV_IMAGE_REPOSITORY = "mlrig.image.repository"
MV_IMAGE_REFS = "mlrig.image.refs"  # space-separated host/repository@sha256:...

# -- image labels (the prefix is serving_model.LABEL_PREFIX) -----------------------------------
LABEL_RUN_ID = "io.mlrig.mlflow.run-id"
LABEL_MODEL_NAME = "io.mlrig.model.name"
LABEL_MODEL_VERSION = "io.mlrig.model.version"
LABEL_GIT_COMMIT = "io.mlrig.git.commit"
LABEL_GIT_DIRTY = "io.mlrig.git.dirty"
LABEL_EXP_NAME = "io.mlrig.exp.name"
LABEL_EXP_REF = "io.mlrig.exp.ref"

FoundBy = Literal["exp-ref", "run-file", "model-and-deps", "outs-and-deps", "commit-tag"]


class _Model(BaseModel):
    # built on first use: most importers (push, build, the pipeline's names) read only the
    # names above, and building these eight schemas was ~25 ms of every such command
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ImageRecord(_Model):
    digest: str = Field(description="manifest digest sha256:… (or the image ID when local only)")
    repository: str | None = Field(default=None, description="host/repository it was pushed to")
    reference: str | None = Field(default=None, description="host/repository@sha256:…")
    image_id: str | None = Field(default=None, description="config digest on the local engine")


class ModelRecord(_Model):
    name: str
    version: str
    aliases: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)


class RunRecord(_Model):
    id: str
    experiment_id: str | None = None
    experiment: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict, description="as MLflow returned them")
    recorded_by: str | None = Field(
        default=None, description="the MLflow user the run was logged as (its mlflow.user)"
    )
    repository_identity: str | None = Field(
        default=None, description="the repository's machine identity, repo-<project>"
    )
    recorded_by_repository_identity: bool | None = Field(
        default=None,
        description="whether recorded_by is repository_identity; None when either is unknown",
    )


class RestorePoint(_Model):
    """A git commit whose dvc.lock records exactly this run."""

    sha: str
    found_by: FoundBy
    ref: str | None = Field(default=None, description="the experiment ref holding sha, if any")


class CodeRecord(_Model):
    commit: str | None = Field(default=None, description="HEAD when the train stage ran")
    remote: str | None = None
    dirty: bool = False
    dirty_files: dict[str, str] = Field(default_factory=dict)
    exp_name: str | None = None
    exp_baseline: str | None = None
    exp_ref: str | None = None
    params_md5: str | None = None
    restore_point: RestorePoint | None = None
    restorable: bool = False
    reason: str | None = Field(default=None, description="why it is not restorable bit for bit")
    source_name: str | None = Field(
        default=None, description="MLflow's mlflow.source.name: the script or notebook that ran"
    )


class WindowsRecord(_Model):
    """The time windows a temporal repo's train run split its labels by (its
    mlrig.temporal.* tags): ISO times and durations as preprocess wrote them."""

    train_from: str | None = None
    train_to: str | None = None
    test_from: str | None = None
    test_to: str | None = None
    gap: str | None = None
    horizon: str | None = None
    ttl: str | None = None


class ComputeRecord(_Model):
    """Where a run trained when it was a remote retrain's task (its mlrig.compute.* tags)."""

    backend: Literal["local", "aws"]
    task: str = Field(pattern=r"^[A-Za-z0-9:/._-]{1,200}$", description="container id or ARN")
    cpu: int = Field(ge=1, le=65536, description="CPU units (1024 = 1 vCPU)")
    memory_mib: int = Field(ge=1, le=1048576)
    spot: Literal["requested", "false", "true"] = "false"
    image: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9:/._-]{1,300}@sha256:[0-9a-f]{64}$"
    )
    wall_seconds: float | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)


class DvcRemoteRecord(_Model):
    name: str
    url: str


class DataRecord(_Model):
    path: str
    md5: str
    role: Literal["dep", "out"]
    remote: DvcRemoteRecord | None = Field(
        default=None, description="the DVC remote holding it; None for files git holds"
    )
    source: Literal["run", "dvc.lock"] = Field(
        default="run",
        description="run: the run's own tags; dvc.lock: what the lock at the run's commit "
        "records (a run without mlrig's tags: nothing proves it read these)",
    )


class MissingLink(_Model):
    """A link of the chain a run or image does not record, and what would supply it."""

    link: str
    how: str


class ServingRecord(_Model):
    """One version an endpoint serves: its image by digest and its share of the traffic."""

    model: str
    version: str
    digest: str
    image: str = Field(description="host/repository@sha256:… the container runs")
    traffic: int = Field(description="percent of the endpoint's requests")
    since: datetime


class EndpointRecord(_Model):
    """The endpoint traced from (`mlrig trace endpoint:NAME`); the record follows the version
    taking the most traffic (`traced`), the others are listed."""

    name: str
    stack: str
    url: str | None = None
    public: bool = False
    serving: list[ServingRecord]
    traced: str = Field(description="the version the rest of the record follows")


class ProvenanceRecord(_Model):
    """From an endpoint, image, model version or run back to the workspace that made it."""

    ref: str = Field(description="what was traced, as given")
    endpoint: EndpointRecord | None = None
    images: list[ImageRecord] = Field(default_factory=list)
    model: ModelRecord | None = None
    run: RunRecord | None = Field(
        default=None,
        description="None only for an image with no mlrig labels that no model version's "
        "push names: nothing links it to a run (see missing)",
    )
    code: CodeRecord
    data: list[DataRecord] = Field(default_factory=list)
    windows: WindowsRecord | None = Field(default=None, description="a temporal run's split")
    compute: ComputeRecord | None = Field(
        default=None, description="where a remote retrain's task trained the run"
    )
    restore_command: str | None = None
    refused: list[str] = Field(
        default_factory=list,
        description="run tags and image labels mlrig did not act on, one line each, and why",
    )
    missing: list[MissingLink] = Field(
        default_factory=list,
        description="links nothing records (a run without mlrig's provenance tags), each with "
        "what would supply it; empty for a run the pipeline or mlrig.api.log_provenance tagged",
    )

    def summary(self) -> str:
        """One line: image <- model version <- run <- commit or experiment, restorable or not."""
        parts = []
        if self.endpoint:
            parts.append(f"endpoint {self.endpoint.name}")
        if self.images:
            parts.append(self.images[0].reference or self.images[0].digest)
        if self.model:
            parts.append(f"{self.model.name} v{self.model.version}")
        parts.append(f"run {self.run.id[:12]}" if self.run else "no run")
        point = self.code.restore_point
        if point:
            parts.append(f"{point.ref or 'commit'} {point.sha[:12]}")
        elif self.code.commit:
            parts.append(f"commit {self.code.commit[:12]}")
        tail = "restorable" if self.code.restorable else "not restorable"
        return " <- ".join(parts) + f" ({tail})"

    def the_run(self) -> RunRecord:
        """The run traced to; an image that names none is one line (nothing to follow)."""
        if self.run is None:
            from mlrig.errors import UsageError

            raise UsageError(
                f"{self.ref} names no MLflow run (no mlrig labels, no model version's push "
                "tags name its digest): there is nothing to restore or compare with",
                hint="`mlrig trace` shows what is known of it; rebuild it with `mlrig image build`",
            )
        return self.run

    def expected_hashes(self) -> dict[str, str]:
        """{path: md5} of every dep and out the run recorded (what a checkout must equal)."""
        return {d.path: d.md5 for d in self.data}
