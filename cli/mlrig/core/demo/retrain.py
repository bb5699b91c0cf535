"""The demo's second scenario: new data, same code.

The repository reads its data from an export outside it (`<workdir>/incoming/patients.csv`,
standing in for a database that gained users), named in params.yaml's `ingest.source`. New
rows arrive there; `mlrig retrain` takes a new snapshot, trains, registers a version and lets
the champion gate decide; a second retrain on the same data finds nothing new.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlrig.core.demo._context import DemoContext

SOURCE = Path("incoming/patients.csv")
NEW_ROWS = 60
BUNDLED = Path("data/raw/breast_cancer.csv")


def append_rows(source: Path, count: int) -> int:
    """Append `count` new patients (fresh ids, measurements 1% off existing rows); the total."""
    with source.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    fields = list(rows[0])
    next_id = max(int(r["id"]) for r in rows) + 1 if "id" in fields else 0
    new = []
    for i, row in enumerate(rows[-count:]):
        row = dict(row)
        for key in fields:
            if key == "id":
                row[key] = str(next_id + i)
            elif key != "target":
                row[key] = repr(round(float(row[key]) * 1.01, 6))
        new.append(row)
    with source.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=fields, lineterminator="\n").writerows(new)
    return len(rows) + len(new)


def _point_params_at(repo: Path, source: Path) -> bool:
    """params.yaml's ingest.source -> source (True when it changed)."""
    import yaml

    params_file = repo / "params.yaml"
    text = params_file.read_text()
    current = str((yaml.safe_load(text) or {}).get("ingest", {}).get("source", ""))
    if current == str(source):
        return False
    params_file.write_text(text.replace(f"source: {current}", f"source: {source}", 1))
    return True


def new_data(ctx: DemoContext) -> str:
    from mlrig.adapters import git

    repo, source = ctx.repo, ctx.workdir / SOURCE
    if not source.exists():
        source.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / BUNDLED, source)
    if _point_params_at(repo, source):
        git.commit_all(repo, "Read the patients export (ingest.source)")
        git.run(repo, "push", "--quiet", "origin", "HEAD:main")
    total = append_rows(source, NEW_ROWS)
    ctx.facts["data source"] = str(source)
    return f"{NEW_ROWS} new rows in {source} ({total} rows)"


def retrain(ctx: DemoContext) -> str:
    from mlrig.core.demo._context import PROJECT, StepFailed
    from mlrig.core.retrain import retrain as core

    result = core.retrain(ctx.repo, push_image=False, log=ctx.log)
    if not result.changed or not result.commit:
        raise StepFailed(f"new rows arrived but retrain found nothing new: {result.message}")
    ctx.facts["retrain"] = f"{result.message} (commit {result.commit[:8]})"
    if result.version:  # the canary of the deploy steps
        ctx.facts["retrained"] = f"models:/{PROJECT}/{result.version}"
    return ctx.facts["retrain"]


def retrain_again(ctx: DemoContext) -> str:
    from mlrig.core.demo._context import StepFailed
    from mlrig.core.retrain import retrain as core

    result = core.retrain(ctx.repo, push_image=False, log=ctx.log)
    if result.changed:
        raise StepFailed(f"the same data made a new commit {result.commit}")
    return result.message
