"""The demo's data-over-time scenario: a planted leak caught before train, then the pipeline
without it training.

A second repository beside the demo's, `mlrig init --temporal` (labels with a time, features
with the time each value became available, the template's generated example). In a throwaway
clone of it the example is written again with a feature computed from the future (the labels'
`refund_next_7d`, known only after the outcome; declared in the schema so validate lets it
through): `dvc repro preprocess` must stop at preprocess with the leakage line naming the
column and a row, before train. Then the repository itself, without the leak, runs its whole
pipeline as its machine identity: the point-in-time table, the split by time, a model version.
The clone is removed whatever happens, so nothing the leak touched is left or committed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from mlrig.core.demo._context import StepFailed

if TYPE_CHECKING:
    from mlrig.core.demo._context import DemoContext

TEMPORAL_PROJECT = "demo_temporal"
LEAK_RULE = "rule 'leakage'"
LEAK_COLUMN = "refund_next_7d"  # what the template's example.py plants (its LEAK_COLUMN)


def _repo(ctx: DemoContext) -> Path:
    """The temporal repository (made once; a re-run reuses it)."""
    from mlrig.core.bootstrap import init as bootstrap

    repo = ctx.workdir / TEMPORAL_PROJECT.replace("_", "-")
    if not (repo / bootstrap.ANSWERS_FILE).exists():
        bootstrap.init(repo, ctx.stack, name=TEMPORAL_PROJECT, progress=ctx.log, temporal=True)
    ctx.facts["temporal repository"] = str(repo)
    return repo


def planted_leak(ctx: DemoContext) -> str:
    """In a throwaway clone of the temporal repository, the example with the leak planted:
    `dvc repro preprocess` must fail with the leakage line, and train must not start."""
    import yaml

    from mlrig.adapters import dvc, git
    from mlrig.core.bootstrap import dataset
    from mlrig.errors import ServiceError

    repo = _repo(ctx)
    clone = ctx.workdir / f"{repo.name}-leak"
    shutil.rmtree(clone, ignore_errors=True)
    output: list[str] = []

    def log(text: str) -> None:
        ctx.log(text)
        output.append(text)

    try:
        git.clone(str(repo), clone)
        git.checkout_detached(clone, git.head(repo))
        # a partitioned repository never rewrites a partition: the clone starts its data over
        # (no partitions, no watermark), so ingest takes the planted example whole
        shutil.rmtree(clone / "data" / "snapshots", ignore_errors=True)
        shutil.rmtree(clone / "data" / "snapshot_state", ignore_errors=True)
        dataset.write_temporal_example(clone, TEMPORAL_PROJECT, leak=True)
        schema_file = clone / "data" / "schema.yaml"
        schema = yaml.safe_load(schema_file.read_text())
        schema["columns"][LEAK_COLUMN] = {"type": "float", "nullable": False}
        schema_file.write_text(yaml.safe_dump(schema, sort_keys=False))
        try:
            dvc.run_cli(clone, "repro", "preprocess", log=log)
        except ServiceError:
            pass
        else:
            raise StepFailed(
                f"the pipeline ran preprocess with {LEAK_COLUMN} planted in the labels: "
                "the leak was not caught",
                hint=f"see the preprocess stage of {repo} (temporal.py's leaks)",
            )
    finally:
        shutil.rmtree(clone, ignore_errors=True)
    text = "\n".join(output)
    caught = [ln.strip() for ln in text.splitlines() if LEAK_RULE in ln and LEAK_COLUMN in ln]
    if not caught or "Running stage 'train'" in text:
        last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), "no output")
        raise StepFailed(f"the leaky pipeline failed otherwise: {last.strip()}")
    return f"caught before train: {caught[0]}"


def fixed_pipeline(ctx: DemoContext) -> str:
    """The temporal repository as generated (no leak): `dvc repro` as its machine identity,
    committed; a re-run of the demo finds it up to date."""
    import json

    from mlrig import contract
    from mlrig.adapters import dvc, git
    from mlrig.core.access import identities
    from mlrig.core.stack import env as stack_env

    repo = _repo(ctx)
    output: list[str] = []

    def log(text: str) -> None:
        ctx.log(text)
        output.append(text)

    outputs = contract.load(ctx.stack)
    with stack_env.temporary_env(identities.repo_env(outputs, TEMPORAL_PROJECT)):
        dvc.run_cli(repo, "repro", log=log)
    lines = "\n".join(output).splitlines()
    split = next((ln.strip() for ln in lines if ln.startswith("preprocess: ")), None)
    if not git.is_dirty(repo):
        return f"{TEMPORAL_PROJECT}: up to date (trained by an earlier run)"
    git.commit_all(repo, "Train on the point-in-time table (dvc repro)")
    run = json.loads((repo / "models" / "mlflow_run.json").read_text())
    version = run.get("version")
    ctx.facts["temporal model"] = f"models:/{TEMPORAL_PROJECT}/{version}" if version else "-"
    trained = f"trained {ctx.facts['temporal model']}"
    return f"{split.removeprefix('preprocess: ')}; {trained}" if split else trained
