"""`mlrig checkout --repro`: re-run the restored workspace's pipeline and compare it with
what the run recorded (checkout.py restores, checkout_verify.py holds the comparisons)."""

from __future__ import annotations

from mlrig.core.provenance import record as p
from mlrig.core.provenance._checkout_verify import Repro, compare, rerun
from mlrig.core.provenance.checkout import CheckoutResult
from mlrig.core.shared.progress import Progress, no_progress


def reproduce(result: CheckoutResult, progress: Progress = no_progress) -> Repro:
    """`dvc repro --force` in the workspace as a verification re-run (no model version is
    registered), compared with the run's recorded metrics and model hash."""
    from mlrig import contract
    from mlrig.core.access import identities

    root, target = result.workspace.root, result.target
    progress(f"dvc repro --force in {root} (a verification re-run of {target.run_id})")
    # the re-run logs in as the restored repository's machine identity, like any training
    env = identities.acting_env(contract.load(result.stack), identities.project_of(root))
    rerun(root, target.run_id, env)
    return compare(root, result.metrics, target.files.get(p.MODEL_FILE))
