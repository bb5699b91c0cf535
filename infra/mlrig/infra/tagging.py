"""The stack's tags, set once: a transformation that every component hands to its children.

`program.build` passes `tagged(cfg.tags)` to each top-level component; a child inherits its
parent's transformations, so every taggable resource below gets the tags without naming
them. A transformation rather than the provider's `default_tags`: the tags stay in each
resource's own inputs, so existing stacks see no diff, and `mlrig stack plan` (Pulumi mocks,
which never run a provider) shows and tests them. Not a stack-wide transformation: that
lives on the root stack resource, which outlives one run of the program in a process that
plans several stacks, so an earlier stack's tags would leak into the next. The newer
engine-side transforms are not run by the mocks at all.
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


def tagged(tags: Mapping[str, str]) -> pulumi.ResourceOptions:
    """Options for a top-level component: it and everything below it carry these tags."""
    return pulumi.ResourceOptions(transformations=[default_tags(tags)])
