"""A remote training task's size, checked against Fargate's table, and what an hour of it
costs on demand and on Spot: the `mlrig retrain --remote --dry-run`. The prices are the stack
plan's (`mlrig.core.stack.costs`: the same table, region and date), so a plan and a dry run
never disagree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlrig.core.stack import costs
from mlrig.errors import UsageError
from mlrig.tracking.container import FARGATE_MEMORY

# The size a remote retrain asks for when not told: the template's scikit-learn pipeline
# fits in it with room to spare.
DEFAULT_CPU_UNITS = 1024
DEFAULT_MEMORY_MIB = 4096


@dataclass(frozen=True)
class TaskSize:
    cpu_units: int  # 1024 = 1 vCPU
    memory_mib: int

    @property
    def label(self) -> str:
        return (
            f"{self.cpu_units / 1024:g} vCPU / {self.memory_mib / 1024:g} GiB "
            f"({self.cpu_units} CPU units, {self.memory_mib} MiB)"
        )


def _what_exists() -> str:
    return "; ".join(
        f"{cpu / 1024:g} vCPU: {mib[0]}-{mib[-1]} MiB in steps of {mib[1] - mib[0]}"
        for cpu, mib in FARGATE_MEMORY.items()
    )


def task_size(cpu_vcpu: float | None = None, memory_mib: int | None = None) -> TaskSize:
    """The Fargate size for `--cpu N` (vCPU) and `--memory MIB`; memory defaults to the
    smallest the CPU allows (or DEFAULT_MEMORY_MIB at the default CPU). A size Fargate does
    not offer is one UsageError naming the sizes that exist."""
    units = DEFAULT_CPU_UNITS if cpu_vcpu is None else round(cpu_vcpu * 1024)
    shown = f"{cpu_vcpu:g}" if cpu_vcpu is not None else f"{units / 1024:g}"
    if cpu_vcpu is not None and (cpu_vcpu <= 0 or units / 1024 != cpu_vcpu):
        units = -1
    allowed = FARGATE_MEMORY.get(units)
    if allowed is None:
        raise UsageError(
            f"Fargate has no task of {shown} vCPU",
            hint=f"use one of: {_what_exists()}",
        )
    if memory_mib is None:
        memory_mib = DEFAULT_MEMORY_MIB if units == DEFAULT_CPU_UNITS else allowed[0]
    if memory_mib not in allowed:
        raise UsageError(
            f"a {shown} vCPU Fargate task takes {allowed[0]}-{allowed[-1]} MiB in steps of "
            f"{allowed[1] - allowed[0]}, not {memory_mib}",
            hint=f"sizes that exist: {_what_exists()}",
        )
    return TaskSize(units, memory_mib)


def fargate_size(cpu_units: int, memory_mib: int) -> TaskSize:
    """A TaskSpec's size (CPU units, MiB), checked as `task_size` checks `--cpu`/`--memory`."""
    return task_size(cpu_units / 1024, memory_mib)


@dataclass(frozen=True)
class Quote:
    size: TaskSize
    on_demand_hour: float
    spot_hour: float
    price_region: str = costs.PRICE_REGION
    price_date: str = costs.PRICE_DATE

    def as_json(self) -> dict[str, object]:
        return {
            "cpu_units": self.size.cpu_units,
            "memory_mib": self.size.memory_mib,
            "on_demand_hour_usd": round(self.on_demand_hour, 4),
            "spot_hour_usd": round(self.spot_hour, 4),
            "price_region": self.price_region,
            "price_date": self.price_date,
        }


def quote(size: TaskSize) -> Quote:
    vcpu, gb = size.cpu_units / 1024, size.memory_mib / 1024
    return Quote(
        size,
        costs.fargate_hour(vcpu, gb, spot=False),
        costs.fargate_hour(vcpu, gb, spot=True),
    )


def describe(q: Quote, region: str | None) -> str:
    """The dry run's line: the size, an hour on demand and on Spot, where the prices are
    from, and the region the task would run in when it is not theirs."""
    where = ""
    if region and region != q.price_region:
        where = f"; {region} lists 0-25 % more, re-check before budgeting"
    return (
        f"Fargate task {q.size.label}: an hour costs ${q.on_demand_hour:.4f} on demand, "
        f"${q.spot_hour:.4f} on Spot (Spot: up to "
        f"{costs.PRICES['fargate_spot_discount']:.0%} off, may be interrupted); "
        f"{q.price_region} list prices of {q.price_date}{where}. Nothing was submitted."
    )


def dry_run(
    repo: Path,
    stack: str | None,
    cpu_vcpu: float | None = None,
    memory_mib: int | None = None,
) -> tuple[Quote, str]:
    """What `retrain --remote --dry-run` prints: offline, the stack's region from its outputs
    (when a stack is chosen at all: the price needs nothing else)."""
    from mlrig.core.stack import stacks

    size = task_size(cpu_vcpu, memory_mib)
    try:
        name = stacks.resolve_name(stack, repo=repo)
    except UsageError:  # no stack chosen: the list prices alone
        return quote(size), describe(quote(size), None)
    region = stacks.outputs(name).region
    q = quote(size)
    return q, f"stack '{name}' ({region or 'local'}): {describe(q, region)}"
