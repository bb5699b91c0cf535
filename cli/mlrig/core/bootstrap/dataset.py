"""The raw dataset a new repo starts from: scikit-learn's breast-cancer table, shipped as
template data (pipeline/data/) and copied byte for byte, so its DVC hash never varies."""

from __future__ import annotations

from pathlib import Path

from mlrig.core.bootstrap._template import packaged_template
from mlrig.errors import ConfigError

RAW_DATA = "data/raw/breast_cancer.csv"  # where the generated repo's pipeline reads it
TEMPORAL_RAW = "data/raw"  # a temporal repo's labels.csv and features.csv, one DVC directory
DATASET = "data/breast_cancer.csv"  # where the template source keeps it


def dataset_file(source: Path | None = None) -> Path:
    """The table as the template source (default: the packaged pipeline/) ships it."""
    file = (source or packaged_template()) / DATASET
    if not file.is_file():
        raise ConfigError(
            f"the template source has no dataset ({file} is missing)",
            hint="reinstall mlrig (its pipeline/ data is incomplete)",
        )
    return file


def write_dataset(path: Path, source: Path | None = None) -> int:
    """Write the table `load_breast_cancer(as_frame=True).frame` gives, with an `id` column
    first (for leakage tests), to path; return its number of rows.

    Target 0 = malignant, 1 = benign, as in scikit-learn. The bytes are copied, never
    re-serialised: the same file, and so the same DVC hash, on every machine.
    """
    data = dataset_file(source).read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data.count(b"\n") - 1  # minus the header


def write_temporal_example(repo: Path, project: str, *, leak: bool = False) -> int:
    """Write the temporal example (data/raw/labels.csv and features.csv) into the rendered
    repo at `repo` with the generator the template put there (src/<project>/example.py:
    standard library only, seeded, so the same bytes everywhere); return its label rows.
    leak: the labels carry a column computed from the outcome (the demo's planted leak)."""
    import runpy

    generator = repo / "src" / project / "example.py"
    if not generator.is_file():
        raise ConfigError(
            f"the rendered template has no {generator.relative_to(repo)}",
            hint="reinstall mlrig (its pipeline/ template is incomplete)",
        )
    write = runpy.run_path(str(generator))["write"]
    _features, labels = write(repo / TEMPORAL_RAW, leak=leak)
    return int(labels)
