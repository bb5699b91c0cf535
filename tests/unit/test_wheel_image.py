"""core/image/wheel_image: the one build of an image holding mlrig's wheel (the trainer
service's, a repository's trainer image). The engine, the wheel build and the base image's
resolution are replaced by recorders; the images themselves are the integration tests'."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from mlrig.core.image import wheel_image


def _context(root: Path) -> Path:
    """A context whose copy's sorted paths are not its paths sorted as strings ('-' < '/')."""
    for name, text in {
        "Dockerfile": "FROM base\n",
        "a/b": "nested",
        "a-c": "beside",
        "a/d/e": "deeper",
        "requirements.txt": "replaced",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_listing_is_what_the_copy_holds_in_the_copys_order(tmp_path: Path) -> None:
    context = _context(tmp_path / "ctx")
    files = {"requirements.txt": b"pins\n", "extra.txt": b"x"}
    copy = tmp_path / "copy"
    shutil.copytree(context, copy)
    for name, data in files.items():
        (copy / name).write_bytes(data)
    expected = [
        (p.relative_to(copy).as_posix(), p.read_bytes())
        for p in sorted(p for p in copy.rglob("*") if p.is_file())
    ]
    listed = wheel_image.context_files(context, files)
    assert listed == expected
    assert [name for name, _ in listed] == [
        "Dockerfile",
        "a/b",
        "a/d/e",
        "a-c",
        "extra.txt",
        "requirements.txt",
    ]
    assert dict(listed)["requirements.txt"] == b"pins\n"  # the caller's bytes win


def test_the_build_resolves_the_base_first_then_builds_the_copy_with_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.image import build as image_build
    from mlrig.core.shared import wheel

    context = _context(tmp_path / "ctx")
    steps: list[str] = []
    seen: dict[str, Any] = {}

    def resolve(base_image: str | None, _progress: Any) -> str:
        steps.append(f"resolve {base_image}")
        return "mlrig/base:resolved"

    def build_wheel(out: Path) -> Path:
        steps.append("wheel")
        out.mkdir()
        (out / "mlrig-0-py3-none-any.whl").write_bytes(b"wheel")
        return out / "mlrig-0-py3-none-any.whl"

    def build_image(ctx: Path, **kwargs: Any) -> str:
        steps.append("image")
        seen.update(kwargs)
        seen["files"] = {
            p.relative_to(ctx).as_posix(): p.read_bytes() for p in ctx.rglob("*") if p.is_file()
        }
        return "sha256:1"

    monkeypatch.setattr(image_build, "resolve_base_image", resolve)
    monkeypatch.setattr(wheel, "build_wheel", build_wheel)
    monkeypatch.setattr(docker_adapter, "build_image", build_image)
    said: list[str] = []
    wheel_image.build(
        context,
        {"requirements.txt": b"pins\n"},
        tag="mlrig/x:1",
        labels={"k": "v"},
        base_image="mine:1",
        progress=said.append,
    )
    assert steps == ["resolve mine:1", "wheel", "image"]
    assert said == ["building mlrig's wheel", "building mlrig/x:1"]
    assert seen["tag"] == "mlrig/x:1" and seen["labels"] == {"k": "v"}
    assert seen["buildargs"] == {"BASE_IMAGE": "mlrig/base:resolved"}
    listed = dict(wheel_image.context_files(context, {"requirements.txt": b"pins\n"}))
    assert seen["files"] == {**listed, "wheel/mlrig-0-py3-none-any.whl": b"wheel"}
    assert (context / "requirements.txt").read_text() == "replaced"  # the source is untouched


def test_the_trainer_tag_hashes_the_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer service's tag is a hash of the build's context as the helper lists it:
    a changed pin moves it, the same inputs give it again."""
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.shared import wheel
    from mlrig.core.trainer import _image as trainer_image

    monkeypatch.setattr(wheel, "source_digest", lambda: "src")
    monkeypatch.setattr(docker_adapter, "image_exists", lambda _ref: True)  # no build
    pins = ["a==1"]
    monkeypatch.setattr(trainer_image, "requirements", lambda: pins)
    first = trainer_image.build()
    assert first == trainer_image.build()
    digest = hashlib.sha256(b"src")
    for name, data in wheel_image.context_files(
        trainer_image.context_dir(), {"requirements.txt": b"a==1\n"}
    ):
        digest.update(name.encode() + data)
    assert first.endswith(f"-{digest.hexdigest()[:12]}")
    pins[0] = "a==2"
    assert trainer_image.build() != first
