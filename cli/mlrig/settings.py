"""Machine-level settings mlrig records (e.g. which base image the setup produced)."""

from __future__ import annotations

import json

from pydantic import BaseModel

from mlrig import contract, paths
from mlrig.errors import ConfigError

DEFAULT_BASE_IMAGE = "python:3.11-slim"
OFFLINE_BASE_IMAGE = "mlrig/base:py3.11"


class Settings(BaseModel):
    base_image: str = DEFAULT_BASE_IMAGE


def load() -> Settings:
    path = paths.settings_file()
    if not path.exists():
        return Settings()
    try:
        return Settings.model_validate(json.loads(path.read_text()))
    except ValueError as exc:
        raise ConfigError(
            f"settings file {path} is corrupt", hint="delete it and run `mlrig setup engine` again"
        ) from exc


def save(settings: Settings) -> None:
    contract.atomic_write(paths.settings_file(), settings.model_dump_json(indent=2) + "\n")
