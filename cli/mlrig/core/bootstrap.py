"""`mlrig init` / `mlrig update`: render the pipeline/ template into a git+DVC repo wired to
a stack, and later re-apply newer template versions with copier's three-way merge.

Contract with `mlrig image build` (which reads a generated repo):
- `.copier-answers.yml` holds at least `project_name` (a slug that is a valid Python package
  and ECR repository name) and `stack` (the mlrig stack name);
- the train stage registers its model in MLflow as the registered model named exactly
  `project_name`, logged with explicit `pip_requirements` and an `input_example`; the latest
  registered version is what `mlrig image build` uses by default inside the repo.
"""

from __future__ import annotations

import contextlib
import fcntl
import keyword
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrig import assets, contract, paths
from mlrig.adapters import dvc, git
from mlrig.contract import StackOutputs
from mlrig.errors import ConfigError, Conflict, UsageError

ANSWERS_FILE = ".copier-answers.yml"
RAW_DATA = "data/raw/breast_cancer.csv"
NAME_MIN, NAME_MAX = 2, 64
_NAME_HINT = "use lowercase letters, digits and single underscores, starting with a letter"
_ECR_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_DVC_BAD = set(",#:@/\\")
_GITHUB_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class InitResult:
    path: Path
    project_name: str
    stack: str
    commit: str
    template_version: str


@dataclass(frozen=True)
class UpdateResult:
    path: Path
    old_version: str
    new_version: str
    changed: list[str]


# -- names --------------------------------------------------------------------------------
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
    return name


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
    if value and not _GITHUB_RE.match(value):
        raise UsageError(
            f"--github-repo {value!r} is not of the form owner/repo",
            hint="e.g. --github-repo acme/churn-model",
        )
    return value


# -- stack wiring -------------------------------------------------------------------------
def stack_answers(outputs: StackOutputs) -> dict[str, str]:
    """What the template needs from StackOutputs (never a secret, only where it lives)."""
    answers = {
        "stack": outputs.name,
        "stack_kind": outputs.kind,
        "aws_region": outputs.region or "",
        "mlflow_tracking_uri": outputs.mlflow.tracking_uri,
        "mlflow_username": "",
        "mlflow_password_secret_id": "",
        "mlflow_password_secret_key": "",
        "registry_url": outputs.registry.url,
        "ci_role_arn": outputs.ci_role_arn or "",
    }
    auth = outputs.mlflow.auth
    if auth:
        answers["mlflow_username"] = auth.username
        if auth.password.source == "aws-secretsmanager":
            answers["mlflow_password_secret_id"] = auth.password.ref
            answers["mlflow_password_secret_key"] = auth.password.key or ""
    return answers


def remote_local_options(outputs: StackOutputs) -> dict[str, str]:
    """DVC remote settings that belong in the git-ignored .dvc/config.local."""
    r = outputs.dvc_remote
    options = {"endpointurl": r.endpoint_url, "region": r.region, "profile": r.profile}
    return {k: v for k, v in options.items() if v}


def configure_remote(root: Path, outputs: StackOutputs) -> None:
    """(Re)wire a repo's default DVC remote to a stack, e.g. in a fresh clone."""
    dvc.add_remote(root, outputs.dvc_remote.url, remote_local_options(outputs))


# -- template source ----------------------------------------------------------------------
def packaged_template() -> Path:
    return assets.pipeline_template()


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def template_repo(source: Path | None = None) -> tuple[Path, str]:
    """Materialise the template as a git repo under MLRIG_HOME and return (repo, tag).

    copier updates need every template version the repos were generated from as a git
    ref: each distinct template content becomes one tagged commit, so a newer mlrig can
    three-way merge from the version an older one rendered.
    """
    src = source or packaged_template()
    if not (src / "copier.yml").is_file():
        raise ConfigError(
            f"template {src} has no copier.yml",
            hint="reinstall mlrig (the pipeline/ template is missing)",
        )
    version = (src / "VERSION").read_text().strip() if (src / "VERSION").exists() else "0.0.0"
    repo = paths.home() / "templates" / "pipeline"
    with _locked(repo.parent / ".pipeline.lock"):
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True, exist_ok=True)
            git.init(repo)
        for child in repo.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(src / "template", repo / "template", ignore=ignore)
        for name in ("copier.yml", "VERSION"):
            if (src / name).exists():
                shutil.copy2(src / name, repo / name)
        if git.is_dirty(repo) or not git.tags(repo):
            git.run(repo, "add", "--all")
            git.run(
                repo,
                "commit",
                "--quiet",
                "--allow-empty",
                "-m",
                f"template {version}",
                env=_fixed_identity(),
            )
            existing = [
                t for t in git.tags(repo) if t == version or t.startswith(f"{version}.post")
            ]
            git.tag(repo, f"{version}.post{len(existing)}" if existing else version)
        return repo, git.describe(repo)


def _fixed_identity() -> dict[str, str]:
    return {
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", git.FALLBACK_NAME), ("EMAIL", git.FALLBACK_EMAIL))
    }


def _copier_error(exc: Exception, action: str) -> Exception:
    from copier.errors import CopierError

    if isinstance(exc, CopierError):
        return UsageError(f"copier could not {action}: {exc}")
    return exc


# -- init ---------------------------------------------------------------------------------
_MEASURES = (
    "radius",
    "texture",
    "perimeter",
    "area",
    "smoothness",
    "compactness",
    "concavity",
    "concave points",
    "symmetry",
    "fractal dimension",
)
# scikit-learn's feature names for load_breast_cancer(), with spaces made CSV-friendly.
FEATURE_NAMES = [
    n.replace(" ", "_")
    for n in (
        [f"mean {m}" for m in _MEASURES]
        + [f"{m} error" for m in _MEASURES]
        + [f"worst {m}" for m in _MEASURES]
    )
]


def bundled_dataset_file() -> Path:
    """scikit-learn's copy of the breast-cancer table, found without importing sklearn
    (its import alone costs ~2 s of the init budget)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("scikit-learn is not installed", hint="pip install scikit-learn")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets/data/breast_cancer.csv"


def write_dataset(path: Path) -> int:
    """The table `load_breast_cancer(as_frame=True).frame` gives, with an `id` column first
    (for leakage tests); target 0 = malignant, 1 = benign, as in scikit-learn."""
    import csv

    with open(bundled_dataset_file(), newline="") as fh:
        rows = list(csv.reader(fh))
    n_rows, n_features = int(rows[0][0]), int(rows[0][1])
    body = rows[1:]
    if n_features != len(FEATURE_NAMES) or len(body) != n_rows:
        raise ConfigError(
            "scikit-learn's breast-cancer data has an unexpected shape",
            hint="reinstall scikit-learn",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["id", *FEATURE_NAMES, "target"])
        for i, row in enumerate(body, start=1):
            out.writerow([i, *row[:-1], int(float(row[-1]))])
    return n_rows


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and not target.is_dir():
        raise Conflict(f"{target} exists and is not a directory", hint="choose another path")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not force:
        raise Conflict(
            f"{target} exists and is not empty",
            hint="choose a new or empty directory, or --force to add the repo "
            "next to existing files (none is overwritten)",
        )
    if (target / ".git").exists() or (target / ".dvc").exists():
        raise Conflict(
            f"{target} is already a git or DVC repository",
            hint="`mlrig init` creates a new repository; choose another path",
        )


def _collisions(staging: Path, target: Path) -> list[str]:
    if not target.is_dir():
        return []
    return sorted(
        str(p.relative_to(staging))
        for p in staging.rglob("*")
        if not p.is_dir() and (target / p.relative_to(staging)).exists()
    )


def _place(staging: Path, target: Path) -> None:
    """Move the finished repo into place; on a failure, take back what was moved."""
    if not target.exists():
        os.rename(staging, target)
        return
    moved: list[Path] = []
    try:
        for entry in sorted(staging.iterdir()):
            dest = target / entry.name
            if dest.exists():  # a directory both sides have (checked: no file collides)
                shutil.copytree(entry, dest, dirs_exist_ok=True)
            else:
                os.rename(entry, dest)
                moved.append(dest)
    except BaseException:
        for dest in moved:
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        raise
    shutil.rmtree(staging, ignore_errors=True)


def init(
    path: Path,
    stack: str,
    *,
    name: str | None = None,
    github_repo: str = "",
    description: str | None = None,
    force: bool = False,
    template_dir: Path | None = None,
    progress: Progress = lambda _m: None,
) -> InitResult:
    """Create a git+DVC repository at path wired to stack; nothing is left on failure.

    The repo is built in a sibling staging directory and moved into place at the end.
    With force, path may hold other files: none is overwritten, and they stay uncommitted.
    """
    target = path.expanduser().absolute()
    project = validate_project_name(name) if name is not None else derive_project_name(target.name)
    validate_github_repo(github_repo)
    git.require()
    outputs = contract.load(stack)
    _check_target(target, force)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.mlrig-init-", dir=target.parent))
    try:
        src, ref = template_repo(template_dir)
        progress(f"rendering template {ref}")
        answers: dict[str, Any] = {
            "project_name": project,
            "github_repo": github_repo,
            **stack_answers(outputs),
        }
        if description:
            answers["description"] = description
        _render(src, ref, staging, answers)
        if force and (taken := _collisions(staging, target)):
            raise Conflict(
                f"{target} already has files the template writes: {', '.join(taken[:5])}",
                hint="move them away or pick another path",
            )
        progress("writing the raw dataset")
        write_dataset(staging / RAW_DATA)
        progress("git init, dvc init, remote, dvc add")
        git.init(staging)
        dvc.init(staging)
        configure_remote(staging, outputs)
        dvc.add(staging, RAW_DATA)
        commit = git.commit_all(
            staging,
            f"Initial commit from mlrig template {ref}\n\n"
            f"Wired to stack '{outputs.name}' ({outputs.kind}).",
        )
        _place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return InitResult(target, project, outputs.name, commit, ref)


def _render(src: Path, ref: str, dest: Path, answers: dict[str, Any]) -> None:
    from copier import run_copy

    try:
        run_copy(
            str(src),
            dest,
            data=answers,
            vcs_ref=ref,
            defaults=True,
            quiet=True,
            overwrite=True,
            unsafe=False,
            cleanup_on_error=False,
        )
    except Exception as exc:
        raise _copier_error(exc, "render the template") from exc


# -- update -------------------------------------------------------------------------------
def read_answers(root: Path) -> dict[str, Any]:
    import yaml

    file = root / ANSWERS_FILE
    if not file.is_file():
        raise UsageError(
            f"{root} is not a repository generated by `mlrig init` (no {ANSWERS_FILE})",
            hint="run `mlrig update` inside one",
        )
    data = yaml.safe_load(file.read_text()) or {}
    if not isinstance(data, dict) or "_commit" not in data or "_src_path" not in data:
        raise ConfigError(
            f"{file} has no template reference (_commit/_src_path)",
            hint="it was edited by hand; restore it from git history",
        )
    return data


def update(
    path: Path,
    *,
    stack: str | None = None,
    template_dir: Path | None = None,
    progress: Progress = lambda _m: None,
) -> UpdateResult:
    """Three-way merge the current template into the repo at path; changes stay uncommitted.

    Raises Conflict listing the files when the merge left conflict markers.
    """
    root = path.expanduser().absolute()
    git.require()
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    answers = read_answers(root)
    if not git.is_repo(root) or git.toplevel(root).resolve() != root.resolve():
        raise UsageError(
            f"{root} is not the top of a git repository",
            hint="run `mlrig update` at the root of the generated repository",
        )
    git.require_clean(root, "update")
    outputs = contract.load(stack or str(answers.get("stack", "")))
    if not Path(str(answers["_src_path"])).is_dir():
        raise ConfigError(
            f"the template history this repo was generated from "
            f"({answers['_src_path']}) is not on this machine",
            hint="run `mlrig update` where `mlrig init` ran, or with the same MLRIG_HOME",
        )
    repo, ref = template_repo(template_dir)
    if Path(str(answers["_src_path"])).resolve() != repo.resolve():
        raise ConfigError(
            f"this repo was generated from template history "
            f"{answers['_src_path']}, but this mlrig keeps it in {repo}",
            hint="use the MLRIG_HOME that `mlrig init` ran with",
        )
    old = str(answers["_commit"])
    progress(f"updating template {old} -> {ref}")
    from copier import Worker

    data = stack_answers(outputs)
    try:
        with Worker(
            dst_path=root,
            data=data,
            vcs_ref=ref,
            defaults=True,
            overwrite=True,
            quiet=True,
            conflict="inline",
            unsafe=False,
            skip_answered=True,
        ) as worker:
            worker.run_update()
    except Exception as exc:
        raise _copier_error(exc, "update the repository") from exc
    if outputs.name != answers.get("stack"):
        configure_remote(root, outputs)  # re-wired: the DVC remote follows the new stack
    conflicts = git.unmerged_files(root)
    if conflicts:
        raise Conflict(
            f"template update {old} -> {ref} left conflicts in: {', '.join(conflicts)}",
            hint="resolve the <<<<<<< markers, `git add` the files and commit",
        )
    status = git.run(root, "status", "--porcelain").splitlines()
    changed = sorted({line[3:] for line in status})
    return UpdateResult(root, old, ref, changed)
