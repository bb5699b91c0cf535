"""The template's source: the packaged pipeline/ and the git history of its versions that
copier renders from, and three-way merges between on `mlrig update`."""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from mlrig import assets, paths
from mlrig.adapters import git
from mlrig.errors import ConfigError


def packaged_template() -> Path:
    """pipeline/ as this mlrig install ships it (copier.yml, VERSION, template/, data/)."""
    return assets.pipeline_template()


def template_version(source: Path) -> str:
    version = source / "VERSION"
    return version.read_text().strip() if version.exists() else "0.0.0"


_SECTION = re.compile(r"^## \[([0-9]+\.[0-9]+\.[0-9]+)\][^\n]*\n(.*?)(?=^## \[|\Z)", re.M | re.S)


def template_changes(source: Path, old: str, new: str) -> list[tuple[str, str]]:
    """(version, text) of each section of the template's CHANGELOG.md after `old` up to
    `new`, newest first: what an update from old to new brings. `old`/`new` are template
    refs (X.Y.Z, or X.Y.Z.postN for a content change under one version)."""
    from packaging.version import InvalidVersion, Version

    log = source / "CHANGELOG.md"
    if not log.is_file():
        return []
    try:
        low, high = Version(old), Version(new)
    except InvalidVersion:
        return []
    found = [(v, text.strip()) for v, text in _SECTION.findall(log.read_text())]
    return [(v, text) for v, text in found if low.release < Version(v).release <= high.release]


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
    version = template_version(src)
    repo = paths.home() / "templates" / "pipeline"
    # parallel `mlrig init`s share this one history
    with _locked(repo.parent / ".pipeline.lock"):
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True, exist_ok=True)
            git.init(repo)
        for child in repo.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(src / "template", repo / "template", ignore=ignore)
        # only what copier renders: the dataset (data/) is not a template file, so an
        # update never tries to merge it
        for name in ("copier.yml", "VERSION"):
            if (src / name).exists():
                shutil.copy2(src / name, repo / name)
        if git.is_dirty(repo) or not git.tags(repo):
            git.commit_all(repo, f"template {version}", as_mlrig=True)
            existing = [
                t for t in git.tags(repo) if t == version or t.startswith(f"{version}.post")
            ]
            git.tag(repo, f"{version}.post{len(existing)}" if existing else version)
        return repo, git.describe(repo)
