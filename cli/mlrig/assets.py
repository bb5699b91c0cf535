"""Where the data mlrig ships lives: the pipeline template and the Dockerfiles.

`pipeline/` and `docker/` hold data, not modules. A wheel carries them as `mlrig/_pipeline`
and `mlrig/_docker` beside this file; an editable install reads them from the checkout.
"""

from __future__ import annotations

from pathlib import Path

from mlrig.errors import DependencyMissing

_HERE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    for candidate in (_HERE / f"_{name}", _HERE.parent.parent / name):
        if candidate.is_dir():
            return candidate
    raise DependencyMissing(
        f"mlrig's {name}/ data is missing from this installation",
        hint="reinstall mlrig (`pip install --force-reinstall mlrig`)",
    )


def pipeline_template() -> Path:
    """The copier template that `mlrig init` renders (pipeline/)."""
    return _data_dir("pipeline")


def docker_dir() -> Path:
    """docker/: the serving image's and the tracking server image's build files."""
    return _data_dir("docker")
