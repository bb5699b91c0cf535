"""The golden path on the local stack, as a list of named steps.

Each step does real work through mlrig's own core functions; a failing step stops the run
with its name, the one-line reason and the log file to read.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mlrig import paths
from mlrig.core.demo._context import PROJECT, DemoContext, StepFailed
from mlrig.errors import MlrigError


@dataclass(frozen=True)
class StepResult:
    name: str
    seconds: float
    detail: str


Step = tuple[str, Callable[[DemoContext], str]]


def _stack_up(ctx: DemoContext) -> str:
    from mlrig.core.stack import stacks
    from mlrig.core.stack.facade import UpOptions

    outputs = stacks.create(ctx.stack, "local").up(UpOptions(), progress=ctx.log).outputs
    ctx.facts["MLflow UI"] = outputs.mlflow_tracking_uri
    ctx.facts["MLflow login"] = (
        f"{outputs.mlflow.auth.username if outputs.mlflow.auth else '-'}"
        f" / password: `mlrig stack env --stack {ctx.stack}`"
    )
    ctx.facts["registry"] = outputs.registry_url
    ctx.facts["DVC remote"] = outputs.dvc_remote_url
    return f"stack '{ctx.stack}' up"


def _services_answer(ctx: DemoContext) -> str:
    from mlrig.core.doctor import doctor

    checks = doctor.stack_checks(ctx.stack)
    for c in checks:
        ctx.log(f"check {c.name}: {c.status} {c.detail}")
    bad = doctor.failed(checks)
    if bad:
        raise StepFailed(f"{bad[0].name}: {bad[0].detail}", hint=bad[0].fix)
    return ", ".join(c.name for c in checks if c.status == doctor.OK)


SUMMARY_FILE = "demo-summary.json"
EXPERIMENTS = ("train.C=0.05", "train.C=20")
BEST_METRIC = "test_roc_auc"


def _init(ctx: DemoContext) -> str:
    from mlrig.core.bootstrap import init as bootstrap

    repo = ctx.repo
    ctx.facts["repository"] = str(repo)
    if (repo / bootstrap.ANSWERS_FILE).exists():  # a re-run keeps the repo and its history
        return f"reusing {repo}"
    result = bootstrap.init(repo, ctx.stack, name=PROJECT, progress=ctx.log)
    return f"{repo} (template {result.template_version}, commit {result.commit[:8]})"


def _access(ctx: DemoContext) -> str:
    """The repository's machine identity (made by init; made here for a repo from before),
    and who may do what on the stack, as `mlrig access show` prints it."""
    from mlrig import contract
    from mlrig.core.access import accounts as access
    from mlrig.core.access import view as access_view

    outputs = contract.load(ctx.stack)
    machine = access.add_machine(outputs, PROJECT)
    rows = access_view.show(outputs)
    ctx.log("$ mlrig access show")
    for row in rows:
        grants = ", ".join(f"{g.kind} {g.resource}: {g.permission}" for g in row.grants)
        ctx.log(f"  {row.name} ({row.kind}, role {row.role}): {grants or '-'}")
    ctx.facts["machine identity"] = f"{machine.user}: EDIT on {PROJECT} only (trains as it)"
    ctx.facts["access"] = "; ".join(f"{r.name} ({r.kind})" for r in rows)
    return f"{len(rows)} users; training logs in as {machine.user}"


@contextlib.contextmanager
def _as_repo(ctx: DemoContext) -> Iterator[None]:
    """Training logs in as the repository's machine identity, never as the admin, even if
    the shell exported the stack's admin settings."""
    from mlrig import contract
    from mlrig.core.access import identities
    from mlrig.core.stack import env as stack_env

    with stack_env.temporary_env(identities.repo_env(contract.load(ctx.stack), PROJECT)):
        yield


def _repro(ctx: DemoContext) -> str:
    from mlrig.adapters import dvc, git

    repo = ctx.repo
    with _as_repo(ctx):
        dvc.run_cli(repo, "repro", log=ctx.log)
    if not git.is_dirty(repo):  # a re-run on an unchanged repo trains nothing new
        return "ingest → validate → preprocess → train → evaluate (up to date)"
    # the commit that records this run's outputs (dvc.lock) is the one `mlrig checkout` restores
    commit = git.commit_all(repo, "Train the first model (dvc repro)")
    git.run(repo, "push", "--quiet", "origin", "HEAD:main")
    return f"ingest → validate → preprocess → train → evaluate, committed {commit[:8]} and pushed"


def _origin(ctx: DemoContext) -> str:
    """A bare repository beside the demo stands in for the team's git server (GitHub); set
    before training, so every run records where its commit can be fetched from."""
    from mlrig.adapters import git

    repo, origin = ctx.repo, ctx.workdir / f"{ctx.repo.name}.git"
    if not origin.exists():
        origin.mkdir(parents=True)
        git.run(origin, "init", "--quiet", "--bare", "--initial-branch=main")
    if git.run(repo, "remote", check=False).split().count("origin"):
        git.run(repo, "remote", "set-url", "origin", str(origin))
    else:
        git.run(repo, "remote", "add", "origin", str(origin))
    git.run(repo, "push", "--quiet", "origin", "HEAD:main")
    ctx.facts["git remote"] = str(origin)
    return f"origin = {origin}"


def _experiments(ctx: DemoContext) -> str:
    from mlrig.adapters import dvc, git

    repo = ctx.repo
    for setting in EXPERIMENTS:
        with _as_repo(ctx):
            dvc.run_cli(repo, "exp", "run", "-S", setting, log=ctx.log)
    shown = json.loads(dvc.run_cli(repo, "exp", "show", "--json", log=ctx.log))
    count = sum(len(commit.get("experiments") or []) for commit in shown)
    # `dvc exp run` leaves the last experiment applied to the workspace; the experiments live
    # on in their refs, so go back to the committed model (a re-run of the demo starts clean)
    git.run(repo, "checkout", "--", ".")
    dvc.run_cli(repo, "checkout", log=ctx.log)
    return f"{len(EXPERIMENTS)} experiments ({', '.join(EXPERIMENTS)}); {count} in exp show"


def _push_experiments(ctx: DemoContext) -> str:
    """Experiments live in local git refs until pushed: `dvc exp push` sends their commits to
    the git remote and their data to the DVC remote, so a teammate can restore them."""
    from mlrig.adapters import dvc

    dvc.run_cli(ctx.repo, "exp", "push", "--all-commits", "origin", log=ctx.log)
    return "experiments → origin (git refs) + DVC remote (data)"


def _push_data(ctx: DemoContext) -> str:
    from mlrig.adapters import dvc

    out = dvc.run_cli(ctx.repo, "push", log=ctx.log)
    return out.strip().splitlines()[-1] if out.strip() else "pushed"


def _best_model(ctx: DemoContext) -> str:
    from mlrig.adapters import mlflow
    from mlrig.core.image import build as image

    best: tuple[float, str] | None = None
    with image.tracking_env(ctx.stack):
        for mv in mlflow.model_versions(PROJECT, uri=f"models:/{PROJECT}"):
            if not mv.run_id:
                continue
            metric = mlflow.run_metric(mv.run_id, BEST_METRIC)
            if metric is not None and (best is None or metric > best[0]):
                best = (metric, mv.version)
    if best is None:
        raise StepFailed(
            f"no registered version of {PROJECT} has {BEST_METRIC}",
            hint="check the evaluate stage's log",
        )
    ctx.facts["model"] = f"models:/{PROJECT}/{best[1]} ({BEST_METRIC}={best[0]:.4f})"
    return ctx.facts["model"]


def _image_build(ctx: DemoContext) -> str:
    from mlrig.core.image import build as image

    uri = ctx.facts["model"].split(" ", 1)[0]
    built = image.build(uri, repo=ctx.repo, stack=ctx.stack, progress=ctx.log)
    ctx.facts["image"] = built.ref
    return f"{built.ref} ({built.size / 1e6:.0f} MB, {built.seconds:.1f}s)"


def _image_push(ctx: DemoContext) -> str:
    from mlrig import contract
    from mlrig.core.image import push as serving_push
    from mlrig.errors import Conflict

    try:
        result = serving_push.push(ctx.facts["image"], contract.load(ctx.stack), progress=ctx.log)
    except Conflict:
        # a run before this one pushed this version (e.g. its canary step, when the retrained
        # version is the best now): the registry's tags are immutable, and a rebuild is not
        # byte-identical, so the version's recorded push is read back and used instead
        from mlrig.core.deploy import endpoints

        uri = ctx.facts["model"].split(" ", 1)[0]
        target = endpoints.resolve(endpoints.Site.open(ctx.stack), uri)
        ctx.facts["pushed"], ctx.facts["digest"] = target.image, target.digest
        return f"{target.image} (pushed by an earlier run; verified)"
    ctx.facts["pushed"] = result.reference
    ctx.facts["digest"] = result.digest
    return f"{result.reference} (verified)"


def _image_smoke(ctx: DemoContext) -> str:
    from mlrig.core.image import build as image
    from mlrig.core.stack.local.stack import free_port

    running = image.run(ctx.facts["image"], port=free_port(), smoke=True)
    ctx.facts["predictions"] = json.dumps(running.smoke_predictions)
    return f"healthy in {running.seconds_to_healthy:.1f}s, predictions {running.smoke_predictions}"


def _trace(ctx: DemoContext) -> str:
    """From the pushed image back to its origin, and the one command that restores it."""
    from mlrig.core.provenance import trace

    record = trace.trace(ctx.facts["pushed"], stack=ctx.stack, repo=ctx.repo)
    if not record.restore_command:
        raise StepFailed(
            f"{ctx.facts['pushed']} cannot be restored: {record.code.reason}",
            hint="see `mlrig trace` for the whole record",
        )
    ctx.facts["restore"] = record.restore_command
    return record.summary()


def steps() -> list[Step]:
    from mlrig.core.demo import deploy as demo_deploy

    return [
        ("stack up", _stack_up),
        ("services answer", _services_answer),
        ("init repository", _init),
        ("access show", _access),
        ("git remote", _origin),
        ("dvc repro", _repro),
        ("dvc push", _push_data),
        ("dvc exp run", _experiments),
        ("dvc exp push", _push_experiments),
        *_leak_steps(),
        ("best model", _best_model),
        ("image build", _image_build),
        ("image push", _image_push),
        ("image run --smoke", _image_smoke),
        ("trace", _trace),
        ("deploy champion", demo_deploy.deploy_champion),
        ("keyed request", demo_deploy.keyed_request),
        *_retrain_steps(),
        ("canary", demo_deploy.canary),
        ("promote", demo_deploy.promote),
        ("rollback", demo_deploy.rollback),
        *_drift_steps(),
    ]


def _drift_steps() -> list[Step]:
    """The loop closes: captured traffic drifts, the monitor flags it, the trainer's schedule
    retrains and sends the new champion out as a canary."""
    from mlrig.core.demo import drift

    return [
        ("deploy --capture", drift.deploy_with_capture),
        ("shifted traffic", drift.shifted_traffic),
        ("mlrig monitor", drift.monitor),
        ("drift loop", drift.loop),
    ]


def _leak_steps() -> list[Step]:
    """Data over time: a feature from the future planted in a temporal repository is caught
    before train; the same repository without it trains."""
    from mlrig.core.demo import leak

    return [
        ("planted leak", leak.planted_leak),
        ("leak fixed: train", leak.fixed_pipeline),
    ]


def _retrain_steps() -> list[Step]:
    """New data, same code: rows arrive in the source, retrain, then retrain again."""
    from mlrig.core.demo import retrain as demo_retrain

    return [
        ("new rows arrive", demo_retrain.new_data),
        ("mlrig retrain", demo_retrain.retrain),
        ("retrain again", demo_retrain.retrain_again),
    ]


def default_log_file() -> Path:
    return paths.home() / "logs" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}.log"


def run(
    ctx: DemoContext,
    *,
    on_start: Callable[[str], None] = lambda _n: None,
    on_done: Callable[[StepResult], None] = lambda _r: None,
) -> list[StepResult]:
    results = []
    for name, fn in steps():
        on_start(name)
        ctx.log(f"== {name}")
        t0 = time.monotonic()
        try:
            detail = fn(ctx)
        except MlrigError as exc:
            ctx.log(f"FAILED: {exc.one_line()}")
            raise StepFailed(
                f"step '{name}' failed: {exc.message}",
                hint=f"{exc.hint + '; ' if exc.hint else ''}log: {ctx.log_file}",
            ) from exc
        except Exception as exc:
            ctx.log(f"FAILED: {type(exc).__name__}: {exc}")
            raise StepFailed(
                f"step '{name}' failed: {type(exc).__name__}: {exc}", hint=f"log: {ctx.log_file}"
            ) from exc
        result = StepResult(name, time.monotonic() - t0, detail)
        ctx.log(f"ok ({result.seconds:.1f}s): {detail}")
        results.append(result)
        on_done(result)
    summary = {"steps": [r.__dict__ for r in results], "facts": ctx.facts, "log": str(ctx.log_file)}
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    (ctx.workdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return results
