"""Where mlrig keeps its state: MLRIG_HOME if set, else the platform's data directory."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "MLRIG_HOME"
ANSWERS_FILE = ".copier-answers.yml"  # written by `mlrig init`; names the repo's stack


def home() -> Path:
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser().resolve()
    from platformdirs import user_data_path

    return user_data_path("mlrig", appauthor=False)


def stacks_dir() -> Path:
    return home() / "stacks"


def stack_dir(name: str) -> Path:
    return stacks_dir() / name


def settings_file() -> Path:
    return home() / "settings.json"


def lock_file(name: str) -> Path:
    """The stack's writer lock; outside the stack's folder so it outlives `down --purge`."""
    return home() / "locks" / f"{name}.lock"
