"""A throwaway PostgreSQL cluster from Debian's server binaries, supervised by PID.

Used by `mlrig stack rehearse`: TLS and scram password auth on a loopback port, run as an
unprivileged user (PostgreSQL refuses root), a database owned by a role that owns nothing else.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrig.adapters import processes
from mlrig.errors import DependencyMissing, ServiceError
from mlrig.wait import Abandoned, WaitTimeout, wait_until

INSTALL_HINT = (
    "install PostgreSQL's server binaries (Debian/Ubuntu: `apt-get install "
    "postgresql`), or set MLRIG_POSTGRES_BIN to the directory holding initdb"
)
SUPERUSER = "postgres"
SERVER_USER = "postgres"  # the OS account the server runs as when mlrig runs as root


def bin_dir() -> Path:
    """The directory with initdb/postgres/psql: MLRIG_POSTGRES_BIN, else Debian's newest."""
    override = os.environ.get("MLRIG_POSTGRES_BIN")
    candidates = (
        [override]
        if override
        else sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(p.split("/")[-2]),
            reverse=True,
        )
    )
    for cand in candidates:
        path = Path(cand)
        if all((path / exe).is_file() for exe in ("initdb", "postgres", "psql", "pg_isready")):
            return path
    raise DependencyMissing(
        "PostgreSQL server binaries (initdb, postgres) not found", hint=INSTALL_HINT
    )


def _run_as() -> pwd.struct_passwd | None:
    """The account to drop to: none when not root; the `postgres` account when root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise DependencyMissing(
            f"no '{SERVER_USER}' OS account to run PostgreSQL as (it refuses to run as root)",
            hint=INSTALL_HINT,
        ) from None


def _as_user(argv: list[str], user: pwd.struct_passwd | None) -> list[str]:
    # setpriv execs in place (unlike runuser/su), so the recorded PID is the server itself.
    if user is None:
        return argv
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", *argv]


@dataclass(frozen=True)
class Cluster:
    root: Path
    port: int
    superuser_password: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def pid_file(self) -> Path:
        return self.root.parent / "postgres.pid"

    @property
    def log_file(self) -> Path:
        return self.root.parent / "postgres.log"


def _check(argv: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ServiceError(f"{what} failed: {detail[-1] if detail else proc.returncode}")
    return proc


def init(root: Path, *, port: int, superuser_password: str) -> Cluster:
    """initdb into root/data with scram auth over TLS on 127.0.0.1:port only."""
    bins = bin_dir()
    user = _run_as()
    if user is not None and shutil.which("setpriv") is None:
        raise DependencyMissing(
            "setpriv not found (needed to run PostgreSQL unprivileged)", hint="install util-linux"
        )
    root.mkdir(mode=0o700, parents=True)
    cluster = Cluster(root=root, port=port, superuser_password=superuser_password)
    pwfile = root / "pwfile"
    pwfile.write_text(superuser_password + "\n")
    pwfile.chmod(0o600)
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    try:
        _check(
            _as_user(
                [
                    str(bins / "initdb"),
                    "-D",
                    str(cluster.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
                user,
            ),
            "initdb",
            cwd=root,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    _tls_cert(cluster, user)
    with open(cluster.data_dir / "postgresql.conf", "a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
            "unix_socket_directories = ''\npassword_encryption = 'scram-sha-256'\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
        )
    # TLS-only, password-only, loopback-only: what RDS with sslmode=require looks like.
    (cluster.data_dir / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 scram-sha-256\n")
    return cluster


def _tls_cert(cluster: Cluster, user: pwd.struct_passwd | None) -> None:
    if shutil.which("openssl") is None:
        raise DependencyMissing(
            "openssl not found (needed for PostgreSQL's TLS certificate)", hint="install openssl"
        )
    crt, key = cluster.data_dir / "server.crt", cluster.data_dir / "server.key"
    _check(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        "creating PostgreSQL's TLS certificate",
    )
    key.chmod(0o600)
    if user is not None:
        for f in (crt, key):
            os.chown(f, user.pw_uid, user.pw_gid)


def start(cluster: Cluster, *, timeout: float = 60.0) -> None:
    bins = bin_dir()
    argv = _as_user([str(bins / "postgres"), "-D", str(cluster.data_dir)], _run_as())
    rec = processes.start(
        argv, pid_file=cluster.pid_file, log_file=cluster.log_file, cwd=cluster.root
    )
    probe = [str(bins / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(cluster.port)]
    try:
        wait_until(
            lambda: subprocess.run(probe, check=False).returncode == 0,
            timeout=timeout,
            what="PostgreSQL",
            interval=0.3,
            give_up=lambda: "exited" if processes.exited_early(rec) else None,
        )
    except Abandoned as exc:
        raise ServiceError(
            "PostgreSQL exited at start: " + processes.tail(cluster.log_file, 3)
        ) from exc
    except WaitTimeout as exc:
        raise ServiceError(
            f"PostgreSQL did not accept connections within {timeout:.0f} s: "
            + processes.tail(cluster.log_file, 3)
        ) from exc


def stop(cluster: Cluster) -> list[int]:
    return processes.stop(cluster.pid_file)


def psql(
    cluster: Cluster,
    sql: str,
    *,
    database: str = "postgres",
    variables: dict[str, str] | None = None,
) -> str:
    """Run SQL as the superuser over TLS; SQL goes by stdin so no secret is in argv.

    `variables` are psql variables (`:'name'` in the SQL quotes them); never pass secrets."""
    var_args = [arg for k, v in (variables or {}).items() for arg in ("-v", f"{k}={v}")]
    env = dict(
        os.environ,
        PGPASSWORD=cluster.superuser_password,
        PGSSLMODE="require",
        PGCONNECT_TIMEOUT="5",
    )
    proc = _check(
        [
            str(bin_dir() / "psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
            *var_args,
            "-f",
            "-",
        ],
        "psql",
        input=sql,
        env=env,
    )
    return proc.stdout.strip()


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def create_database(cluster: Cluster, *, name: str, owner: str, password: str) -> None:
    """A login role with no other right than owning this one database."""
    psql(
        cluster,
        f"""
        CREATE ROLE "{owner}" LOGIN PASSWORD {_literal(password)}
            NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
        CREATE DATABASE "{name}" OWNER "{owner}";
        REVOKE ALL ON DATABASE "{name}" FROM PUBLIC;
        REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
        REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;
    """,
    )


def role_attributes(cluster: Cluster, role: str) -> dict[str, object]:
    """What the role may do, and which databases it owns."""
    row = psql(
        cluster,
        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = :'role';",
        variables={"role": role},
    )
    owned = psql(
        cluster,
        "SELECT datname FROM pg_database d JOIN pg_roles r "
        "ON d.datdba = r.oid WHERE r.rolname = :'role';",
        variables={"role": role},
    )
    flags = row.split("|") if row else []
    return {
        "superuser": flags[:1] == ["t"],
        "createdb": flags[1:2] == ["t"],
        "createrole": flags[2:3] == ["t"],
        "owns": sorted(owned.split()) if owned else [],
    }
