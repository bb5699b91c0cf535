"""What a retrain saves before it touches anything, and how the repository is put back.

The saved state is a marker file under `.dvc/tmp/` (git ignores it, `dvc checkout` leaves
it): the commit and branch the run started from, and which version the registered model's
`champion` alias pointed at. It is written before the pipeline starts and removed only when
the run is complete (or undone), so a run killed at any point leaves it behind and
`recover` can finish the undo.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mlrig.adapters import dvc, git
from mlrig.adapters.mlflow_rest import MlflowRest
from mlrig.errors import MlrigError

MARKER = Path(".dvc/tmp/mlrig-retrain.json")
LOG = Path(".dvc/tmp/mlrig-retrain.log")
ALIAS = "champion"

RUNNING = "running"  # nothing is published yet: undo everything
PUBLISHED = "published"  # the commit reached the git remote: the run is complete


@dataclass
class SavedState:
    pid: int
    head: str
    branch: str
    model: str
    champion: str | None  # the version @champion named before the run, None: no alias
    started: float
    phase: str = RUNNING
    commit: str | None = None  # the run's own commit, once made
    # False until the first stage that may touch the registry starts: `champion` is read
    # then, so a run where only ingest runs (nothing new) never asks MLflow
    champion_known: bool = True

    def save(self, repo: Path) -> None:
        path = repo / MARKER
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        os.replace(tmp, path)  # a kill leaves the old marker or the new one, never half


def load(repo: Path) -> SavedState | None:
    try:
        raw = json.loads((repo / MARKER).read_text())
        return SavedState(**raw)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise MlrigError(
            f"{repo / MARKER} is not a retrain marker mlrig can read ({type(exc).__name__})",
            hint="check `git status` and the champion alias by hand, then delete the file",
        ) from exc


def clear(repo: Path) -> None:
    (repo / MARKER).unlink(missing_ok=True)


def new(repo: Path, *, head: str, branch: str, model: str, champion: str | None) -> SavedState:
    return SavedState(os.getpid(), head, branch, model, champion, time.time())


def alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def restore(repo: Path, saved: SavedState, rest: MlflowRest | None, log: object = None) -> None:
    """Put the repository and the alias back as `saved` recorded them: branch and tracked
    files at the saved commit, files the run created removed, DVC outputs matching the
    saved dvc.lock, `champion` on its old version (or gone, if there was none)."""
    say = log if callable(log) else (lambda _m: None)
    git.reset_to(repo, saved.head)
    # the work tree was clean when the run started: untracked files are the run's. A
    # .gitignore the run made (DVC writes one beside each output) hides the files it lists
    # until it is gone, so look again after each round
    while made := git.untracked_files(repo):
        for rel in made:
            (repo / rel).unlink(missing_ok=True)
    if (repo / "dvc.lock").exists():  # else no stage had run: nothing to check out
        try:
            dvc.checkout(repo)
        except MlrigError as exc:  # outputs the cache no longer holds: `dvc pull` brings them
            say(f"dvc checkout after the undo: {exc.message.splitlines()[0]}")
    if rest is not None and saved.champion_known:
        now = rest.champion(saved.model, ALIAS)
        if now != saved.champion:
            if saved.champion is None:
                rest.delete_alias(saved.model, ALIAS)
            else:
                rest.set_alias(saved.model, ALIAS, saved.champion)
            say(f"@{ALIAS} moved back to {saved.champion or '(none)'} from {now}")
    say(f"repository back at {saved.head[:12]}")
