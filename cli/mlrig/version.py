"""mlrig's versions: its own (from git, by setuptools-scm, recorded in the installed
distribution's metadata), the pipeline template's (pipeline/VERSION) and the stack contract's
schema version (mlrig.contract.SCHEMA_VERSION). docs/releasing.md says when each one moves."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

# no installed distribution: mlrig imported from a bare source tree (PYTHONPATH=cli)
UNKNOWN = "0.0.0+unknown"


def _installed_version() -> str:
    try:
        return _distribution_version("mlrig")
    except PackageNotFoundError:
        return UNKNOWN


__version__ = _installed_version()


def is_release(version: str) -> bool:
    """A version a package index can hold: no .devN and no +local part (what setuptools-scm
    gives a commit after the last tag, or a tree with uncommitted changes)."""
    return ".dev" not in version and "+" not in version


def describe() -> str:
    """One line: mlrig's version, then the template's and the stack contract's."""
    from mlrig import assets, contract

    template = assets.pipeline_template() / "VERSION"
    template_version = template.read_text().strip() if template.is_file() else "unknown"
    return (
        f"mlrig {__version__} (template {template_version}, "
        f"stack contract schema {contract.SCHEMA_VERSION})"
    )
