"""How the model is loaded fast without trusting more: skops with no default trust when the
build recorded the model file's exact types (`skops_types` in mlrig-serving.json)."""

from __future__ import annotations

import sys
import types

SKOPS_DEFAULTS = "skops.io._trusted_types"


class _NoDefaults(types.ModuleType):
    """skops' default trust, empty: each of its lists of trusted type names is []."""

    def __getattr__(self, name: str) -> list[str]:
        if name.isupper() and name.endswith("_NAMES"):
            return []
        raise AttributeError(name)


def skops_defaults_off() -> None:
    """Load skops with no default trust, before anything imports it: the build recorded the
    model file's every type (`skops_types`, checked against skops' defaults and the model's
    own list there), so the load trusts exactly those. skops builds its default lists when
    imported, by importing every scikit-learn estimator (0.15-0.35 CPU-s of each start); its other
    node types keep their own built-in trust (dict, list, ndarray ...)."""
    if "skops.io" not in sys.modules:
        sys.modules.setdefault(SKOPS_DEFAULTS, _NoDefaults(SKOPS_DEFAULTS))
