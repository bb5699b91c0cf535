"""git behind one door: the `git` program (what users have), errors turned into mlrig's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from mlrig.errors import Conflict, DependencyMissing, ServiceError, UsageError

# Used only when the user has no identity configured, so `init` can still commit.
FALLBACK_NAME = "mlrig"
FALLBACK_EMAIL = "mlrig@localhost"


def require() -> str:
    exe = shutil.which("git")
    if exe is None:
        raise DependencyMissing(
            "git is not on PATH", hint="install git (e.g. `apt-get install git`) and retry"
        )
    return exe


def run(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run git in cwd and return stdout; a failure becomes a ServiceError with git's words."""
    proc = subprocess.run(
        [require(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ServiceError(f"`git {args[0]}` failed in {cwd}: {last[0]}")
    return proc.stdout


def init(path: Path, branch: str = "main") -> None:
    run(path, "init", "--quiet", f"--initial-branch={branch}")


def is_repo(path: Path) -> bool:
    if shutil.which("git") is None:
        return False
    proc = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=path, capture_output=True, text=True
    )
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def toplevel(path: Path) -> Path:
    return Path(run(path, "rev-parse", "--show-toplevel").strip())


def head(path: Path) -> str:
    return run(path, "rev-parse", "HEAD").strip()


def _identity_env(path: Path) -> dict[str, str]:
    """Author/committer from git config if set, else a fallback, so commits never fail."""
    env: dict[str, str] = {}
    for key, var in (("user.name", "NAME"), ("user.email", "EMAIL")):
        if not run(path, "config", "--get", key, check=False).strip():
            value = FALLBACK_NAME if var == "NAME" else FALLBACK_EMAIL
            env.setdefault(f"GIT_AUTHOR_{var}", os.environ.get(f"GIT_AUTHOR_{var}", value))
            env.setdefault(f"GIT_COMMITTER_{var}", os.environ.get(f"GIT_COMMITTER_{var}", value))
    return env


def _mlrig_identity() -> dict[str, str]:
    return {
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", FALLBACK_NAME), ("EMAIL", FALLBACK_EMAIL))
    }


def commit_all(path: Path, message: str, *, as_mlrig: bool = False) -> str:
    """Stage everything (respecting .gitignore) and commit; return the new commit.

    as_mlrig commits as mlrig itself, even when nothing changed: for the history mlrig
    keeps for its own use (template versions), which no user authored.
    """
    run(path, "add", "--all")
    env = _mlrig_identity() if as_mlrig else _identity_env(path)
    extra = ["--allow-empty"] if as_mlrig else []
    run(path, "commit", "--quiet", "--no-verify", *extra, "-m", message, env=env)
    return head(path)


def tag(path: Path, name: str) -> None:
    run(path, "tag", name)


def describe(path: Path) -> str:
    return run(path, "describe", "--tags", "--always").strip()


def tags(path: Path) -> list[str]:
    return run(path, "tag", "--list").split()


def is_dirty(path: Path) -> bool:
    return bool(run(path, "status", "--porcelain").strip())


def require_clean(path: Path, action: str) -> None:
    if is_dirty(path):
        raise Conflict(
            f"{path} has uncommitted changes, refusing to {action}",
            hint="commit or stash them first (`git status` shows them)",
        )


def changed_files(path: Path) -> list[str]:
    """Paths with uncommitted changes or untracked, as `git status` lists them."""
    return sorted({line[3:] for line in run(path, "status", "--porcelain").splitlines()})


def unmerged_files(path: Path) -> list[str]:
    """Paths git records as conflicted (what copier marks after an inline 3-way merge)."""
    out = run(path, "diff", "--name-only", "--diff-filter=U")
    return sorted(set(out.split()))


# -- reading history (provenance: which commit recorded a run) ----------------------------------
def commit_of(path: Path, ref: str) -> str | None:
    """The commit `ref` names in the repo at path, or None when it names none."""
    out = run(
        path,
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        f"{ref}^{{commit}}",
        check=False,
    )
    return out.strip() or None


def check_ref_format(ref: str) -> bool:
    """`git check-ref-format ref`: git's own rules for a ref name (no `..`, `@{`, ...). The
    command takes no `--`: a ref starting with `-` is refused before git sees it."""
    if ref.startswith("-"):
        return False
    proc = subprocess.run([require(), "check-ref-format", ref], capture_output=True)
    return proc.returncode == 0


def refs(path: Path, prefix: str) -> dict[str, str]:
    """{ref name: commit} of every ref under prefix (e.g. refs/exps)."""
    out = run(path, "for-each-ref", "--format=%(refname) %(objectname)", prefix, check=False)
    pairs = (line.split(" ", 1) for line in out.splitlines() if " " in line)
    return {name: sha for name, sha in pairs}


def log_path(path: Path, file: str) -> list[str]:
    """Commits of every ref that changed file, newest first (`git log --all -- file`)."""
    return run(path, "log", "--all", "--format=%H", "--", file, check=False).split()


def remote_url(path: Path, name: str = "origin") -> str | None:
    return run(path, "remote", "get-url", name, check=False).strip() or None


# A remote read from a run's tags reaches git only through these: `--` before it, the transports
# limited to https and ssh (and file for an absolute local path: the local stack's bare origin),
# no prompt for a credential. `ext::`, `fd::`, `http://`, `git://` fail inside git itself.
_NO_PROMPT = {"GIT_TERMINAL_PROMPT": "0"}  # a missing credential fails instead of waiting


def _protocols(remote: str) -> list[str]:
    """`-c` options allowing only the transport remote needs: https and ssh for a URL or
    user@host:path, file too for an absolute path. A configured remote's name (`origin`,
    the user's own choice) keeps git's defaults."""
    if "/" not in remote and ":" not in remote:
        return []
    allow = ["-c", "protocol.allow=never"]
    allow += ["-c", "protocol.https.allow=always", "-c", "protocol.ssh.allow=always"]
    if remote.startswith("/"):
        allow += ["-c", "protocol.file.allow=always"]
    return allow


def _remote_git(cwd: Path, remote: str, *args: str) -> bool:
    """git with the transports remote needs, no prompt; False when it fails."""
    proc = subprocess.run(
        [require(), *_protocols(remote), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **_NO_PROMPT},
    )
    return proc.returncode == 0


def fetch_ref(path: Path, remote: str, ref: str, *, keep: bool = False) -> bool:
    """Fetch ref's commits from remote (a URL the caller validated, or a configured remote's
    name) into the repo at path; False when the remote or the ref is not there. Only the
    objects land, no ref or FETCH_HEAD changes: keep=True also stores ref under its own name,
    for mlrig's own clones (never a user's repository)."""
    refspec = f"+{ref}:{ref}" if keep else ref
    fetch = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"]
    return _remote_git(path, remote, *fetch, "--", remote, refspec)


def show_files(path: Path, specs: list[str]) -> dict[str, bytes | None]:
    """{"<commit>:<file>": content or None when absent} for many files in one git call."""
    # a line break would be read as the next request: such a spec names no file
    asked = [s for s in dict.fromkeys(specs) if "\n" not in s]
    if not asked:
        return dict.fromkeys(specs)
    proc = subprocess.run(
        [require(), "cat-file", "--batch"],
        cwd=path,
        input="".join(f"{s}\n" for s in asked).encode(),
        capture_output=True,
    )
    if proc.returncode != 0:
        raise ServiceError(f"`git cat-file` failed in {path}: {proc.stderr.decode()[-200:]}")
    found: dict[str, bytes | None] = dict.fromkeys(specs)
    out, pos = proc.stdout, 0
    for spec in asked:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) == 3 and header[1] in (b"blob", b"tree", b"commit", b"tag"):
            size = int(header[2])
            found[spec] = out[pos : pos + size] if header[1] == b"blob" else None
            pos += size + 1
        else:  # "<spec> missing" / "ambiguous"
            found[spec] = None
    return found


# -- workspaces (checkout: a second working tree, never the user's own) -----------------------
def worktree_add(repo: Path, into: Path, sha: str) -> None:
    """`git worktree add --detach into sha`: a new working tree of repo at sha; the user's
    own working tree, index and HEAD stay as they are. --force: a folder the user deleted
    by hand is still registered as a worktree, and would otherwise refuse its path."""
    run(repo, "worktree", "add", "--quiet", "--force", "--detach", "--", str(into), _sha(sha))


def worktree_remove(repo: Path, into: Path) -> None:
    """Undo worktree_add (best effort: the caller removes what is left of the folder)."""
    run(repo, "worktree", "remove", "--force", str(into), check=False)
    run(repo, "worktree", "prune", check=False)


def _sha(sha: str) -> str:
    """A commit's full hex name, refused otherwise (it is handed to git as a revision)."""
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        raise UsageError(f"{sha[:80]!r} is not a commit's full hash")
    return sha


def clone(url: str, into: Path) -> None:
    """`git clone --no-checkout url into` (check out a commit with checkout_detached); url
    is one the caller validated. --no-local: a local path is read through git's transport,
    as a server would be, not by copying or hard-linking its files."""
    into.parent.mkdir(parents=True, exist_ok=True)
    args = ["clone", "--quiet", "--no-checkout", "--no-local", "--", url, str(into)]
    if not _remote_git(into.parent, url, *args):
        raise ServiceError(f"`git clone` of {url} failed", hint="check the remote and your access")


def checkout_detached(path: Path, sha: str) -> None:
    run(path, "checkout", "--quiet", "--detach", _sha(sha))


def mirror(url: str, into: Path) -> bool:
    """A bare mirror of url at `into` (every ref, experiments included), made or refreshed;
    False when the remote cannot be read (offline, no credentials, gone). url is one the
    caller validated; the refresh fetches from it, not from whatever `into`'s config says."""
    import tempfile

    if (into / "HEAD").is_file():
        return _remote_git(into, url, "fetch", "--quiet", "--prune", "--", url, "+refs/*:refs/*")
    into.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=into.parent, prefix=".mirror-") as tmp:
        args = ["clone", "--quiet", "--mirror", "--no-local", "--", url, f"{tmp}/m.git"]
        if not _remote_git(into.parent, url, *args):
            return False
        try:
            os.replace(f"{tmp}/m.git", into)  # atomic: a concurrent trace sees all or nothing
        except OSError:
            return (into / "HEAD").is_file()  # another process made it first
    return True


# -- retraining: put a repository back exactly as a run found it --------------------------------
def current_branch(path: Path) -> str | None:
    """The checked-out branch, or None on a detached HEAD."""
    out = run(path, "symbolic-ref", "--quiet", "--short", "HEAD", check=False).strip()
    return out or None


def untracked_files(path: Path) -> list[str]:
    """Untracked paths git does not ignore (what a clean work tree has none of)."""
    out = run(path, "ls-files", "--others", "--exclude-standard", "-z")
    return [p for p in out.split("\0") if p]


def reset_to(path: Path, sha: str) -> None:
    """The current branch, index and tracked files back to sha (`git reset --hard sha`)."""
    run(path, "reset", "--quiet", "--hard", sha)


def push_branch(path: Path, branch: str, remote: str = "origin") -> None:
    run(path, "push", "--quiet", remote, f"HEAD:refs/heads/{branch}", env=_NO_PROMPT)


def is_branch_name(path: Path, name: str) -> bool:
    """Whether name is a branch name git accepts and no option in disguise (`--foo`)."""
    if not name or name.startswith("-") or any(c.isspace() or ord(c) < 32 for c in name):
        return False
    proc = subprocess.run(
        [require(), "check-ref-format", f"refs/heads/{name}"],
        cwd=path,
        capture_output=True,
        text=True,
    )
    return proc.returncode == 0


def changed_tracked_files(path: Path, since: str = "HEAD") -> list[str]:
    """Tracked paths whose index or work-tree content differs from commit `since`."""
    out = run(path, "diff", "--name-only", "--no-renames", "-z", since, "--")
    return [p for p in out.split("\0") if p]


def files_between(path: Path, old: str, new: str) -> list[str]:
    """Paths that differ between two commits (`git diff --name-only old new`)."""
    out = run(path, "diff", "--name-only", "--no-renames", "-z", old, new, "--")
    return [p for p in out.split("\0") if p]


def commit_paths(path: Path, message: str, paths: list[str]) -> str:
    """Stage and commit exactly these paths (changed, new or deleted), nothing else the
    work tree or index holds; return the new commit."""
    literal = {"GIT_LITERAL_PATHSPECS": "1"}  # a path is a name, never a glob
    run(path, "add", "--all", "--", *paths, env=literal)
    env = {**_identity_env(path), **literal}
    run(path, "commit", "--quiet", "--no-verify", "-m", message, "--only", "--", *paths, env=env)
    return head(path)


# -- remote retrain: the submitted commit and the run's result travel as bundles -------------
def bundle_create(path: Path, out: Path, revisions: list[str]) -> None:
    """`git bundle create out REVISIONS`: the commits `revisions` reach (a range's base is a
    prerequisite the receiver must hold)."""
    run(path, "bundle", "create", "--quiet", str(out), *revisions)


def bundle_heads(path: Path, bundle: Path) -> dict[str, str]:
    """{ref: sha} a bundle holds, once `git bundle verify` found its prerequisites in the
    repository at path; ServiceError when it is no bundle or they are missing."""
    run(path, "bundle", "verify", "--quiet", str(bundle))
    heads: dict[str, str] = {}
    for line in run(path, "bundle", "list-heads", str(bundle)).splitlines():
        sha, _, ref = line.partition(" ")
        heads[ref.strip()] = sha.strip()
    return heads


def fetch_bundle(path: Path, bundle: Path, ref: str) -> None:
    """The objects of `ref` in a bundle, into the repository at path (no ref changes)."""
    run(path, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", str(bundle), ref)


def checkout_branch(path: Path, branch: str, sha: str) -> None:
    """`git checkout -B branch sha`: the branch (made or moved) at that commit, checked out."""
    run(path, "checkout", "--quiet", "-B", branch, _sha(sha), "--")


def set_remote_url(path: Path, name: str, url: str | None) -> None:
    """Point remote `name` at url (one the caller validated), or remove it (None)."""
    if url is None:
        run(path, "remote", "remove", name, check=False)
    else:
        run(path, "remote", "set-url", name, url)


def set_config(path: Path, key: str, value: str) -> None:
    run(path, "config", key, value)


def fast_forward(path: Path, sha: str) -> None:
    """Move the checked-out branch to sha, a descendant of HEAD (index and files follow)."""
    run(path, "merge", "--quiet", "--ff-only", _sha(sha))


def config_value(path: Path, key: str) -> str | None:
    return run(path, "config", "--get", key, check=False).strip() or None


def author(path: Path) -> tuple[str, str] | None:
    """(name, email) git would author a commit in path with (GIT_AUTHOR_* first, then the
    configuration), or None when it has none."""
    ident = run(path, "var", "GIT_AUTHOR_IDENT", check=False).strip()
    match = re.fullmatch(r"(.*?) <([^<>]*)> \d+ [+-]\d{4}", ident)
    return (match[1], match[2]) if match and match[1] and match[2] else None
