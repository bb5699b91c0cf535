"""DVC behind one door: its Python API (`dvc.repo.Repo`), imported lazily.

Only repository set-up lives here (init, config, remote, add); running the pipeline is the
generated repository's business and happens through the `dvc` program.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mlrig.errors import ConfigError, DependencyMissing, ServiceError

REMOTE_NAME = "storage"


def _repo_cls() -> Any:
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")  # before DVC reads its config
    try:
        from dvc.repo import Repo
    except ImportError as exc:  # pragma: no cover - a hard dependency
        raise DependencyMissing("dvc is not installed", hint="pip install 'dvc[s3]'") from exc
    return Repo


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """DVC prints getting-started hints (stdout and its logger); mlrig renders its own."""
    import logging

    from dvc.ui import ui

    log = logging.getLogger("dvc")
    level, enabled = log.level, ui._enabled
    log.setLevel(logging.WARNING)
    ui._enabled = False
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        log.setLevel(level)
        ui._enabled = enabled


def _translate(exc: Exception, action: str) -> ServiceError:
    return ServiceError(f"dvc: {action} failed: {exc}")


def init(root: Path) -> None:
    """`dvc init` inside an existing git repo, with analytics and update checks off."""
    from dvc.exceptions import DvcException

    repo_cls = _repo_cls()
    try:
        with _quiet():
            repo = repo_cls.init(str(root))
        with repo.config.edit("repo") as conf:
            conf["core"]["analytics"] = False
            conf["core"]["check_update"] = False
        repo.close()
    except DvcException as exc:
        raise _translate(exc, "init") from exc


def add_remote(
    root: Path, url: str, local_options: Mapping[str, str], name: str = REMOTE_NAME
) -> None:
    """Default remote `name` -> url in .dvc/config; endpoints/credentials only in config.local.

    The local options are written under the same remote name in the git-ignored
    .dvc/config.local, which DVC merges over .dvc/config.
    """
    from dvc.exceptions import DvcException

    try:
        with _repo_cls()(str(root)) as repo:
            # Clear first: DVC validates the merged config, and a previous stack's
            # endpointurl is invalid for, say, a local-directory url.
            with repo.config.edit("local") as conf:
                conf["remote"].pop(name, None)
            with repo.config.edit("repo") as conf:
                conf["remote"][name] = {"url": url}
                conf["core"]["remote"] = name
            if local_options:
                with repo.config.edit("local") as conf:
                    conf["remote"][name] = dict(local_options)
    except DvcException as exc:
        raise _translate(exc, f"configuring remote {name}") from exc


def add(root: Path, *targets: str) -> None:
    """`dvc add`: hash into the cache, write the .dvc files and .gitignore entries."""
    from dvc.exceptions import DvcException

    try:
        with _repo_cls()(str(root)) as repo, _quiet():
            repo.add([str(root / t) for t in targets])
    except DvcException as exc:
        raise _translate(exc, f"add {' '.join(targets)}") from exc


def is_repo(root: Path) -> bool:
    return (root / ".dvc").is_dir()


def run_cli(
    root: Path,
    *args: str,
    log: Any = None,
    timeout: float = 900,
    extra_env: Mapping[str, str] | None = None,
) -> str:
    """Run the `dvc` program of this environment in root (pipeline commands: repro, exp,
    push) with the environment's bin dir first on PATH so stages find the same Python;
    extra_env is added to the stages' environment."""
    import subprocess
    import sys

    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        **(extra_env or {}),
    }
    try:
        proc = subprocess.run(
            [str(Path(bin_dir) / "dvc"), *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"dvc {' '.join(args)} timed out after {timeout:.0f}s") from exc
    if log is not None:
        log(f"$ dvc {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        raise ServiceError(f"dvc {' '.join(args)} failed: {lines[-1] if lines else 'no output'}")
    return proc.stdout


def config_remotes(text: str) -> tuple[str | None, dict[str, str]]:
    """(default remote name, {remote name: url}) of a .dvc/config file's text (DVC writes
    INI sections like `['remote "storage"']`); an unreadable file has no remotes."""
    import configparser

    conf = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        conf.read_string(text)
    except configparser.Error:
        return None, {}
    urls: dict[str, str] = {}
    for section in conf.sections():
        name = section.strip("'\"").removeprefix("remote").strip().strip("'\"")
        if section.strip("'\"").startswith("remote") and conf[section].get("url"):
            urls[name] = conf[section]["url"]
    default = conf["core"].get("remote") if conf.has_section("core") else None
    return default or None, urls


# -- a restored workspace (checkout) ------------------------------------------------------------
def set_local_remote(
    root: Path, url: str, options: Mapping[str, str], name: str = REMOTE_NAME
) -> None:
    """Make `name` -> url (with options) the default remote in the git-ignored
    .dvc/config.local only: the committed .dvc/config, and so `git status`, stay as they are."""
    from dvc.exceptions import DvcException

    try:
        with _repo_cls()(str(root)) as repo, repo.config.edit("local") as conf:
            conf["remote"][name] = {"url": url, **dict(options)}
            conf["core"]["remote"] = name
    except DvcException as exc:
        raise _translate(exc, f"configuring remote {name}") from exc


def pull(root: Path) -> tuple[int, list[str]]:
    """`dvc pull` in root: (files fetched from the remote, paths relative to root that DVC
    could not materialise because neither the cache nor the remote has them). Any other
    failure (remote unreachable, bad config) raises ServiceError.

    A directory out missing one of its files fails DVC's fetch as a whole (DownloadError,
    which names nothing); what did arrive is then checked out, and the outs that could not
    be are the missing ones (the files fetched then count those checked out)."""
    import logging

    from dvc.exceptions import CheckoutError, DownloadError, DvcException

    # the missing files are the caller's to report; dvc_data logs them with no handler set
    loggers = [logging.getLogger(name) for name in ("dvc", "dvc_data")]
    levels = [log.level for log in loggers]

    def missing_of(exc: CheckoutError) -> list[str]:
        base = Path.cwd()
        return sorted(os.path.relpath(base / str(t), root) for t in exc.target_infos)

    try:
        with _repo_cls()(str(root)) as repo, _quiet():
            for log in loggers:
                log.setLevel(logging.CRITICAL)
            try:
                result = repo.pull()
            except DownloadError:
                try:
                    done = repo.checkout()
                except CheckoutError as exc:
                    return len(exc.result.get("added") or ()), missing_of(exc)
                return len(done.get("added") or ()), []
    except CheckoutError as exc:
        return int(exc.result.get("stats", {}).get("fetched", 0)), missing_of(exc)
    except DvcException as exc:
        raise _translate(exc, "pull") from exc
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
    return int((result.get("stats") or {}).get("fetched", 0)), []


def status(root: Path) -> dict[str, Any]:
    """`dvc status`: {stage or file: [changes]}; empty when the workspace matches dvc.lock."""
    from dvc.exceptions import DvcException

    try:
        with _repo_cls()(str(root)) as repo, _quiet():
            found = dict(repo.status())
    except DvcException as exc:
        raise _translate(exc, "status") from exc
    return {_from_root(key, root): changes for key, changes in found.items()}


def _from_root(key: str, root: Path) -> str:
    """DVC names stages and .dvc files relative to the current directory
    (`../ws/dvc.yaml:train`); name them as from root (`train`, `data/raw.csv.dvc`)."""
    path, colon, stage = key.rpartition(":")
    if colon and path:
        rel = os.path.relpath(Path.cwd() / path, root)
        return stage if rel == "dvc.yaml" else f"{rel}:{stage}"
    return os.path.relpath(Path.cwd() / key, root)


# -- retraining: the pipeline run in-process (one Python, no `dvc` program start-up) -------------
def reproduce(
    root: Path, log_file: Path, on_stage: Callable[[str], None] = lambda _s: None
) -> None:
    """`dvc repro --no-run-cache` in root with DVC's Python API. Every stage command's output
    goes to log_file, so callers keep their stdout for their own answer; on_stage hears DVC's
    "Running stage 'NAME'" as each starts. A failing stage raises StageFailed naming it, with
    the last line the stage printed."""
    import logging

    from dvc.exceptions import DvcException, ReproductionError

    log_file.parent.mkdir(parents=True, exist_ok=True)
    start = log_file.stat().st_size if log_file.exists() else 0
    log = logging.getLogger("dvc")
    level = log.level
    announce = _StageHandler(on_stage)
    with _fds_to(log_file):
        try:
            log.setLevel(logging.INFO)  # DVC announces each stage at INFO
            log.addHandler(announce)
            with contextlib.chdir(root), _repo_cls()(str(root)) as repo:
                repo.reproduce(run_cache=False)  # targets are read from the cwd
        except ReproductionError as exc:
            stage = _failed_stage(str(exc))
            raise StageFailed(stage, _last_line(log_file, start) or str(exc)) from exc
        except DvcException as exc:
            raise StageFailed("dvc repro", str(exc).splitlines()[0] if str(exc) else "") from exc
        finally:
            log.removeHandler(announce)
            log.setLevel(level)


class _StageHandler(logging.Handler):
    def __init__(self, on_stage: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.on_stage = on_stage

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Running stage") and record.args:
            self.on_stage(str(record.args[0]) if isinstance(record.args, tuple) else "")


class StageFailed(ServiceError):
    """A pipeline stage (or DVC itself) failed; `stage` names it, `reason` is its last word."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"stage '{stage}' failed: {reason}")
        self.stage, self.reason = stage, reason


def _failed_stage(message: str) -> str:
    import re

    found = re.findall(r"'([^']+)'", message)
    return found[0].rsplit(":", 1)[-1] if found else "dvc repro"


def _last_line(log_file: Path, start: int) -> str:
    """The last line a stage printed (its error), DVC's own ERROR/WARNING lines left out."""
    with log_file.open("rb") as fh:
        fh.seek(start)
        text = fh.read().decode("utf-8", "replace")
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip() and not ln.lstrip().startswith(("ERROR:", "WARNING:", "Running stage"))
    ]
    return lines[-1][:300] if lines else ""


@contextlib.contextmanager
def _fds_to(log_file: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 (what stage commands inherit) at log_file; Python's
    own sys.stderr keeps writing where it did (the caller's progress lines)."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    python_stderr = sys.stderr
    try:  # a symlink planted at the log's path would have the stages write through it
        log_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        for kept in saved:
            os.close(kept)
        raise ConfigError(
            f"cannot write the pipeline's log {log_file}: {exc.strerror}",
            hint="remove what is at that path (a symlink is never followed) and retry",
        ) from None
    with os.fdopen(log_fd, "ab") as fh, open(saved[1], "w", closefd=False, buffering=1) as err:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        sys.stderr = err
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stderr = python_stderr
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def push(root: Path) -> int:
    """`dvc push` in root: the number of files sent to the default remote."""
    from dvc.exceptions import DvcException

    try:
        with contextlib.chdir(root), _repo_cls()(str(root)) as repo, _quiet():
            return int(repo.push() or 0)
    except DvcException as exc:
        raise _translate(exc, "push") from exc


def checkout(root: Path) -> None:
    """`dvc checkout --force`: the workspace's outputs back to what dvc.lock records."""
    import logging

    from dvc.exceptions import DvcException

    log = logging.getLogger("dvc")
    level = log.level
    try:
        with contextlib.chdir(root), _repo_cls()(str(root)) as repo, _quiet():
            log.setLevel(logging.CRITICAL)  # each missing file is in the exception too
            repo.checkout(force=True)
    except DvcException as exc:
        raise _translate(exc, "checkout") from exc
    finally:
        log.setLevel(level)


# -- objects read straight from a remote (monitor's reference) ----------------------------------
def _fs(url: str, options: Mapping[str, str]) -> tuple[Any, str]:
    """(a DVC filesystem for url with the remote's options, the path inside it)."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    from dvc.fs import get_cloud_fs

    cls, conf, root = get_cloud_fs({}, url=url, **dict(options))
    return cls(**conf), root


def read_object(url: str, options: Mapping[str, str], md5: str) -> bytes | None:
    """The bytes a DVC remote at url holds for md5 (DVC 3's files/md5/ layout, then 2's), or
    None when it has no such object; a directory's manifest is md5 `<32 hex>.dir`. A remote
    that cannot be reached raises ServiceError."""
    hexpart = md5.removesuffix(".dir")
    if not (len(hexpart) == 32 and all(c in "0123456789abcdef" for c in hexpart)):
        return None  # the caller validated it; never a path made of anything else
    if "://" not in url and not options:  # a local directory: read it without importing DVC
        for layout in (f"files/md5/{md5[:2]}/{md5[2:]}", f"{md5[:2]}/{md5[2:]}"):
            try:
                return (Path(url) / layout).read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ServiceError(
                    f"the DVC remote {url} could not be read ({type(exc).__name__})"
                ) from exc
        return None
    try:
        fs, root = _fs(url, options)
        for layout in (f"files/md5/{md5[:2]}/{md5[2:]}", f"{md5[:2]}/{md5[2:]}"):
            path = fs.join(root, layout) if hasattr(fs, "join") else f"{root}/{layout}"
            try:
                with fs.open(path, "rb") as fh:
                    return bytes(fh.read())
            except FileNotFoundError:
                continue
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - any backend's failure, as one line
        raise ServiceError(
            f"the DVC remote {url} could not be read ({type(exc).__name__})",
            hint="check the stack's DVC remote: `mlrig doctor`",
        ) from exc
    return None


def read_url(url: str, limit: int) -> bytes:
    """A file at a URL one of DVC's filesystems reads (s3://, gs://, https://, …), at most
    limit bytes. Missing: ConfigError; unreachable: ServiceError."""
    try:
        fs, path = _fs(url, {})
        with fs.open(path, "rb") as fh:
            data = bytes(fh.read(limit + 1))
    except FileNotFoundError:
        raise ConfigError(f"{url} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - any backend's failure, as one line
        raise ServiceError(f"{url} could not be read ({type(exc).__name__})") from exc
    if len(data) > limit:
        raise ConfigError(f"{url} is larger than {limit >> 20} MiB")
    return data
