"""The golden path on the local stack, as a list of named steps.

Each step does real work through mlrig's own core functions; a failing step stops the run
with its name, the one-line reason and the log file to read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlrig import paths
from mlrig.errors import MlrigError


class StepFailed(MlrigError):
    exit_code = 8


@dataclass
class DemoContext:
    stack: str
    workdir: Path
    log_file: Path
    facts: dict[str, str] = field(default_factory=dict)  # what the summary prints

    def log(self, text: str) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {text}\n")


@dataclass(frozen=True)
class StepResult:
    name: str
    seconds: float
    detail: str


Step = tuple[str, Callable[[DemoContext], str]]


def _stack_up(ctx: DemoContext) -> str:
    from mlrig.core.local_stack import LocalStack

    outputs = LocalStack(ctx.stack).up(progress=ctx.log)
    ctx.facts["MLflow UI"] = outputs.mlflow_tracking_uri
    ctx.facts["MLflow login"] = (f"{outputs.mlflow.auth.username if outputs.mlflow.auth else '-'}"
                                 f" / password: `mlrig stack env --name {ctx.stack}`")
    ctx.facts["registry"] = outputs.registry_url
    ctx.facts["DVC remote"] = outputs.dvc_remote_url
    return f"stack '{ctx.stack}' up"


def _services_answer(ctx: DemoContext) -> str:
    from mlrig.core import doctor

    checks = doctor.stack_checks(ctx.stack)
    for c in checks:
        ctx.log(f"check {c.name}: {c.status} {c.detail}")
    bad = doctor.failed(checks)
    if bad:
        raise StepFailed(f"{bad[0].name}: {bad[0].detail}", hint=bad[0].fix)
    return ", ".join(c.name for c in checks if c.status == doctor.OK)


def steps() -> list[Step]:
    return [
        ("stack up", _stack_up),
        ("services answer", _services_answer),
    ]


def default_log_file() -> Path:
    return paths.home() / "logs" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}.log"


def run(ctx: DemoContext, *, on_start: Callable[[str], None] = lambda _n: None,
        on_done: Callable[[StepResult], None] = lambda _r: None) -> list[StepResult]:
    results = []
    for name, fn in steps():
        on_start(name)
        ctx.log(f"== {name}")
        t0 = time.monotonic()
        try:
            detail = fn(ctx)
        except MlrigError as exc:
            ctx.log(f"FAILED: {exc.one_line()}")
            raise StepFailed(f"step '{name}' failed: {exc.message}",
                             hint=f"{exc.hint + '; ' if exc.hint else ''}log: {ctx.log_file}"
                             ) from exc
        except Exception as exc:
            ctx.log(f"FAILED: {type(exc).__name__}: {exc}")
            raise StepFailed(f"step '{name}' failed: {type(exc).__name__}: {exc}",
                             hint=f"log: {ctx.log_file}") from exc
        result = StepResult(name, time.monotonic() - t0, detail)
        ctx.log(f"ok ({result.seconds:.1f}s): {detail}")
        results.append(result)
        on_done(result)
    return results
