"""Every input key, nested ones too, is a field the provider knows, and required ones are set.

A misspelt key in a dict input is not an error in Python: the provider would drop it and the
resource would silently differ. This walks each planned input against pulumi-aws's own typed
argument classes (`<Resource>Args`, nested `...ArgsDict`).
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any

import pulumi_aws as aws
import pytest

from tests.helpers import DOMAIN, make_plan

_NESTED = re.compile(r"ForwardRef\('(\w+?)Args(?:Dict)?'\)")


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _nested(module: Any, annotation: Any) -> type | None:
    match = _NESTED.search(str(annotation))
    return getattr(module, f"{match.group(1)}ArgsDict", None) if match else None


def _fields(module: Any, cls: type, typed_dict: bool) -> dict[str, tuple[Any, bool]]:
    """camelCase field -> (annotation, required)."""
    if typed_dict:
        hints = cls.__annotations__
        return {
            camel(k): (v, typing.get_origin(v) is not typing.NotRequired) for k, v in hints.items()
        }
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    return {
        camel(k): (p.annotation, p.default is inspect.Parameter.empty)
        for k, p in params.items()
        if not k.startswith("_") and k != "self"
    }


def _check(
    module: Any, value: Any, fields: dict[str, tuple[Any, bool]], path: str, problems: list[str]
) -> None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check(module, item, fields, f"{path}[{i}]", problems)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{path}.{key}: not a field (known: {sorted(fields)})")
            continue
        nested = _nested(module, fields[key][0])
        if nested is not None:
            _check(module, item, _fields(module, nested, True), f"{path}.{key}", problems)
    missing = [k for k, (_, required) in fields.items() if required and k not in value]
    if missing:
        problems.append(f"{path}: required {missing} not set")


@pytest.mark.parametrize(
    ("profile", "domain"), [("small", None), ("production", DOMAIN), ("small", DOMAIN)]
)
def test_inputs_match_the_provider_types(profile: str, domain: str | None) -> None:
    problems: list[str] = []
    for res in make_plan(
        profile, domain, access_log_bucket="logs", enhanced_scanning=True
    ).resources:
        _, module_path, name = res.type.split(":")
        module = getattr(aws, module_path.split("/")[0])
        # A nested type may own the name `<Name>Args`; the resource's is then `<Name>InitArgs`.
        own = inspect.getmodule(getattr(module, name))
        args_cls = getattr(own, f"{name}InitArgs", None) or getattr(own, f"{name}Args")
        _check(
            module, res.inputs, _fields(module, args_cls, False), f"{res.type} {res.name}", problems
        )
    assert problems == [], "\n".join(problems)


def test_the_check_catches_a_misspelt_nested_key() -> None:
    fields = _fields(aws.s3, aws.s3.BucketLifecycleConfigurationArgs, False)
    problems: list[str] = []
    _check(
        aws.s3,
        {
            "bucket": "b",
            "rules": [
                {
                    "id": "r",
                    "status": "Enabled",
                    "noncurrentVersionExpiration": {"noncurrentDay": 30},
                }
            ],
        },
        fields,
        "lifecycle",
        problems,
    )
    assert "noncurrentDay: not a field" in problems[0]
    assert "required ['noncurrentDays'] not set" in problems[1]
