"""The seam between the two kinds of endpoint: which module serves a stack's endpoints, the
local stack's (`endpoints`: nginx and containers) or an AWS stack's (`aws`: an endpoint
Pulumi stack per endpoint). Both offer the same verbs with the same arguments."""

from __future__ import annotations

from types import ModuleType


def for_stack(stack: str | None) -> ModuleType:
    from mlrig.core.deploy import aws

    if aws.is_aws(stack):
        return aws
    from mlrig.core.deploy import endpoints

    return endpoints
