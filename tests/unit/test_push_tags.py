"""The model version a push names is tagged only after the push was verified: a push whose
read-back fails (or any other push failure) leaves the version's tags as they were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters.mlflow_rest import ModelVersion
from mlrig.core import image_push_tags, serving_push
from mlrig.core import provenance as p
from mlrig.errors import RemoteError
from tests.helpers import TagWrites, sample

LABELS = {p.LABEL_MODEL_NAME: "bc", p.LABEL_MODEL_VERSION: "3"}
DIGEST = "sha256:" + "d" * 64


def test_tags_are_written_only_after_the_push_was_verified(
    mlrig_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rest = TagWrites()
    version = ModelVersion("bc", "3", "run-1", {p.MV_IMAGE_REFS: "old/models@sha256:0"})
    info = docker_adapter.ImageInfo("sha256:" + "a" * 64, 1, dict(LABELS))
    monkeypatch.setattr(docker_adapter, "image_info", lambda _ref: info)
    found = image_push_tags.Found(rest, version)  # type: ignore[arg-type]
    monkeypatch.setattr(image_push_tags, "look_up", lambda _outputs, _labels: found)

    def unverified(*_args: Any, **_kwargs: Any) -> serving_push.PushResult:
        raise RemoteError(
            f"127.0.0.1:5001/models:bc-v3 was pushed but the registry reports digest "
            f"sha256:{'e' * 64}, not {DIGEST}",
            hint="push again",
        )

    monkeypatch.setattr(serving_push, "push_to", unverified)
    with pytest.raises(RemoteError, match="reports digest"):
        serving_push.push("bc:3", sample())
    assert rest.written == []

    reference = f"127.0.0.1:5001/models@{DIGEST}"
    pushed = serving_push.PushResult(reference, DIGEST, ["bc-v3"], [], dict(LABELS))
    monkeypatch.setattr(serving_push, "push_to", lambda *_a, **_k: pushed)
    assert serving_push.push("bc:3", sample()) is pushed
    assert sorted(rest.written) == sorted(
        [
            ("bc", "3", p.MV_IMAGE_DIGEST, DIGEST),
            ("bc", "3", p.MV_IMAGE_REPOSITORY, "127.0.0.1:5001/models"),
            ("bc", "3", p.MV_IMAGE_REFS, f"old/models@sha256:0 {reference}"),
        ]
    )
