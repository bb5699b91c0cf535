"""Container entrypoint: write the basic-auth config from the environment, then exec MLflow.

The task passes `mlflow server` arguments as its command; secrets arrive as environment
variables (from Secrets Manager) and are never written to disk or printed.
"""

from __future__ import annotations

import os
import sys

REQUIRED = ("MLFLOW_AUTH_CONFIG_PATH", "MLRIG_AUTH_INI", "MLFLOW_AUTH_ADMIN_PASSWORD",
            "MLFLOW_FLASK_SERVER_SECRET_KEY")


def main(argv: list[str]) -> None:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        sys.exit(f"mlflow-server: missing environment variables: {', '.join(missing)}")
    path = os.environ["MLFLOW_AUTH_CONFIG_PATH"]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(os.environ.pop("MLRIG_AUTH_INI"))
    os.execvp("mlflow", ["mlflow", "server", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
