"""The project slug `mlrig init` gives a repo, and the other names a user types at init:
each rule checked on its own, so an error says which one failed."""

from __future__ import annotations

import functools
import keyword
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlrig.core.shared import aws_inputs
from mlrig.errors import ConfigError, UsageError
from mlrig.paths import ANSWERS_FILE

NAME_MIN, NAME_MAX = 2, 64
MACHINE_PREFIX = "repo-"  # machine identities (one per repository) are named repo-<project>


def machine_user(project: str) -> str:
    """`demo_model` -> `repo-demo-model` (contract A): the MLflow user a repository's
    machine identity logs in as."""
    return MACHINE_PREFIX + project.replace("_", "-")


_NAME_HINT = "use lowercase letters, digits and single underscores, starting with a letter"
_ECR_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_DVC_BAD = set(",#:@/\\")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # a line break ends a YAML value or a shell line
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
    _check_slug(name)
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


def _check_slug(name: str) -> None:
    """The rules of the slug's form: what makes it safe as a path, a package and a name."""
    if not NAME_MIN <= len(name) <= NAME_MAX:
        raise UsageError(
            f"project name {name!r} has {len(name)} characters, it needs {NAME_MIN}-{NAME_MAX}",
            hint=_NAME_HINT,
        )
    if not _ECR_RE.fullmatch(name):
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
    rule as the AWS stack's CI role, and no line break (its rule's `$` lets a final one by)."""
    if value and _CONTROL.search(value):
        raise UsageError(
            f"invalid --github-repo {value!r}: it has a control character",
            hint="use owner/repo, e.g. acme/churn-model",
        )
    if value:
        aws_inputs.check_github_repo(value)
    return value


# -- the template's answers ------------------------------------------------------------------
# Each answer lands in a file path (project_name), YAML, the CI workflow's shell steps or a
# Python/TOML string: only values safe in all of them pass, whether mlrig just chose them or
# reads them back from a repository's .copier-answers.yml (a file anyone may have edited).
_URL = r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?"
_ANSWER_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "stack_kind": (re.compile(r"local|aws"), "local or aws"),
    "temporal": (re.compile(r"true|false"), "true or false"),
    "snapshots": (re.compile(r"table|partitioned"), "table or partitioned"),
    "aws_region": (re.compile(r"(?:[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-[0-9]+)?"), "an AWS region"),
    "mlflow_tracking_uri": (re.compile(f"(?:{_URL})?"), "an http(s) URL"),
    "mlflow_oidc_audience": (
        re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._:/-]{0,199})?"),
        "an audience such as mlrig:<stack> (letters, digits and . _ : / -)",
    ),
    "registry_url": (
        re.compile(r"(?:[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[a-z0-9._/-]+)?)?"),
        "a registry repository such as HOST[:PORT]/NAME",
    ),
    "ci_role_arn": (
        re.compile(r"(?:arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512})?"),
        "an IAM role ARN",
    ),
    "python_version": (re.compile(r"3\.[0-9]{1,2}"), "a Python version such as 3.11"),
    # the mlrig that generated (or last updated) the repository, which its CI installs: a
    # PEP 440 version as setuptools-scm makes them (a release, or X.Y.Z.devN+gHASH[.dDATE])
    "mlrig_version": (
        re.compile(
            r"(?:[0-9]{1,4}(?:\.[0-9]{1,6}){1,3}(?:(?:a|b|rc)[0-9]{1,4})?(?:\.post[0-9]{1,6})?"
            r"(?:\.dev[0-9]{1,6})?(?:\+[a-z0-9]{1,40}(?:\.[a-z0-9]{1,40}){0,3})?)?"
        ),
        "a version of mlrig such as 1.2.3",
    ),
    # the sha256 of that version's files on the index mlrig init asked (`--require-hashes` in CI)
    "mlrig_sha256": (
        re.compile(r"(?:[0-9a-f]{64}(?: [0-9a-f]{64}){0,31})?"),
        "sha256 hashes (64 lowercase hex digits) separated by single spaces",
    ),
    # a docstring, a TOML string and a README line: one line, no quote, backslash or backtick
    "description": (re.compile(r"[^\"\\`\x00-\x1f\x7f]{0,200}"), "one line of plain text"),
    # where the admin password lived, in repositories made before machine identities
    "mlflow_password_secret_id": (re.compile(r"[A-Za-z0-9:/_+=.@-]{0,512}"), "a secret ARN"),
    "mlflow_password_secret_key": (re.compile(r"[A-Za-z0-9_.-]{0,128}"), "a JSON key"),
}
TEMPLATE_ANSWERS = frozenset(
    {"project_name", "stack", "github_repo", "mlflow_username", *_ANSWER_RULES}
)


def check_template_answers(
    answers: Mapping[str, object], required: tuple[str, ...] = ("project_name", "stack")
) -> dict[str, str]:
    """The answers checked, each by its rule (`required` must be there, every other one is
    optional); raises UsageError naming the first answer that breaks its rule."""
    from mlrig import contract

    unknown = sorted(set(answers) - TEMPLATE_ANSWERS)
    if unknown:
        raise UsageError(f"unknown answer {unknown[0]!r}", hint="the template has no such question")
    for key in required:
        if key not in answers:
            raise UsageError(f"the answer {key} is missing", hint="every repository has one")
    checked: dict[str, str] = {}
    for key, value in answers.items():
        if not isinstance(value, str):
            raise UsageError(f"the answer {key} is not a string ({type(value).__name__})")
        if _CONTROL.search(value):  # a line break would end a YAML value or a shell line
            raise UsageError(f"the answer {key} {value!r} has a control character")
        checked[key] = value
    project = checked["project_name"]
    _check_slug(project)
    if "stack" in checked:
        contract.validate_stack_name(checked["stack"])
    validate_github_repo(checked.get("github_repo", ""))
    if checked.get("mlflow_username", "") not in ("", machine_user(project)):
        raise UsageError(
            f"the answer mlflow_username {checked['mlflow_username']!r} is not the "
            f"repository's machine identity {machine_user(project)!r}"
        )
    for key, (rule, what) in _ANSWER_RULES.items():
        if key in checked and not rule.fullmatch(checked[key]):
            raise UsageError(f"the answer {key} {checked[key]!r} is not {what}")
    return checked


# -- a generated repository's answers file, read back --------------------------------------------
ADOPTED_KEY = "_adopted"  # in the answers file: `mlrig init --adopt` wired it, no template made it
# an adopted repository's retrain declaration (core/bootstrap/declaration.py checks it)
RETRAIN_KEY = "retrain"
ANSWERS_RESTORE_HINT = (
    "it was edited by hand; restore what `mlrig init` wrote from git history "
    f"(`git log -p -- {ANSWERS_FILE}`)"
)


def find_answers(start: Path) -> Path | None:
    """The answers file of the generated repository holding `start` (start itself, then its
    parents up to the first git work tree's top), or None outside one."""
    here = start.resolve()
    for folder in (here, *here.parents):
        if (folder / ANSWERS_FILE).is_file():
            return folder / ANSWERS_FILE
        if (folder / ".git").exists():
            return None
    return None


def load_answers(file: Path, required: tuple[str, ...] = ("project_name",)) -> dict[str, Any]:
    """A repository's answers file, every answer checked by its rule before any reaches git,
    DVC, MLflow, a path or the CI workflow: the one door every reader of the file goes
    through (it is a file anyone with the repository may have edited). The `_` keys copier
    keeps beside the answers (_commit, _src_path) come back as they are, for the update to
    check, and so does an adopted repository's `retrain` block, for the retrain to check.
    Unreadable or bad: one ConfigError naming the file and the answer."""
    import yaml

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        problem = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"{file} is not valid YAML ({problem})", hint=ANSWERS_RESTORE_HINT
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file} holds no answers", hint=ANSWERS_RESTORE_HINT)
    private = {k: v for k, v in data.items() if isinstance(k, str) and k.startswith("_")}
    if data.get(ADOPTED_KEY) is True and RETRAIN_KEY in data:  # checked by its one reader
        private[RETRAIN_KEY] = data[RETRAIN_KEY]
    try:
        answers = check_template_answers(
            {k: v for k, v in data.items() if k not in private}, required
        )
    except UsageError as exc:
        raise ConfigError(f"{file}: {exc.message}", hint=ANSWERS_RESTORE_HINT) from None
    return {**private, **answers}
