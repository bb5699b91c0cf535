"""The record of the last image `mlrig image build` made: push and run default to it."""

from __future__ import annotations

import json

from mlrig import contract, paths
from mlrig.errors import UsageError

LAST_BUILD = "last-image.json"


def remember(ref: str, image_id: str) -> None:
    contract.atomic_write(
        paths.home() / LAST_BUILD, json.dumps({"ref": ref, "id": image_id}) + "\n"
    )


def last_built() -> str:
    try:
        return str(json.loads((paths.home() / LAST_BUILD).read_text())["ref"])
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(
            "no image given and none built yet", hint="run `mlrig image build` or name the image"
        ) from exc
