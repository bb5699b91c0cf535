"""Container entrypoint: write the basic-auth config from the environment, then exec MLflow.

The task passes `mlflow server` arguments as its command; secrets arrive as environment
variables (from Secrets Manager) and are never written to disk or printed. Before MLflow
starts, the database and the artifact bucket are checked so a broken dependency is one log line.
"""

from __future__ import annotations

import os
import sys
import time

# A database still starting (or a network path still converging) is retried this long.
WAIT_SECONDS = float(os.environ.get("MLRIG_DEPENDENCY_WAIT_SECONDS", "90"))
REQUIRED = (
    "MLFLOW_AUTH_CONFIG_PATH",
    "MLRIG_AUTH_INI",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)


def main(argv: list[str]) -> None:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        sys.exit(f"mlflow-server: missing environment variables: {', '.join(missing)}")
    path = os.environ["MLFLOW_AUTH_CONFIG_PATH"]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(os.environ.pop("MLRIG_AUTH_INI"))
    check_dependencies(argv)
    os.execvp("mlflow", ["mlflow", "server", *argv])  # noqa: S606 - MLflow replaces us: PID 1 gets signals


def _arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else ""


def _retry(what: str, attempt, fatal) -> None:  # type: ignore[no-untyped-def]
    """Call attempt() until it returns None; give up at once on a fatal error, else after
    WAIT_SECONDS with exponential backoff. Messages name the cause, never a secret."""
    start, delay = time.monotonic(), 1.0
    while True:
        error = attempt()
        if error is None:
            return
        if fatal(error):
            sys.exit(f"mlflow-server: {what}: {error}")
        if time.monotonic() - start + delay > WAIT_SECONDS:
            sys.exit(f"mlflow-server: {what}: still failing after {WAIT_SECONDS:.0f} s: {error}")
        print(f"mlflow-server: {what}: {error}; retrying in {delay:.0f} s", file=sys.stderr)
        time.sleep(delay)
        delay = min(delay * 2, 15.0)


def check_dependencies(argv: list[str]) -> None:
    from urllib.parse import urlsplit

    store = _arg(argv, "--backend-store-uri")
    if store.startswith("postgresql://"):
        import psycopg  # SQLAlchemy 2.1's default PostgreSQL driver, so MLflow's too

        parts = urlsplit(store)
        where = f"{parts.hostname}:{parts.port or 5432}{parts.path} as {parts.username}"

        def connect() -> str | None:
            try:
                psycopg.connect(store, connect_timeout=5).close()
            except psycopg.OperationalError as exc:
                lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
                return lines[0] if lines else type(exc).__name__
            return None

        # Wrong password, unknown role or database: retrying cannot help.
        _retry(
            f"database {where}",
            connect,
            lambda e: (
                "authentication failed" in e or "does not exist" in e or "no pg_hba.conf entry" in e
            ),
        )
    artifacts = _arg(argv, "--artifacts-destination")
    if artifacts.startswith("s3://"):
        import boto3
        import botocore.exceptions

        bucket, _, prefix = artifacts.removeprefix("s3://").partition("/")
        s3 = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)

        def list_prefix() -> str | None:
            try:
                s3.list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/", MaxKeys=1)
            except botocore.exceptions.ClientError as exc:
                err = exc.response.get("Error", {})
                return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip()
            except botocore.exceptions.BotoCoreError as exc:
                return str(exc)
            return None

        _retry(
            f"artifact store {artifacts}",
            list_prefix,
            lambda e: e.startswith(
                ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch")
            ),
        )


if __name__ == "__main__":
    main(sys.argv[1:])
