"""The demo's image push on a re-run: a version an earlier run pushed is read back, not
pushed twice (the registry's tags are immutable and a rebuild is not byte-identical)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlrig.core.demo import demo
from mlrig.core.demo._context import DemoContext
from mlrig.errors import Conflict

DIGEST = "sha256:" + "b" * 64


def _ctx(tmp_path: Path) -> DemoContext:
    ctx = DemoContext(stack="local", workdir=tmp_path, log_file=tmp_path / "demo.log")
    ctx.facts.update(model="models:/demo_model/4 (roc_auc=0.99)", image="mlrig/demo:v4")
    return ctx


def _patch(monkeypatch: pytest.MonkeyPatch, push: Any, seen: list[str]) -> None:
    from mlrig import contract
    from mlrig.core.deploy import endpoints
    from mlrig.core.image import push as serving_push

    monkeypatch.setattr(contract, "load", lambda _stack: object())
    monkeypatch.setattr(serving_push, "push", push)
    monkeypatch.setattr(endpoints.Site, "open", classmethod(lambda _cls, _stack: "site"))

    def resolve(site: Any, ref: str, *_a: Any) -> Any:
        seen.append(ref)
        return endpoints.Target("demo_model", "4", DIGEST, f"127.0.0.1:5000/models@{DIGEST}")

    monkeypatch.setattr(endpoints, "resolve", resolve)


def test_a_version_an_earlier_run_pushed_is_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*_a: Any, **_k: Any) -> Any:
        raise Conflict("127.0.0.1:5000/models:demo_model-v4 already exists with a different image")

    seen: list[str] = []
    _patch(monkeypatch, refused, seen)
    ctx = _ctx(tmp_path)
    line = demo._image_push(ctx)
    assert seen == ["models:/demo_model/4"]  # the version the best-model step chose
    assert line == f"127.0.0.1:5000/models@{DIGEST} (pushed by an earlier run; verified)"
    assert ctx.facts["pushed"] == f"127.0.0.1:5000/models@{DIGEST}"
    assert ctx.facts["digest"] == DIGEST


def test_a_first_push_is_reported_as_pushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.core.oci.steps import PushResult

    ref = f"127.0.0.1:5000/models@{DIGEST}"
    seen: list[str] = []
    _patch(monkeypatch, lambda *_a, **_k: PushResult(ref, DIGEST, ["demo_model-v4"]), seen)
    ctx = _ctx(tmp_path)
    assert demo._image_push(ctx) == f"{ref} (verified)"
    assert seen == []  # nothing read back: this run pushed it
