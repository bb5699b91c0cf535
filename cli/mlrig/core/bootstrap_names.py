"""The project slug `mlrig init` gives a repo, and the other names a user types at init:
each rule checked on its own, so an error says which one failed."""

from __future__ import annotations

import functools
import keyword
import re
import sys

from mlrig.core import aws_inputs
from mlrig.errors import UsageError

NAME_MIN, NAME_MAX = 2, 64
_NAME_HINT = "use lowercase letters, digits and single underscores, starting with a letter"
_ECR_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_DVC_BAD = set(",#:@/\\")
# The generated repo runs its stages with PYTHONPATH=src, so a package named like one of
# these would be imported instead of the real module and `dvc repro` would fail on it.
PIPELINE_IMPORTS = frozenset(
    {
        "mlflow", "sklearn", "pandas", "numpy", "scipy", "joblib", "dvc", "yaml", "mlrig",
        "pytest", "pyarrow", "requests", "sqlalchemy", "pydantic", "cloudpickle", "boto3",
        "botocore", "s3fs", "fsspec", "git", "click", "typer", "rich", "flask", "fastapi",
        "uvicorn", "packaging", "threadpoolctl", "docker", "matplotlib", "skops",
    }
)  # fmt: skip


def validate_project_name(name: str) -> str:
    """The slug becomes a Python package, an MLflow model, an ECR repository and appears in
    DVC stage commands: check each rule and say which one failed."""
    if not NAME_MIN <= len(name) <= NAME_MAX:
        raise UsageError(
            f"project name {name!r} has {len(name)} characters, it needs {NAME_MIN}-{NAME_MAX}",
            hint=_NAME_HINT,
        )
    if not _ECR_RE.match(name):
        raise UsageError(
            f"project name {name!r} is not a valid ECR repository name "
            "(lowercase letters and digits, separated by single . _ or -)",
            hint=_NAME_HINT,
        )
    if set(name) & _DVC_BAD:
        raise UsageError(
            f"project name {name!r} contains a character DVC forbids in stage "
            f"names ({' '.join(sorted(_DVC_BAD))})",
            hint=_NAME_HINT,
        )
    if not name.isidentifier() or keyword.iskeyword(name):
        suggestion = re.sub(r"[^a-z0-9]+", "_", name).strip("_")
        raise UsageError(
            f"project name {name!r} is not a valid Python package name "
            "(no dashes or dots, no leading digit, not a keyword)",
            hint=f"try --name {suggestion}"
            if suggestion.isidentifier() and not keyword.iskeyword(suggestion)
            else _NAME_HINT,
        )
    if name in sys.stdlib_module_names:
        raise UsageError(
            f"project name {name!r} would shadow the standard library module "
            f"{name!r} as a Python package",
            hint=f"try --name {name}_model",
        )
    if name in PIPELINE_IMPORTS or name in _installed_modules():
        who = "the generated pipeline" if name in PIPELINE_IMPORTS else "the pipeline's tools"
        raise UsageError(
            f"project name {name!r} would shadow the Python module {name!r} that {who} "
            "import (`dvc repro` would fail on it)",
            hint=f"try --name {name}_model",
        )
    return name


@functools.cache
def _installed_modules() -> frozenset[str]:
    """Top-level module names of every installed distribution: what the pipeline's
    dependencies may import, beyond the ones it imports itself."""
    from importlib.metadata import packages_distributions

    return frozenset(packages_distributions())


def derive_project_name(directory: str) -> str:
    """`My-Model.v2` -> `my_model_v2`; the result is validated like an explicit --name."""
    slug = re.sub(r"[^a-z0-9]+", "_", directory.lower()).strip("_")
    try:
        return validate_project_name(slug)
    except UsageError as exc:
        raise UsageError(
            f"cannot derive a project name from directory {directory!r}: {exc.message}",
            hint="pass --name NAME",
        ) from exc


def validate_github_repo(value: str) -> str:
    """`owner/repo` (the CI workflow's OIDC subject), or empty when not known yet; the same
    rule as the AWS stack's CI role."""
    if value:
        aws_inputs.check_github_repo(value)
    return value
