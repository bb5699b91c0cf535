"""Options for the children of a sub-component split out of a larger component.

A child's URN spells its parent chain. Children moved under a new sub-component carry an
alias to the component that created them before the split, so existing stacks update them
in place instead of replacing them.
"""

from __future__ import annotations

import pulumi


def adopted_children(
    component: pulumi.Resource, opts: pulumi.ResourceOptions | None
) -> pulumi.ResourceOptions:
    """`parent=component`, aliased to the component's own parent (their parent until the split)."""
    former = opts.parent if opts is not None else None
    aliases = [pulumi.Alias(parent=former)] if former is not None else None
    return pulumi.ResourceOptions(parent=component, aliases=aliases)
