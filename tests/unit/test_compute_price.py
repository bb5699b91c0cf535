"""`retrain --remote --dry-run`: a task size checked against Fargate's table, and an hour of
it priced on demand and on Spot from the stack plan's price table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig import contract
from mlrig.core.compute import price
from mlrig.core.stack import costs
from mlrig.errors import UsageError
from mlrig.main import app
from tests.helpers import aws_stack_outputs

runner = CliRunner()


@pytest.mark.parametrize(
    ("cpu", "memory", "expected"),
    [
        (None, None, (1024, 4096)),
        (0.25, None, (256, 512)),
        (4, 30720, (4096, 30720)),
        (16, 122880, (16384, 122880)),
    ],
)
def test_sizes_fargate_offers(cpu: float | None, memory: int | None, expected: tuple) -> None:
    size = price.task_size(cpu, memory)
    assert (size.cpu_units, size.memory_mib) == expected


@pytest.mark.parametrize(
    ("cpu", "memory", "message"),
    [
        (0.3, None, "Fargate has no task of 0.3 vCPU"),
        (3, None, "Fargate has no task of 3 vCPU"),
        (0, None, "Fargate has no task of 0 vCPU"),
        (2, 3000, "a 2 vCPU Fargate task takes 4096-16384 MiB in steps of 1024, not 3000"),
    ],
)
def test_a_size_fargate_lacks_is_one_line_naming_what_exists(
    cpu: float, memory: int | None, message: str
) -> None:
    with pytest.raises(UsageError) as info:
        price.task_size(cpu, memory)
    line = info.value.one_line()
    assert message in line and "\n" not in line
    assert "0.25 vCPU: 512-2048 MiB" in line and "16 vCPU: 32768-122880 MiB" in line


def test_an_hour_is_priced_from_the_plans_table() -> None:
    q = price.quote(price.task_size(2, 8192))
    vcpu, gb = costs.PRICES["fargate_vcpu_hour"], costs.PRICES["fargate_gb_hour"]
    assert q.on_demand_hour == pytest.approx(2 * vcpu + 8 * gb)
    assert q.spot_hour == pytest.approx(q.on_demand_hour * (1 - 0.70))
    assert (q.price_region, q.price_date) == (costs.PRICE_REGION, costs.PRICE_DATE)


def test_dry_run_names_the_stacks_region_and_submits_nothing(mlrig_home: Path) -> None:
    outputs = aws_stack_outputs("team").model_copy(update={"region": "eu-west-1"})
    contract.save(outputs)
    result = runner.invoke(app, ["retrain", "--dry-run", "--stack", "team", "--json"])
    assert result.exit_code == 0, result.output
    text, last = result.stdout.strip().rsplit("\n", 1)
    assert "stack 'team' (eu-west-1): Fargate task 1 vCPU / 4 GiB" in " ".join(text.split())
    assert "$0.0583 on demand, $0.0175 on Spot" in text and "eu-west-1 lists 0-25 % more" in text
    assert "Nothing was submitted" in text
    assert json.loads(last) == {
        "cpu_units": 1024,
        "memory_mib": 4096,
        "on_demand_hour_usd": 0.0583,
        "spot_hour_usd": 0.0175,
        "price_region": "us-east-1",
        "price_date": "2025-06",
    }


def test_dry_run_needs_no_stack(mlrig_home: Path, tmp_path: Path) -> None:
    _, line = price.dry_run(tmp_path, None, 0.5, 2048)
    assert line.startswith("Fargate task 0.5 vCPU / 2 GiB (512 CPU units, 2048 MiB)")
    assert "us-east-1 list prices of 2025-06" in line
