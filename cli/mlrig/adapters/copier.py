"""copier behind one door: render and update a repository from mlrig's template.

Core code calls these functions with plain paths and answers; copier's errors become
mlrig's own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mlrig.errors import DependencyMissing, UsageError

Answers = Mapping[str, str]


@contextmanager
def _translated(action: str, hint: str) -> Iterator[None]:
    """copier's own errors (a rejected answer, a broken template, a bad ref) become a
    UsageError; anything else is not copier's verdict and passes through unchanged."""
    try:
        from copier.errors import CopierError
    except ImportError as exc:  # pragma: no cover - a hard dependency
        raise DependencyMissing("copier is not installed", hint="pip install copier") from exc
    try:
        yield
    except CopierError as exc:
        raise UsageError(f"copier could not {action}: {exc}", hint=hint) from exc


def render(template: Path, ref: str, dest: Path, answers: Answers) -> None:
    """Render the template git repo at `ref` into dest, answering every question from
    `answers` (defaults for the rest); never prompts, never runs template tasks."""
    with _translated(
        "render the template",
        "check --name and --github-repo; if they are fine, reinstall mlrig "
        "(its pipeline/ template may be damaged)",
    ):
        from copier import run_copy

        run_copy(
            str(template),
            dest,
            data=dict(answers),
            vcs_ref=ref,
            defaults=True,
            quiet=True,
            overwrite=True,
            unsafe=False,
            # mlrig renders into a staging directory it removes itself on failure
            cleanup_on_error=False,
        )


def update(dest: Path, ref: str, answers: Answers) -> None:
    """Three-way merge the template at `ref` into the repo at dest (which names its template
    source in .copier-answers.yml); conflicts are left inline as <<<<<<< markers."""
    with _translated(
        "update the repository",
        "check that .copier-answers.yml is intact (restore it from git history if it "
        "was edited) and that the repository is committed",
    ):
        from copier import run_update

        run_update(
            dest,
            data=dict(answers),
            vcs_ref=ref,
            defaults=True,
            overwrite=True,
            quiet=True,
            conflict="inline",
            unsafe=False,
            skip_answered=True,
        )
