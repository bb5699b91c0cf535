"""The stack's tags, set once: a stack transformation adds them to every taggable resource.

A transformation rather than the provider's `default_tags`: the tags stay in each resource's
own inputs, so existing stacks see no diff, and `mlrig stack plan` (Pulumi mocks, which
never run a provider) shows and tests them. The newer `register_resource_transform` runs in
the engine, which the mocks do not have; the SDK-side transformation runs in both.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi


def merged(defaults: Mapping[str, str], own: pulumi.Input[Mapping[str, str]] | None) -> object:
    """The stack's tags under a resource's own (`Name`, `tier`), which win on a clash."""
    if own is None or isinstance(own, Mapping):
        return {**defaults, **(own or {})}
    if not isinstance(own, pulumi.Output):
        own = pulumi.Output.from_input(own)
    return own.apply(lambda tags: {**defaults, **(tags or {})})


def default_tags(tags: Mapping[str, str]) -> pulumi.ResourceTransformation:
    """A transformation tagging every resource whose provider class takes `tags`."""
    defaults = dict(tags)

    def transform(
        args: pulumi.ResourceTransformationArgs,
    ) -> pulumi.ResourceTransformationResult | None:
        # Provider classes put every declared input in props, unset ones as None: a `tags`
        # key means the resource is taggable. Components have no such key.
        if not isinstance(args.props, Mapping) or "tags" not in args.props:
            return None
        props = {**args.props, "tags": merged(defaults, args.props["tags"])}
        return pulumi.ResourceTransformationResult(props, args.opts)

    return transform


def tag_everything(tags: Mapping[str, str]) -> None:
    """Tag every resource created after this call in the current stack."""
    pulumi.runtime.register_stack_transformation(default_tags(tags))
