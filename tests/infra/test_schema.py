"""Every input key, nested ones too, is a field the provider knows, and required ones are set.

A misspelt key in a dict input is not an error in Python: the provider would drop it and the
resource would silently differ. This walks each planned input against pulumi-aws's own typed
argument classes (`<Resource>Args`, nested `...ArgsDict`).
"""

from __future__ import annotations

import inspect

import pulumi_aws as aws
import pytest

from tests.helpers import DOMAIN, make_plan, schema_check, schema_fields


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
        schema_check(
            module,
            res.inputs,
            schema_fields(module, args_cls, False),
            f"{res.type} {res.name}",
            problems,
        )
    assert problems == [], "\n".join(problems)


def test_the_check_catches_a_misspelt_nested_key() -> None:
    fields = schema_fields(aws.s3, aws.s3.BucketLifecycleConfigurationArgs, False)
    problems: list[str] = []
    schema_check(
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
