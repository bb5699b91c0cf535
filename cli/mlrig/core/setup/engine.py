"""Make a Docker engine and a Python base image available, on any machine of ours.

- Engine: use the one that answers; otherwise (as root) start Debian's dockerd in a
  sandbox-safe way: no iptables or masquerading changes. Containers use host networking.
- Base image: `python:3.11-slim` when it can be pulled; otherwise build an equivalent from
  Debian packages with mmdebstrap (python3, venv, pip, CA certificates incl. the host's
  extra ones) and import it, then record it as the base image to use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mlrig import paths, settings
from mlrig.adapters import docker as docker_adapter
from mlrig.adapters import processes
from mlrig.core.shared.progress import Progress
from mlrig.errors import DependencyMissing, ServiceError
from mlrig.wait import Abandoned, WaitTimeout, wait_until

ENGINE_START_TIMEOUT = 60.0
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
# bump when mmdebstrap_argv changes, so machines rebuild an offline base made by an older recipe
RECIPE_LABEL = "org.mlrig.base-recipe"
RECIPE_VERSION = "2"
# The Debian packages the base carries, recorded in their own label: a base lacking one is
# rebuilt, while a base with more still passes an older mlrig's recipe check. Besides Python:
# libgomp1, the OpenMP runtime that LightGBM's (and scikit-learn's) wheels link to without
# bundling it; the serving image takes it from here (docker/serving/mkroot.sh), so a model
# build installs no system package and needs no Debian mirror.
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "libgomp1")
PACKAGES_LABEL = "org.mlrig.base-packages"


def dockerd_argv(binary: str) -> list[str]:
    # No --bridge=none: on a machine where another daemon runs, it would delete that
    # daemon's docker0. Leaving iptables alone is what keeps the host's network untouched.
    return [binary, "--iptables=false", "--ip6tables=false", "--ip-masq=false"]


def ensure_engine(progress: Progress = lambda _m: None) -> str:
    """Return the engine version, starting dockerd if none answers."""
    docker_adapter.client.cache_clear()
    version = docker_adapter.engine_version()
    if version:
        return version
    binary = shutil.which("dockerd")
    if not binary:
        raise DependencyMissing(
            "no Docker engine answers and dockerd is not installed",
            hint="install it with `apt-get install docker.io`",
        )
    if os.geteuid() != 0:
        raise ServiceError(
            "no Docker engine answers", hint="start one (as root: `scripts/setup.sh`) and retry"
        )
    progress("starting dockerd (host networking only, no iptables changes)")
    engine_dir = paths.home() / "engine"
    rec = processes.start(
        dockerd_argv(binary),
        pid_file=engine_dir / "dockerd.pid",
        log_file=engine_dir / "dockerd.log",
    )

    def answering() -> str:
        docker_adapter.client.cache_clear()  # never reuse a client made before dockerd listened
        return docker_adapter.engine_version() or ""

    try:
        return wait_until(
            answering,
            timeout=ENGINE_START_TIMEOUT,
            what="dockerd",
            interval=0.5,
            give_up=lambda: "dockerd exited" if processes.exited_early(rec) else None,
        )
    except (Abandoned, WaitTimeout) as exc:
        raise ServiceError(
            f"dockerd did not start: {processes.tail(engine_dir / 'dockerd.log', 3)}",
            hint=f"full log: {engine_dir / 'dockerd.log'}",
        ) from exc


def mmdebstrap_argv(out_tar: Path, suite: str = "bookworm") -> list[str]:
    hooks = [
        # the host's extra CAs (e.g. a TLS-inspecting proxy) so pip inside builds works
        f'mkdir -p "$1{HOST_CA_DIR}" && '
        f'(cp {HOST_CA_DIR}/*.crt "$1{HOST_CA_DIR}/" 2>/dev/null || true) && '
        'chroot "$1" update-ca-certificates >/dev/null',
        'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*',
        'chroot "$1" useradd --uid 1000 --create-home --shell /usr/sbin/nologin app',
    ]
    excludes = [
        "/usr/share/doc/*",
        "/usr/share/man/*",
        "/usr/share/info/*",
        "/usr/share/locale/*",
        "/usr/share/lintian/*",
    ]
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        "--quiet",
        f"--include={','.join(PACKAGES)}",
        '--aptopt=Acquire::Retries "3"',
    ]
    argv += [f"--dpkgopt=path-exclude={p}" for p in excludes]
    argv += ["--dpkgopt=path-include=/usr/share/doc/*/copyright"]
    argv += [f"--customize-hook={h}" for h in hooks]
    argv += [suite, str(out_tar)]
    return argv


def build_offline_base(
    tag: str = settings.OFFLINE_BASE_IMAGE, progress: Progress = lambda _m: None
) -> str:
    if not shutil.which("mmdebstrap"):
        raise DependencyMissing(
            "cannot build the offline base image: mmdebstrap is missing",
            hint="install it with `apt-get install mmdebstrap`",
        )
    progress(f"building offline base image {tag} from Debian packages (~30 s)")
    with tempfile.TemporaryDirectory(prefix="mlrig-base-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        proc = processes.run_captured(mmdebstrap_argv(tar))
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ServiceError(
                f"mmdebstrap failed: {last}", hint="check network access to the Debian mirror"
            )
        repo, _, version = tag.partition(":")
        docker_adapter.import_image(
            tar,
            repository=repo,
            tag=version or "latest",
            changes=[
                "ENV LANG=C.UTF-8",
                "ENV PYTHONDONTWRITEBYTECODE=1",
                f"LABEL {RECIPE_LABEL}={RECIPE_VERSION}",
                f"LABEL {PACKAGES_LABEL}={','.join(PACKAGES)}",
                'CMD ["python3"]',
            ],
        )
    if not docker_adapter.image_exists(tag):
        raise ServiceError(f"importing the base image {tag} failed")
    return tag


def _usable(ref: str) -> bool:
    if not docker_adapter.image_exists(ref):
        return False
    if ref != settings.OFFLINE_BASE_IMAGE:
        return True
    info = docker_adapter.image_info(ref)
    return (
        info is not None
        and info.labels.get(RECIPE_LABEL) == RECIPE_VERSION
        and info.labels.get(PACKAGES_LABEL) == ",".join(PACKAGES)
    )


def find_base_image() -> str | None:
    """The recorded base image if present, else any known Python 3.11 base in the engine.

    An offline base built by an older recipe does not count: it is rebuilt."""
    for candidate in (
        settings.load().base_image,
        settings.DEFAULT_BASE_IMAGE,
        settings.OFFLINE_BASE_IMAGE,
    ):
        if _usable(candidate):
            return candidate
    return None


def ensure_base_image(progress: Progress = lambda _m: None) -> str:
    """Return a usable Python 3.11 base image reference, building one if needed."""
    current = settings.load()
    found = find_base_image()
    if found:
        chosen = found
    else:
        progress(f"pulling {settings.DEFAULT_BASE_IMAGE}")
        if docker_adapter.pull(settings.DEFAULT_BASE_IMAGE):
            chosen = settings.DEFAULT_BASE_IMAGE
        else:
            progress("pull failed (offline?)")
            chosen = build_offline_base(progress=progress)
    if chosen != current.base_image:
        settings.save(current.model_copy(update={"base_image": chosen}))
    return chosen
