"""Live inputs against the repository's data/schema.yaml with the validate stage's own rules:
the stage module mlrig ships in its template (`src/<project>/validate.py`) is loaded as is and
its `schema_errors` applied, so the monitor and the pipeline cannot drift apart.

A request carries the model's inputs only: the schema's ID column and its target are not
expected in it, and a column the model takes that the schema does not list (a feature the
model derives, named by the model's signature) is not unknown. What is left over is.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mlrig import assets

if TYPE_CHECKING:
    import pandas as pd

_PACKAGE = "_mlrig_template_stages"
ID_COLUMN = "id"  # the template's data.ID


@cache
def validate_stage() -> ModuleType:
    """The template's validate module (with the data module it imports), loaded from mlrig's
    own copy under a private package name."""
    src = assets.pipeline_template() / "template" / "src" / "{{project_name}}"
    package = importlib.util.spec_from_loader(_PACKAGE, loader=None, is_package=True)
    assert package is not None
    package.submodule_search_locations = [str(src)]
    sys.modules.setdefault(_PACKAGE, importlib.util.module_from_spec(package))
    _data_stage(src)
    spec = importlib.util.spec_from_file_location(f"{_PACKAGE}.validate", src / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _data_stage(src: Path) -> None:
    """The data module validate imports. The template keeps it as data.py.jinja (a
    partitioned repository's load_snapshot differs): rendered here as a default repository
    has it, the same text `mlrig init` writes there."""
    name = f"{_PACKAGE}.data"
    if name in sys.modules or (src / "data.py").is_file():
        return
    import jinja2

    source = src / "data.py.jinja"
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)  # noqa: S701 - Python, not HTML
    code = env.from_string(source.read_text()).render(snapshots="table", temporal="false")
    module = ModuleType(name)
    module.__file__ = str(src / "data.py")
    module.__package__ = _PACKAGE
    sys.modules[name] = module
    exec(compile(code, str(source), "exec"), module.__dict__)  # noqa: S102 - mlrig's own template


def parse_schema(text: bytes) -> dict[str, Any] | None:
    """data/schema.yaml's content as the stage reads it, or None when it is not one."""
    import yaml

    try:
        schema = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return None
    columns = schema.get("columns") if isinstance(schema, dict) else None
    if not isinstance(columns, dict) or not columns:
        return None
    stage = validate_stage()
    if any((spec or {}).get("type") not in stage.TYPES for spec in columns.values()):
        return None
    return dict(schema)


def findings(
    frame: pd.DataFrame, schema: dict[str, Any], model_inputs: list[str] | None = None
) -> list[str]:
    """The validate stage's schema errors for the live rows, one line each: the schema minus
    its ID and target (no request carries them), and the model's own derived inputs allowed."""
    stage = validate_stage()
    target = schema.get("target")
    columns = {k: v for k, v in schema["columns"].items() if k not in (ID_COLUMN, target)}
    extra = [c for c in (model_inputs or []) if c not in columns and c in frame.columns]
    checked = frame.drop(columns=extra)
    errors: list[str] = stage.schema_errors(checked, {**schema, "columns": columns})
    return errors
