"""The model version a push names is tagged once the registry acknowledged the manifest
(through the engine: once it was read back), and a push that fails (its read-back, or
anything else) leaves the version's tags as they were: written ones are put back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters.mlflow_rest import ModelVersion
from mlrig.core.image import _push_tags as image_push_tags
from mlrig.core.image import push as serving_push
from mlrig.core.provenance import record as p
from mlrig.errors import RemoteError
from tests.helpers import TagWrites, sample

LABELS = {p.LABEL_MODEL_NAME: "bc", p.LABEL_MODEL_VERSION: "3"}
DIGEST = "sha256:" + "d" * 64


def test_a_push_that_fails_before_the_registry_acknowledged_it_writes_no_tag(
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


def test_tags_written_beside_a_read_back_that_fails_are_put_back(
    mlrig_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rest = TagWrites()
    old_refs = "old/models@sha256:0"
    version = ModelVersion("bc", "3", "run-1", {p.MV_IMAGE_REFS: old_refs})
    info = docker_adapter.ImageInfo("sha256:" + "a" * 64, 1, dict(LABELS))
    monkeypatch.setattr(docker_adapter, "image_info", lambda _ref: info)
    found = image_push_tags.Found(rest, version)  # type: ignore[arg-type]
    monkeypatch.setattr(image_push_tags, "look_up", lambda _outputs, _labels: found)
    reference = f"127.0.0.1:5001/models@{DIGEST}"

    def acknowledged_then_unverified(*_args: Any, **kwargs: Any) -> serving_push.PushResult:
        kwargs["stored"](reference, DIGEST, dict(LABELS))  # the registry took the manifest
        raise RemoteError(
            f"127.0.0.1:5001/models:bc-v3 was pushed but the registry reports digest "
            f"sha256:{'e' * 64}, not {DIGEST}",
            hint="push again",
        )

    monkeypatch.setattr(serving_push, "push_to", acknowledged_then_unverified)
    with pytest.raises(RemoteError, match="reports digest") as raised:
        serving_push.push("bc:3", sample())
    assert "tags" not in raised.value.message  # they were put back: nothing more to tell
    writes, restores = rest.written[:3], rest.written[3:]
    assert sorted(writes) == sorted(
        [
            ("bc", "3", p.MV_IMAGE_DIGEST, DIGEST),
            ("bc", "3", p.MV_IMAGE_REPOSITORY, "127.0.0.1:5001/models"),
            ("bc", "3", p.MV_IMAGE_REFS, f"{old_refs} {reference}"),
        ]
    )
    assert sorted(restores, key=str) == sorted(
        [
            ("bc", "3", p.MV_IMAGE_DIGEST, None),
            ("bc", "3", p.MV_IMAGE_REPOSITORY, None),
            ("bc", "3", p.MV_IMAGE_REFS, old_refs),
        ],
        key=str,
    )


def test_tags_that_cannot_be_put_back_are_named_in_the_one_error(
    mlrig_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Unreachable(TagWrites):
        def delete_model_version_tag(self, name: str, version: str, key: str) -> None:
            raise RemoteError("MLflow at http://127.0.0.1:5000 is unreachable")

    rest = Unreachable()
    version = ModelVersion("bc", "3", "run-1", {})
    info = docker_adapter.ImageInfo("sha256:" + "a" * 64, 1, dict(LABELS))
    monkeypatch.setattr(docker_adapter, "image_info", lambda _ref: info)
    found = image_push_tags.Found(rest, version)  # type: ignore[arg-type]
    monkeypatch.setattr(image_push_tags, "look_up", lambda _outputs, _labels: found)

    def acknowledged_then_unverified(*_args: Any, **kwargs: Any) -> serving_push.PushResult:
        kwargs["stored"](f"127.0.0.1:5001/models@{DIGEST}", DIGEST, dict(LABELS))
        raise RemoteError("127.0.0.1:5001/models:bc-v3 was pushed but the registry reports ...")

    monkeypatch.setattr(serving_push, "push_to", acknowledged_then_unverified)
    with pytest.raises(RemoteError) as raised:
        serving_push.push("bc:3", sample())
    message = raised.value.message
    assert message.startswith("127.0.0.1:5001/models:bc-v3 was pushed but the registry reports")
    assert "model version 3 of bc keeps the tags this push wrote" in message
    assert "unreachable" in message and "\n" not in message
