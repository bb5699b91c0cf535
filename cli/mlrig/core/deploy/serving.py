"""`mlrig trace endpoint:NAME`: what an endpoint serves, traced like any image. The endpoint's
state names each serving container's image by digest; the trace follows the one taking the
most traffic through the image's labels to its model version, run, commit and data (deploy
sits above provenance, so the endpoint form resolves here and the trace command calls it).
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
    name = check_name(ref.strip().removeprefix(PREFIX))
    site = Site.open(stack)
    ep = site.store.get(name)
    if not ep.backends:
        raise UsageError(f"endpoint {name!r} serves nothing", hint="deploy a version to it")
    main = max(ep.backends, key=lambda b: b.weight)  # the stable one on a tie (listed first)
    record = provenance_trace.trace(main.image, stack=site.layout.name, repo=repo)
    refused = list(record.refused)
    labelled = record.model
    if labelled is None or (labelled.name, labelled.version) != (main.model, main.version):
        says = f"{labelled.name} v{labelled.version}" if labelled else "no model version"
        refused.append(
            f"endpoint {name}: its state says {main.model} v{main.version} serves "
            f"{main.digest}, but the image traces to {says}"
        )
    url = site.url(name)
    endpoint = EndpointRecord(
        name=name,
        stack=site.layout.name,
        url=f"{url}/invocations" if url else None,
        public=ep.public,
        serving=[
            ServingRecord(
                model=b.model,
                version=b.version,
                digest=b.digest,
                image=b.image,
                traffic=b.weight,
                since=b.since,
            )
            for b in ep.backends
        ],
        traced=main.version,
    )
    return record.model_copy(update={"ref": ref, "endpoint": endpoint, "refused": refused})
