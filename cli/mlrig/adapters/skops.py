"""skops, the safe format MLflow saves scikit-learn models in: which types a model file holds,
read from its schema without constructing anything (skops installs with MLflow)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrig.errors import UsageError


@dataclass(frozen=True)
class FileTypes:
    every: list[str] | None  # every type the file's audit checks (None: this skops cannot say)
    untrusted: list[str]  # those skops does not trust by default


def file_types(path: Path) -> FileTypes:
    """The types a skops file's load would check: all of them (each node of the file's tree
    with its trust cleared, so skops' own audit names every type it checks) and those outside
    skops' default trust. Reading the tree constructs no object of the file."""
    import zipfile

    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise UsageError(
            f"the model's file {path.name} is not a readable skops file: {exc}",
            hint="re-log the model with mlflow.sklearn.log_model",
        ) from None
    try:  # skops' tree and audit are not public API: without them, no exact list
        from skops.io._audit import Node, get_tree
        from skops.io._utils import read_schema
    except ImportError:
        return FileTypes(None, untrusted)
    with zipfile.ZipFile(path) as zf:
        schema, context = read_schema(zf)
        tree = get_tree(schema, context, trusted=None)
    seen: set[int] = set()

    def distrust(node: Any) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        node.trusted = []
        for child in node.children.values():
            nested = (
                child
                if isinstance(child, list)
                else (list(child.values()) if isinstance(child, dict) else [child])
            )
            for item in nested:
                if isinstance(item, Node):
                    distrust(item)

    distrust(tree)
    return FileTypes(sorted(tree.get_unsafe_set()), untrusted)
