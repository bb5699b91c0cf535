"""`mlrig trace endpoint:NAME`: what an endpoint serves, traced like any image. The endpoint's
state (the local stack's, or an AWS endpoint stack's config) names each serving image by
digest; the trace follows the one taking the most traffic through the image's labels (on AWS:
the model version's push tags) to its model version, run, commit and data (deploy sits above
provenance, so the endpoint form resolves here and the trace command calls it).
"""

from __future__ import annotations

from pathlib import Path

from mlrig.core.deploy.endpoints import Site
from mlrig.core.deploy.state import check_name
from mlrig.core.provenance import trace as provenance_trace
from mlrig.core.provenance.record import EndpointRecord, ProvenanceRecord, ServingRecord
from mlrig.errors import UsageError

PREFIX = "endpoint:"


def is_endpoint_ref(ref: str) -> bool:
    return ref.strip().startswith(PREFIX)


def trace(ref: str, *, stack: str | None = None, repo: Path | None = None) -> ProvenanceRecord:
    """endpoint:NAME -> the serving image by digest -> version -> run -> commit -> data. A
    version the image's labels do not confirm is a refused line (the command then fails)."""
    from mlrig.core.deploy import aws

    name = check_name(ref.strip().removeprefix(PREFIX))
    if aws.is_aws(stack):
        stack_name, url, public, serving = _aws_serving(name, stack)
    else:
        site = Site.open(stack)
        ep = site.store.get(name)
        stack_name, public = site.layout.name, ep.public
        local_url = site.url(name)
        url = f"{local_url}/invocations" if local_url else None
        serving = [
            ServingRecord(
                model=b.model,
                version=b.version,
                digest=b.digest,
                image=b.image,
                traffic=b.weight,
                since=b.since,
            )
            for b in ep.backends
        ]
    if not serving:
        raise UsageError(f"endpoint {name!r} serves nothing", hint="deploy a version to it")
    main = max(serving, key=lambda b: b.traffic)  # the stable one on a tie (listed first)
    record = provenance_trace.trace(main.image, stack=stack_name, repo=repo)
    refused = list(record.refused)
    labelled = record.model
    if labelled is None or (labelled.name, labelled.version) != (main.model, main.version):
        says = f"{labelled.name} v{labelled.version}" if labelled else "no model version"
        refused.append(
            f"endpoint {name}: its state says {main.model} v{main.version} serves "
            f"{main.digest}, but the image traces to {says}"
        )
    endpoint = EndpointRecord(
        name=name, stack=stack_name, url=url, public=public, serving=serving, traced=main.version
    )
    return record.model_copy(update={"ref": ref, "endpoint": endpoint, "refused": refused})


def _aws_serving(name: str, stack: str | None) -> tuple[str, str | None, bool, list[ServingRecord]]:
    """An AWS endpoint's versions, each as the stack's ECR image by digest (what the
    function runs: deploy verified it there)."""
    from mlrig.core.deploy import aws

    outputs, ep, url = aws.describe(name, stack=stack)
    serving = []
    for b in ep.backends:
        if not b.digest:
            raise UsageError(
                f"endpoint {name!r} serves Lambda version {b.lambda_version}, whose model "
                "version its state does not name (deployed before mlrig kept it)",
                hint=f"deploy the version again: `mlrig deploy REF --endpoint {name} --stack "
                f"{outputs.name}`",
            )
        serving.append(
            ServingRecord(
                model=b.model,
                version=b.version,
                digest=b.digest,
                image=f"{outputs.registry_url}@{b.digest}",
                traffic=b.weight,
                since=b.since,
            )
        )
    return outputs.name, url, ep.public, serving
