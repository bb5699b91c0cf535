"""Names a user types or a file hands back (stack names, GitHub repositories, regions, domains)
are matched whole: Python's `$` also matches before a trailing newline, so `'prod\\n'` passed a
`^...$` pattern checked with `.match` and reached directory names and the CI role's subject."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlrig import paths
from mlrig.contract import OUTPUTS_FILE, list_names, validate_stack_name
from mlrig.core.shared import aws_inputs
from mlrig.errors import UsageError


@pytest.mark.parametrize("name", ["prod\n", "prod\r\n", "a\nb"])
def test_a_stack_name_with_a_line_break_is_refused(name: str) -> None:
    with pytest.raises(UsageError, match="invalid stack name"):
        validate_stack_name(name)


def test_a_stack_folder_with_a_line_break_is_not_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLRIG_HOME", str(tmp_path))
    for name in ("prod", "prod\n", "dev"):
        folder = paths.stacks_dir() / name
        folder.mkdir(parents=True)
        (folder / OUTPUTS_FILE).write_text("{}")
    assert list_names() == ["dev", "prod"]


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (aws_inputs.check_github_repo, "acme/proj\n"),
        (aws_inputs.check_github_repo, "acme\n/proj"),
        (aws_inputs.check_region, "us-east-1\n"),
        (aws_inputs.check_domain, "mlflow.example.com\n"),
    ],
)
def test_an_aws_input_with_a_line_break_is_refused(
    check: Callable[[str], object], value: str
) -> None:
    with pytest.raises(UsageError):
        check(value)


def test_the_same_values_without_the_line_break_still_pass() -> None:
    assert validate_stack_name("prod") == "prod"
    assert aws_inputs.check_github_repo("acme/proj") == "acme/proj"
    assert aws_inputs.check_region("us-east-1") == "us-east-1"
    assert aws_inputs.check_domain("mlflow.example.com") == "mlflow.example.com"


# -- values read back from MLflow, image labels and files: the same rule ------------------------
RUN = "0123456789abcdef0123456789abcdef"
DIGEST = "sha256:" + "ab" * 32


def test_values_read_back_are_matched_whole() -> None:
    from mlrig.core.access import identities
    from mlrig.core.provenance import _inputs as provenance_input
    from mlrig.core.provenance import record as provenance

    assert provenance_input.exp_ref_problem("refs/exps/ab/cdef/exp-1") is None
    assert provenance_input.exp_ref_problem("refs/exps/ab/cdef/exp-1\n") is not None
    assert provenance_input.image_refs([f"host/repo@{DIGEST}", f"host/repo@{DIGEST}\n"]) == [
        f"host/repo@{DIGEST}"
    ]
    kept, refused = provenance_input.checked_labels(
        {provenance.LABEL_RUN_ID: RUN + "\n", provenance.LABEL_MODEL_VERSION: "3\n"}
    )
    assert kept == {}
    assert {r.tag for r in refused} == {provenance.LABEL_RUN_ID, provenance.LABEL_MODEL_VERSION}
    assert identities.is_machine_name("repo-churn")
    assert not identities.is_machine_name("repo-churn\n")


@pytest.mark.parametrize(
    ("field", "label", "bad"),
    [
        ("model", "io.mlrig.model.name", "churn model"),
        ("model", "io.mlrig.model.name", "-churn"),
        ("version", "io.mlrig.model.version", "03"),
        ("version", "io.mlrig.model.version", "3\n"),
        ("run_id", "io.mlrig.mlflow.run-id", RUN.upper()),
    ],
)
def test_a_served_version_passes_one_model_wherever_it_is_read(
    field: str, label: str, bad: str
) -> None:
    # an image's label (provenance), a captured record's `mlrig` object (monitor) and the
    # identity deploy hands a capturing container: one model, so one verdict for each value
    from mlrig.core.monitor import _captures
    from mlrig.core.provenance import _inputs as provenance_input
    from mlrig.core.shared import capture
    from tests.helpers import capture_line

    good = {"model": "churn-model", "version": "3", "run_id": RUN}
    labels = {
        "io.mlrig.model.name": good["model"],
        "io.mlrig.model.version": good["version"],
        "io.mlrig.mlflow.run-id": good["run_id"],
    }
    when = datetime(2026, 12, 7, tzinfo=UTC)
    # the good values pass everywhere
    assert provenance_input.checked_labels(labels) == (labels, [])
    _captures.parse_line(capture_line([{"x": 1}], [0], when=when, **good).encode())
    capture.identity(endpoint="ep", digest=DIGEST, **good)
    # one bad value is refused everywhere, and only that one
    kept, refused = provenance_input.checked_labels({**labels, label: bad})
    assert [r.tag for r in refused] == [label] and set(kept) == set(labels) - {label}
    line = capture_line([{"x": 1}], [0], when=when, **{**good, field: bad})
    with pytest.raises(ValueError, match=f"mlrig.{field}"):
        _captures.parse_line(line.encode())
    with pytest.raises(UsageError, match=f"version's {field} is missing or not valid"):
        capture.identity(endpoint="ep", digest=DIGEST, **{**good, field: bad})
