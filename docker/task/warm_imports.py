"""Byte-code for what a remote retrain's task imports, written where PYTHONPYCACHEPREFIX points:
run last at the trainer image's build.

    python warm_imports.py REQUIREMENTS MODULES

Imports the top-level modules of each distribution REQUIREMENTS names, then each module
MODULES lists (one per line, `#` comments): the entrypoint's and what the template's stages
import. Importing (rather than compiling whole packages) writes byte-code for exactly what
those imports load, their dependencies' modules included (scikit-learn's model selection loads
some 440 of SciPy's), and nothing they never load. DVC loads most of its modules only when a
repository is opened, so it is then run as the task runs it, through its Python API, in a
scratch git repository: a stage reproduced, pushed to a folder remote, pulled back.
A module that fails to import is skipped: byte-code only saves time, so this step never fails
the build, and it stops warming after TIME_LIMIT seconds. One summary line on stderr.
"""

import contextlib
import functools
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from importlib.metadata import packages_distributions

NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
TIME_LIMIT = 600
DVC_STEP = "a DVC repository's round trip"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def modules_of(requirements: str, listed: str) -> list[str]:
    """The top-level modules of the distributions requirements names, then the listed ones,
    each once, in order; names that are not module names are dropped."""
    with open(requirements) as fh:
        wanted = {canonical(m.group(1)) for m in map(NAME.match, fh) if m}
    tops = sorted(
        top
        for top, dists in packages_distributions().items()
        if any(canonical(d) in wanted for d in dists) and not top.startswith("_")
    )
    with open(listed) as fh:
        extra = [line.split("#", 1)[0].strip() for line in fh]
    seen: dict[str, None] = {}
    for name in [*tops, *extra]:
        if MODULE.match(name):
            seen.setdefault(name)
    return list(seen)


class _OutOfTime(Exception):
    pass


def _out_of_time(_signum: int, _frame: object) -> None:
    raise _OutOfTime


def exercise_dvc() -> None:
    """Open, reproduce, push and pull a scratch DVC repository with DVC's API (what the task
    does to the repository it clones), for the byte-code of the modules that loads."""
    from dvc.repo import Repo

    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        root, remote = os.path.join(tmp, "repo"), os.path.join(tmp, "remote")
        os.makedirs(root)
        git = ["git", "-C", root, "-c", "user.name=mlrig", "-c", "user.email=mlrig@localhost"]
        subprocess.run([*git, "init", "-q"], check=True)
        with open(os.path.join(root, "in.txt"), "w") as fh:
            fh.write("rows\n")
        repo = Repo.init(root)
        os.chdir(root)
        repo.stage.add(name="copy", cmd="cp in.txt out.txt", deps=["in.txt"], outs=["out.txt"])
        with repo.config.edit() as conf:
            conf["remote"]["storage"] = {"url": remote}
            conf["core"]["remote"] = "storage"
        repo.reproduce()
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", "warm"], check=True)
        repo.push()
        repo.close()
        os.remove(os.path.join(root, "out.txt"))
        shutil.rmtree(os.path.join(root, ".dvc", "cache"))  # pulled back from the remote
        with Repo(root) as again:
            again.pull()
            again.status()


def warm(names: list[str]) -> tuple[int, list[str]]:
    """(modules imported, steps that failed) before the time limit: each module, then DVC's
    round trip when a requirement brought DVC in."""
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(TIME_LIMIT)
    steps = [(name, functools.partial(importlib.import_module, name)) for name in names]
    steps.append((DVC_STEP, exercise_dvc))
    done, failed = 0, []
    with open(os.devnull, "w") as null:
        for what, step in steps:
            if what == DVC_STEP and "dvc" not in sys.modules:
                break
            try:
                with contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                    step()
                done += what != DVC_STEP
            except _OutOfTime:
                failed.append(f"{what} (out of time)")
                break
            except BaseException:  # noqa: BLE001 - SystemExit too: a module may exit on import
                failed.append(what)
    signal.alarm(0)
    return done, failed


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: warm_imports.py REQUIREMENTS MODULES", file=sys.stderr)
        return 2
    names = modules_of(argv[0], argv[1])
    done, failed = warm(names)
    print(
        f"byte-code: {done} of {len(names)} modules imported"
        + (f"; skipped {', '.join(failed)}" if failed else ""),
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)  # a module may have started a thread that would keep the build waiting
