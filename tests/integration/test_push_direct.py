"""A new model version pushed through the registry API (its model layer, config and
manifest; the serving base pushed once): against the session stack's real registry, then
pulled by the engine and run, which only works when config, diff_ids and layers agree."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlrig.adapters.registry import RegistryClient
from mlrig.core.image import push as serving_push
from mlrig.core.image import run as image_run
from mlrig.core.oci import cache as image_cache
from mlrig.core.oci import direct as serving_push_direct
from mlrig.core.stack.local.stack import free_port
from mlrig.main import app
from tests.helpers import assembled_variant

pytestmark = pytest.mark.integration
runner = CliRunner()
DIRECT_MODEL = "bc-direct"  # the model `direct_versions` registers


def registry(env: dict) -> RegistryClient:
    return RegistryClient(
        f"http://{env['outputs'].registry.host}",
        env["env"]["MLRIG_REGISTRY_USERNAME"],
        env["env"]["MLRIG_REGISTRY_PASSWORD"],
    )


def manifest(client: RegistryClient, tag: str) -> dict[str, Any]:
    got = client.manifest("models", tag)
    assert got is not None, tag
    return dict(json.loads(got[0]))


def engine_pushes(seen: list[str]) -> list[str]:
    """Progress lines of pushes the engine made (the API path names the model layer)."""
    return [m for m in seen if m.startswith("pushing ") and "(the model layer" not in m]


def test_a_new_version_is_its_layer_config_and_manifest_and_runs_once_pulled(
    direct_versions: list[dict], image_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.adapters import docker as docker_adapter
    from mlrig.adapters.registry_client import RegistryClient as Client

    out, client = image_env["outputs"], registry(image_env)
    first, new = direct_versions[0], direct_versions[1]
    serving_push.push(first["built"].ref, out)  # the base goes there once, if it is not yet
    uploaded: list[int] = []
    upload = Client.upload_blob

    def counted(self: Client, repository: str, digest: str, data: bytes | Path) -> None:
        uploaded.append(data.stat().st_size if isinstance(data, Path) else len(data))
        upload(self, repository, digest, data)

    monkeypatch.setattr(Client, "upload_blob", counted)
    seen: list[str] = []
    built = new["built"]
    pushed = serving_push.push(built.ref, out, progress=seen.append)
    assert not engine_pushes(seen), seen
    tag = f"bc-direct-v{new['version']}"
    assert pushed.tags == [tag] and client.manifest_digest("models", tag) == pushed.digest
    # what moved is the model's layer and the config: about the model's size
    cached = image_cache.lookup(built.image_id)
    assert cached is not None
    assert sorted(uploaded) == sorted([cached.layer_size, len(cached.config)])
    assert sum(uploaded) < 100_000
    got = manifest(client, tag)
    base = manifest(client, serving_push_direct.base_tag(cached.base_id))
    assert got["config"]["digest"] == built.image_id
    assert got["layers"][:-1] == base["layers"]
    assert got["layers"][-1]["digest"] == cached.layer_digest
    # the engine forgets the image, pulls it from the registry and runs it
    remote = f"{out.registry.host}/models"
    api = docker_adapter.client().api
    api.remove_image(built.image_id, force=True)
    assert docker_adapter.image_info(built.image_id) is None
    docker_adapter.consume_stream(
        api.pull(
            remote,
            tag=tag,
            stream=True,
            decode=True,
            auth_config={
                "username": image_env["env"]["MLRIG_REGISTRY_USERNAME"],
                "password": image_env["env"]["MLRIG_REGISTRY_PASSWORD"],
            },
        ),
        "pulling",
    )
    api.tag(f"{remote}:{tag}", *built.ref.rsplit(":", 1))
    pulled = docker_adapter.image_info(f"{remote}:{tag}")
    assert pulled is not None and pulled.id == built.image_id
    # healthy (the serving health check answered), then its own input example answered
    running = image_run.run(f"{remote}:{tag}", port=free_port(), smoke=True)
    assert running.smoke_predictions == new["expected"] and running.seconds_to_healthy > 0
    again = serving_push.push(built.ref, out)
    assert (again.tags, again.unchanged, again.digest) == ([], [tag], pushed.digest)


def test_two_tags_are_stored_side_by_side_and_read_back(
    direct_versions: list[dict], image_env: dict, tmp_path: Path
) -> None:
    from mlrig.adapters import docker as docker_adapter

    labels = {
        "io.mlrig.model.name": "bc-direct-two",
        "io.mlrig.model.version": "1",
        "io.mlrig.git.commit": "0123456789abcdef",
    }
    ref = "mlrig-test/direct-two:1"
    image_id = assembled_variant(direct_versions[0]["built"].image_id, ref, labels, tmp_path)
    seen: list[str] = []
    try:
        pushed = serving_push.push(ref, image_env["outputs"], progress=seen.append)
        assert pushed.tags == ["bc-direct-two-v1", "bc-direct-two-v1-0123456"]
        assert not engine_pushes(seen), seen
        client = registry(image_env)
        assert {client.manifest_digest("models", t) for t in pushed.tags} == {pushed.digest}
        assert {manifest(client, t)["config"]["digest"] for t in pushed.tags} == {image_id}
        host = image_env["outputs"].registry.host
        tags = docker_adapter.client().api.inspect_image(ref)["RepoTags"]
        assert {f"{host}/models:{t}" for t in pushed.tags} <= set(tags)
    finally:
        for tag in docker_adapter.client().api.inspect_image(ref)["RepoTags"]:
            docker_adapter.client().api.remove_image(tag, noprune=True)


def test_a_taken_tag_is_a_conflict_and_nothing_is_tagged(
    direct_versions: list[dict], image_env: dict, tmp_path: Path
) -> None:
    from mlrig.adapters import docker as docker_adapter

    first = direct_versions[0]
    serving_push.push(first["built"].ref, image_env["outputs"])
    tag = f"bc-direct-v{first['version']}"
    before = registry(image_env).manifest_digest("models", tag)
    labels = {**first["built"].provenance.labels("0", ""), "io.mlrig.test.other": "1"}
    ref = "mlrig-test/direct-conflict:1"
    assembled_variant(first["built"].image_id, ref, labels, tmp_path)
    try:
        result = runner.invoke(app, ["image", "push", "--stack", "local", ref])
        assert result.exit_code == 7, result.output
        errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "already exists with a different image" in errors[0]
        assert "Traceback" not in result.output
        assert registry(image_env).manifest_digest("models", tag) == before
        assert docker_adapter.client().api.inspect_image(ref)["RepoTags"] == [ref]
    finally:
        docker_adapter.client().api.remove_image(ref, noprune=True)


def test_an_image_not_in_the_cache_is_pushed_by_the_engine(
    direct_versions: list[dict], image_env: dict
) -> None:
    built = direct_versions[2]["built"]
    shutil.rmtree(image_cache.root() / "images" / built.image_id.removeprefix("sha256:"))
    assert image_cache.lookup(built.image_id) is None
    seen: list[str] = []
    pushed = serving_push.push(built.ref, image_env["outputs"], progress=seen.append)
    assert engine_pushes(seen) == [f"pushing {image_env['outputs'].registry_url}:{pushed.tags[0]}"]
    client = registry(image_env)
    assert client.manifest_digest("models", pushed.tags[0]) == pushed.digest
    assert manifest(client, pushed.tags[0])["config"]["digest"] == built.image_id


def test_a_reference_retagged_after_its_build_pushes_the_engines_image(
    direct_versions: list[dict], image_env: dict, tmp_path: Path
) -> None:
    from mlrig.adapters import docker as docker_adapter

    model_of, api = direct_versions[0]["built"].image_id, docker_adapter.client().api
    ref, other = "mlrig-test/direct-moved:1", "mlrig-test/direct-moved:other"
    labels = {"io.mlrig.model.name": "bc-direct-moved", "io.mlrig.model.version": "1"}
    built = assembled_variant(model_of, ref, labels, tmp_path / "built")
    moved_labels = {**labels, "io.mlrig.model.version": "2"}
    moved = assembled_variant(model_of, other, moved_labels, tmp_path / "moved")
    api.tag(other, *ref.rsplit(":", 1))  # the reference now names another image
    hint = image_cache.by_ref(ref)
    assert hint is not None and hint.image_id == built != moved
    seen: list[str] = []
    try:
        pushed = serving_push.push(ref, image_env["outputs"], progress=seen.append)
        assert pushed.tags == ["bc-direct-moved-v2"], seen
        assert any(m.startswith(f"the engine's image is not {built[7:19]}") for m in seen), seen
        client = registry(image_env)
        assert manifest(client, "bc-direct-moved-v2")["config"]["digest"] == moved
        assert client.manifest_digest("models", "bc-direct-moved-v1") is None
    finally:
        for tag in api.inspect_image(moved)["RepoTags"]:
            api.remove_image(tag, noprune=True)
        api.remove_image(built, noprune=True)  # untagged by the retag


def test_a_remembered_base_is_not_read_again_and_a_stale_one_is_read_once_more(
    direct_versions: list[dict], image_env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.adapters import docker as docker_adapter
    from mlrig.adapters.registry_client import RegistryClient as Client

    out, first = image_env["outputs"], direct_versions[0]["built"]
    serving_push.push(first.ref, out)  # the base is there, and its manifest remembered
    cached = image_cache.lookup(first.image_id)
    assert cached is not None
    remote, base = f"{out.registry.host}/models", serving_push_direct.base_tag(cached.base_id)
    remembered = image_cache.base_manifest(cached.base_id, remote)
    assert remembered is not None
    assert json.loads(remembered[0]) == manifest(registry(image_env), base)
    read: list[str] = []
    read_manifest = Client.manifest

    def counted(self: Client, repository: str, reference: str) -> Any:
        read.append(reference)
        return read_manifest(self, repository, reference)

    monkeypatch.setattr(Client, "manifest", counted)
    refs = ["mlrig-test/direct-remembered:1", "mlrig-test/direct-remembered:2"]
    for i, ref in enumerate(refs):
        labels = {"io.mlrig.model.name": "bc-direct-remembered", "io.mlrig.model.version": str(i)}
        assembled_variant(first.image_id, ref, labels, tmp_path / str(i))
    try:
        pushed = serving_push.push(refs[0], out)
        assert base not in read, read  # only the new tag's read-back
        assert (
            manifest(registry(image_env), pushed.tags[0])["layers"][:-1]
            == json.loads(remembered[0])["layers"]
        )
        # a registry that lost the base's layers since: what was remembered names a blob
        # it does not have, so it refuses the manifest; the push reads the base again
        doc = json.loads(remembered[0])
        doc["layers"][0]["digest"] = "sha256:" + "0" * 64
        image_cache.remember_base_manifest(
            cached.base_id, remote, json.dumps(doc).encode(), remembered[1]
        )
        read.clear()
        seen: list[str] = []
        again = serving_push.push(refs[1], out, progress=seen.append)
        assert base in read, read
        assert any("no longer holds the serving base's layers" in m for m in seen), seen
        assert not engine_pushes(seen), seen
        got = manifest(registry(image_env), again.tags[0])
        assert got["layers"][:-1] == json.loads(remembered[0])["layers"]
        assert image_cache.base_manifest(cached.base_id, remote) == remembered
    finally:
        api = docker_adapter.client().api
        for ref in refs:
            for tag in api.inspect_image(ref)["RepoTags"]:
                api.remove_image(tag, noprune=True)


def test_a_read_back_that_fails_leaves_the_model_versions_tags_as_they_were(
    image_env: dict, direct_versions: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.adapters import docker as docker_adapter
    from mlrig.adapters.mlflow_rest import MlflowRest
    from mlrig.core.provenance import record as p
    from mlrig.errors import RemoteError
    from tests.helpers import register_model

    version, _ = register_model(DIRECT_MODEL, 0.7)
    rest = MlflowRest.from_env(dict(os.environ))
    rest.set_model_version_tag(DIRECT_MODEL, version, p.MV_IMAGE_REFS, "old/models@sha256:0")
    before = rest.model_version(DIRECT_MODEL, version).tags
    ref = f"mlrig-test/direct-unverified:{version}"
    labels = {p.LABEL_MODEL_NAME: DIRECT_MODEL, p.LABEL_MODEL_VERSION: version}
    assembled_variant(direct_versions[0]["built"].image_id, ref, labels, tmp_path)
    real_verified = serving_push_direct.verified
    checked: list[str] = []

    def unverified(client: Any, repository: str, tag: str, digest: str, remote: str) -> Any:
        real_verified(client, repository, tag, digest, remote)
        checked.append(tag)
        # the tags were written meanwhile; now the read-back counts as failed
        assert rest.model_version(DIRECT_MODEL, version).tags.get(p.MV_IMAGE_DIGEST) == digest
        raise RemoteError(f"{remote}:{tag} was pushed but the registry reports digest x")

    monkeypatch.setattr(serving_push_direct, "verified", unverified)
    try:
        result = runner.invoke(app, ["image", "push", "--stack", "local", ref])
        assert result.exit_code != 0, result.output
        errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "reports digest x" in errors[0], result.output
        assert "tags" not in errors[0] and "Traceback" not in result.output
        assert checked == [f"{DIRECT_MODEL}-v{version}"]
        assert rest.model_version(DIRECT_MODEL, version).tags == before
        assert docker_adapter.client().api.inspect_image(ref)["RepoTags"] == [ref]
    finally:
        docker_adapter.client().api.remove_image(ref, noprune=True)
