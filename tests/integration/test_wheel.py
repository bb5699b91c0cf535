"""Issue 34 (1): mlrig as its users get it. The sdist is built from the checkout and the wheel
from the sdist (`python -m build`, as release.yml does), the wheel is installed into a fresh
virtual environment outside the checkout, and mlrig runs from it: --version, an offline stack
plan, `mlrig init` rendering a repository from the wheel's own template, and the README's main
job (`mlrig demo` on a fresh home, then `mlrig stack down --purge`). The demo drives the Docker
engine, so the module takes `base_image`: tests/conftest.py then schedules it on the worker
that owns the engine. Its stack lives in its own home (free ports, containers named by port),
so it does not meet the e2e demo's."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlrig.contract import SCHEMA_VERSION
from tests.helpers import REPO_ROOT, aws_outputs, local_index, wheel_venv

pytestmark = pytest.mark.integration
TEMPLATE_VERSION = (REPO_ROOT / "pipeline/VERSION").read_text().strip()


@pytest.fixture(scope="module")
def installed(dist: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wheel_venv(dist["wheel"], tmp_path_factory.mktemp("venv") / "venv")


def _version_of(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def _run(mlrig: Path, *args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """mlrig from the wheel's venv, outside the checkout, with no checkout on any path."""
    env = {
        "HOME": str(home.parent),
        "MLRIG_HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",  # as pipx leaves it: only mlrig's own script
        "COLUMNS": "200",
    }
    return subprocess.run(
        [str(mlrig), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_build_is_quiet_and_versioned_from_git(dist: dict[str, Any]) -> None:
    output = dist["output"]
    assert "Warning" not in output and "deprecated" not in output.lower(), output[-3000:]
    version = _version_of(dist["wheel"])
    assert version != "0.0.0" and dist["sdist"].name == f"mlrig-{version}.tar.gz"
    with tarfile.open(dist["sdist"]) as sdist:
        names = sdist.getnames()
    for shipped in (
        "CHANGELOG.md",
        "pipeline/CHANGELOG.md",
        "pipeline/VERSION",
        "cli/mlrig/main.py",
    ):
        assert f"mlrig-{version}/{shipped}" in names, shipped
    wheel = zipfile.ZipFile(dist["wheel"]).namelist()
    assert "mlrig/_pipeline/CHANGELOG.md" in wheel and "mlrig/_pipeline/copier.yml" in wheel


def test_the_wheel_runs_from_a_fresh_venv_outside_the_checkout(
    dist: dict[str, Any], installed: Path, tmp_path: Path
) -> None:
    version = _version_of(dist["wheel"])
    home = tmp_path / "home" / ".mlrig"
    probe = subprocess.run(
        [
            str(installed.with_name("python")),
            "-c",
            "import json, importlib.metadata as m, mlrig.assets as a;"
            "print(json.dumps([a.__file__, str(a.pipeline_template()), m.version('mlrig')]))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    module, template, metadata_version = json.loads(probe.stdout)
    venv = installed.parent.parent
    assert Path(module).is_relative_to(venv) and Path(template).is_relative_to(venv)
    assert metadata_version == version
    result = _run(installed, "--version", home=home, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"mlrig {version} (template {TEMPLATE_VERSION}, stack contract schema {SCHEMA_VERSION})"
    )


def test_stack_plan_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    result = _run(installed, "stack", "plan", home=tmp_path / "home" / ".mlrig", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "$" in result.stdout and "/month" in result.stdout
    assert "every rule passes" in result.stdout


def test_init_renders_a_repository_from_the_wheels_template(
    dist: dict[str, Any], installed: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home" / ".mlrig"
    outputs = aws_outputs()  # where things are on a stack: init reads only this
    stack_dir = home / "stacks" / outputs.name
    stack_dir.mkdir(parents=True)
    (stack_dir / "outputs.json").write_text(outputs.model_dump_json())
    # a git identity in the home, as a user has one (init makes the first commit)
    (tmp_path / "home" / ".gitconfig").write_text("[user]\n\tname = t\n\temail = t@example.com\n")
    result = _run(
        installed, "init", "churn", "--stack", outputs.name, "--no-input", home=home, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    repo = tmp_path / "churn"
    answers = yaml.safe_load((repo / ".copier-answers.yml").read_text())
    assert answers["_commit"] == TEMPLATE_VERSION
    assert answers["mlrig_version"] == _version_of(dist["wheel"])
    assert Path(answers["_src_path"]).is_relative_to(home)
    workflow = yaml.safe_load((repo / ".github/workflows/ci.yml").read_text())
    assert workflow["env"]["MLRIG_VERSION"] == _version_of(dist["wheel"])
    for rendered in ("dvc.yaml", "params.yaml", "src/churn/train.py", "Dockerfile"):
        assert (repo / rendered).is_file(), rendered
    assert (repo / "data/raw/breast_cancer.csv.dvc").is_file()  # the wheel's dataset


def test_the_wheel_on_an_unsupported_python_is_one_line(dist: dict[str, Any]) -> None:
    """pip checks the wheel's Requires-Python against the target interpreter's version."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index"]
        + ["--ignore-installed", "--only-binary=:all:", "--python-version", "3.12"]
        + ["--target", "unused", "--", str(dist["wheel"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors == [
        "ERROR: Package 'mlrig' requires a different Python: 3.12.0 not in '<3.12,>=3.11'"
    ], proc.stderr


def _other_pythons() -> list[Path]:
    """Interpreters of another minor version on this machine (the image's pyenv keeps several;
    /usr/bin has only 3.11 here)."""
    found: dict[str, Path] = {}
    for candidate in sorted(Path.home().glob(".pyenv/versions/3.*/bin/python3")) + sorted(
        Path("/usr/bin").glob("python3.[0-9]*")
    ):
        minor = ".".join(candidate.parent.parent.name.split(".")[:2])
        if candidate.name.startswith("python3.") and not candidate.name.endswith("-config"):
            minor = candidate.name.removeprefix("python")
        if minor in ("3.10", "3.12") and minor not in found and os.access(candidate, os.X_OK):
            found[minor] = candidate
    return [found[minor] for minor in sorted(found)]


@pytest.mark.parametrize("python", _other_pythons(), ids=lambda p: str(p))
def test_the_wheel_into_a_venv_of_another_python_is_one_line(
    dist: dict[str, Any], tmp_path: Path, python: Path
) -> None:
    """What a user on Python 3.10 or 3.12 sees: that interpreter's own venv and pip refuse
    the wheel on its Requires-Python in one line, and nothing is installed."""
    venv = tmp_path / "venv"
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True, timeout=300)
    proc = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-deps", "--no-index", "--", str(dist["wheel"])],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull}
        | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("ERROR: Package 'mlrig' requires a different Python: 3.1"), line
    assert line.endswith(" not in '<3.12,>=3.11'"), line
    assert not (venv / "bin" / "mlrig").exists()


def test_the_trainer_images_wheel_carries_this_mlrigs_version(tmp_path: Path) -> None:
    """The trainer image's wheel is built from a copy of the checkout without .git, where
    setuptools-scm would fall back to 0.0.0: it is told this mlrig's version instead."""
    from mlrig.core.shared.wheel import build_wheel
    from mlrig.version import __version__

    wheel = build_wheel(tmp_path)
    assert _version_of(wheel) == __version__ != "0.0.0"


@pytest.fixture(scope="module")
def install_step(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The generated AWS workflow's mlrig install step (the image job's: no requirements)."""
    from mlrig.core.bootstrap import _render as bootstrap_render
    from mlrig.core.bootstrap import init as bootstrap

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLRIG_HOME", str(tmp_path_factory.mktemp("home")))
        src, ref = bootstrap.template_repo()
        dest = tmp_path_factory.mktemp("render") / "churn"
        bootstrap_render.render(src, ref, dest, project="churn", outputs=aws_outputs())
    workflow = yaml.safe_load((dest / ".github/workflows/ci.yml").read_text())
    (step,) = [
        s for s in workflow["jobs"]["image"]["steps"] if "MLRIG_PIP_SPEC" in s.get("run", "")
    ]
    return str(step["run"])


def _run_step_with_real_pip(
    script: str, tmp_path: Path, index: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The step under bash, its `pip download` done by the real pip against a local index
    holding only the built wheel (no config file, no other index); its `pip install` is
    recorded, not run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    installs = tmp_path / "installs"
    (bin_dir / "pip").write_text(
        "#!/bin/bash\n"
        f'if [ "$1" = install ]; then printf "%s " "$@" >> "{installs}"; exit 0; fi\n'
        f'exec "{sys.executable}" -m pip "$@"\n'
    )
    (bin_dir / "pip").chmod(0o755)
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "RUNNER_TEMP": str(tmp_path),
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(index),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, installs.read_text().split() if installs.exists() else []


def test_the_generated_step_resolves_mlrig_with_real_pip_or_says_why_in_one_line(
    dist: dict[str, Any], install_step: str, tmp_path: Path
) -> None:
    version = _version_of(dist["wheel"])
    index = dist["wheel"].parent
    spec = f"mlrig=={version}"
    ok, installed = _run_step_with_real_pip(
        install_step, tmp_path / "ok", index, {"MLRIG_PIP_SPEC": spec, "MLRIG_VERSION": "1.4.2"}
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert installed == ["install", "--", spec]
    assert (tmp_path / "ok" / "mlrig-dist" / dist["wheel"].name).is_file()  # resolved for real

    for name, env, says in [
        ("pinned", {"MLRIG_VERSION": "1.4.2"}, "mlrig==1.4.2 cannot be installed"),
        ("spec", {"MLRIG_PIP_SPEC": "mlrig==7.7.7", "MLRIG_VERSION": version}, "mlrig==7.7.7"),
    ]:
        proc, installed = _run_step_with_real_pip(install_step, tmp_path / name, index, env)
        assert proc.returncode == 1 and installed == [], name
        (line,) = proc.stdout.strip().splitlines()
        assert says in line and "ERROR: Could not find a version that satisfies" in line, line


# -- the pin installed with --require-hashes, against a real index on loopback -------------------
RELEASE = "9.8.7"


@pytest.fixture(scope="module")
def release_wheel(dist: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built sdist's wheel as release RELEASE would be (the checkout's own version is a
    development one, which the workflow refuses before any index is asked)."""
    src = tmp_path_factory.mktemp("release-src")
    with tarfile.open(dist["sdist"]) as sdist:
        sdist.extractall(src, filter="data")
    (tree,) = src.iterdir()
    out = tmp_path_factory.mktemp("release")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)]
        + [str(tree)],
        env={**os.environ, "SETUPTOOLS_SCM_PRETEND_VERSION_FOR_MLRIG": RELEASE},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = out.glob(f"mlrig-{RELEASE}-py3-none-any.whl")
    return wheel


@pytest.fixture(scope="module")
def hashed_step(release_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The AWS workflow's mlrig install step (the image job's) as init renders it for a
    release: the sha256 asked of a PEP 691 index holding the release's wheel, validated and
    recorded in the answers file and the workflow's env."""
    from mlrig.core.bootstrap import _pin as bootstrap_pin
    from mlrig.core.bootstrap import _render as bootstrap_render
    from mlrig.core.bootstrap import init as bootstrap

    wheel_sha = hashlib.sha256(release_wheel.read_bytes()).hexdigest()
    with (
        local_index({release_wheel.name: release_wheel.read_bytes()}) as url,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("PIP_INDEX_URL", url)
        mp.setenv("MLRIG_HOME", str(tmp_path_factory.mktemp("home")))
        pin = bootstrap_pin.pin(RELEASE)
        src, ref = bootstrap.template_repo()
        dest = tmp_path_factory.mktemp("render") / "churn"
        bootstrap_render.render(src, ref, dest, project="churn", outputs=aws_outputs(), pin=pin)
    assert pin.sha256 == (wheel_sha,), pin
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text())
    assert (answers["mlrig_version"], answers["mlrig_sha256"]) == (RELEASE, wheel_sha)
    workflow = yaml.safe_load((dest / ".github/workflows/ci.yml").read_text())
    assert (workflow["env"]["MLRIG_VERSION"], workflow["env"]["MLRIG_SHA256"]) == (
        RELEASE,
        wheel_sha,
    )
    (step,) = [
        s for s in workflow["jobs"]["image"]["steps"] if "MLRIG_PIP_SPEC" in s.get("run", "")
    ]
    return {"run": str(step["run"]), "env": workflow["env"], "sha256": wheel_sha}


def _run_step_into_a_venv(
    step: dict[str, Any], tmp_path: Path, index: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], Path, list[str]]:
    """The step under bash as GitHub runs it, every pip call by the real pip against index
    alone (no pip config, no cache) for a fresh venv, except the last, unhashed `pip install`
    (mlrig's dependencies: the dependency case below installs those from an index), which is
    recorded. Returns the run, the venv's python and that recorded install."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    installs = tmp_path / "installs"
    (bin_dir / "pip").write_text(
        "#!/bin/bash\n"
        'if [ "$1" = install ] && [[ " $* " != *" --require-hashes "* ]]; then\n'
        f'  printf "%s " "$@" >> "{installs}"; exit 0\n'
        "fi\n"
        f'exec "{sys.executable}" -m pip --python "{python}" "$@"\n'
    )
    (bin_dir / "pip").chmod(0o755)
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "RUNNER_TEMP": str(tmp_path),
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_INDEX_URL": index,
            "PIP_NO_CACHE_DIR": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "MLRIG_VERSION": step["env"]["MLRIG_VERSION"],
            "MLRIG_SHA256": step["env"]["MLRIG_SHA256"],
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, python, installs.read_text().split() if installs.exists() else []


def _installed_mlrig(python: Path) -> str:
    probe = subprocess.run(
        [str(python), "-I", "-c", "import importlib.metadata as m; print(m.version('mlrig'))"],
        cwd=python.parent,
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else ""


@pytest.mark.parametrize("html_only", [False, True], ids=["pep691-json", "pep503-html"])
def test_the_pin_installs_with_require_hashes_from_the_index(
    hashed_step: dict[str, Any], release_wheel: Path, tmp_path: Path, html_only: bool
) -> None:
    with local_index({release_wheel.name: release_wheel.read_bytes()}, html_only=html_only) as url:
        proc, python, deps = _run_step_into_a_venv(hashed_step, tmp_path, url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "::" not in proc.stdout, proc.stdout  # neither an error nor the no-hash warning
    assert _installed_mlrig(python) == RELEASE  # mlrig alone, hash-checked, for real
    assert deps == ["install", "--", f"mlrig=={RELEASE}"]  # then its dependencies


def test_a_tampered_wheel_on_the_index_is_one_error_line_and_nothing_installed(
    hashed_step: dict[str, Any], release_wheel: Path, tmp_path: Path
) -> None:
    # whoever replaced the file also lists its new hash: pip still checks the recorded one
    tampered = release_wheel.read_bytes() + b"\0"
    with local_index({release_wheel.name: tampered}) as url:
        proc, python, deps = _run_step_into_a_venv(hashed_step, tmp_path, url)
    assert proc.returncode == 1 and deps == [] and _installed_mlrig(python) == ""
    (line,) = proc.stdout.strip().splitlines()
    assert line.startswith(
        f"::error title=mlrig::mlrig=={RELEASE} on the index does not match the sha256 "
        "recorded for it (MLRIG_SHA256; the index served a file with sha256 "
        f"{hashlib.sha256(tampered).hexdigest()})"
    ), line


def test_an_index_without_the_pinned_version_is_the_one_line_failure(
    hashed_step: dict[str, Any], tmp_path: Path
) -> None:
    with local_index({"mlrig-9.8.6-py3-none-any.whl": b"an older release"}) as url:
        proc, python, deps = _run_step_into_a_venv(hashed_step, tmp_path, url)
    assert proc.returncode == 1 and deps == [] and _installed_mlrig(python) == ""
    (line,) = proc.stdout.strip().splitlines()
    assert line.startswith(
        f"::error title=mlrig::mlrig=={RELEASE} cannot be installed (ERROR: Could not find a "
        f"version that satisfies the requirement mlrig=={RELEASE}"
    ), line


def test_a_pin_recorded_without_hashes_says_so_in_one_line(
    hashed_step: dict[str, Any], release_wheel: Path, tmp_path: Path
) -> None:
    with local_index({release_wheel.name: release_wheel.read_bytes()}) as url:
        proc, python, deps = _run_step_into_a_venv(hashed_step, tmp_path, url, MLRIG_SHA256="")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    assert line.startswith(
        f"::warning title=mlrig::mlrig=={RELEASE} is installed without a hash check"
    ), line
    assert deps == ["install", "--", f"mlrig=={RELEASE}"]  # the plain install, as before


# -- the README's main job from the wheel -------------------------------------------------------
def _newcomer_env(mlrig: Path, home: Path) -> dict[str, str]:
    """This environment as the e2e's newcomer has it (no MLFLOW_*, AWS_*, MLRIG_* settings), with
    no virtual environment active and only the wheel venv's bin/ ahead of the system's: the
    `python` and `dvc` the demo's pipeline runs are the wheel venv's, never the checkout's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "MLRIG_", "AWS_", "PYTHON"))
        and key not in ("VIRTUAL_ENV", "PATH")
    }
    system = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return env | {"MLRIG_HOME": str(home), "PATH": f"{mlrig.parent}:{system}", "COLUMNS": "200"}


def _left_running(docker_engine: Any, home: Path) -> tuple[list[str], list[int]]:
    """Containers (running or not) carrying a label that names a path under home, and live
    processes started in home or naming a path under it (as `stack down` finds its own)."""
    import psutil

    base = str(home.resolve())
    containers = [
        str(c.name)
        for c in docker_engine.containers.list(all=True)
        if any(v == base or v.startswith(base + "/") for v in (c.labels or {}).values())
    ]
    processes = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cwd, args = proc.cwd(), proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            continue
        if cwd == base or cwd.startswith(base + "/") or any(base in a for a in args):
            processes.append(proc.pid)
    return containers, processes


@pytest.fixture(scope="module")
def demo_from_wheel(
    installed: Path, base_image: str, docker_engine: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """`mlrig demo` from the wheel's venv on a fresh home, cwd outside the checkout; the stack
    is purged afterwards from the same wheel if a test has not done it already."""
    home = tmp_path_factory.mktemp("wheel-newcomer") / ".mlrig"
    cwd = tmp_path_factory.mktemp("wheel-cwd")
    env = _newcomer_env(installed, home)
    started = time.monotonic()
    proc = subprocess.run(
        [str(installed), "demo"], env=env, cwd=cwd, capture_output=True, text=True, timeout=1800
    )
    seconds = time.monotonic() - started
    summary_file = home / "demo" / "demo-summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    try:
        yield {"proc": proc, "home": home, "cwd": cwd, "env": env, "summary": summary, "s": seconds}
    finally:
        if (home / "stacks" / "local").exists():
            subprocess.run(
                [str(installed), "stack", "down", "--purge", "--yes"],
                env=env,
                cwd=cwd,
                capture_output=True,
                timeout=300,
            )


def test_the_readme_main_job_runs_from_the_wheel(demo_from_wheel: dict[str, Any]) -> None:
    from mlrig.core.demo import demo

    proc = demo_from_wheel["proc"]
    print(f"mlrig demo from the wheel: {demo_from_wheel['s']:.0f} s")  # shown with -s / -rP
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "mlrig demo: done" in proc.stdout and "Traceback" not in proc.stderr
    expected = [name for name, _step in demo.steps()]
    passed = [step["name"] for step in demo_from_wheel["summary"]["steps"]]
    assert passed == expected  # the summary holds only steps that passed, here all of them
    ticked = [line for line in proc.stderr.splitlines() if line.startswith("✓ ")]
    assert len(ticked) == len(expected), proc.stderr[-3000:]
    log = Path(demo_from_wheel["summary"]["log"])
    assert log.is_file() and log.is_relative_to(demo_from_wheel["home"])
    repository = Path(demo_from_wheel["summary"]["facts"]["repository"])
    assert repository.is_relative_to(demo_from_wheel["home"])  # nothing written to the checkout


def test_stack_down_purge_from_the_wheel_leaves_nothing_of_its_home_running(
    demo_from_wheel: dict[str, Any], installed: Path, docker_engine: Any
) -> None:
    home = demo_from_wheel["home"]
    containers, processes = _left_running(docker_engine, home)
    assert containers and processes, "the demo left no endpoint container or service running"
    down = subprocess.run(
        [str(installed), "stack", "down", "--purge", "--yes"],
        env=demo_from_wheel["env"],
        cwd=demo_from_wheel["cwd"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
    assert "remains:" not in down.stdout, down.stdout
    assert not (home / "stacks" / "local").exists()
    assert _left_running(docker_engine, home) == ([], [])
