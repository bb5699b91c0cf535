"""The local stack's state on disk and how each part is recovered when lost.

`local.json` (ports) is written before any service starts, so an interrupted first `up` is
visible to the next one; `outputs.json` (the contract) is derived from it. Recovery rules:
- local.json lost or corrupt: rebuilt from outputs.json (same ports: repos keep working).
- both lost: the registry's port is read from its config; `up` refuses with the exact
  command that names the ports, never picks new ones silently.
- a secret lost or empty: a new one is generated and set in the store that checks it
  (MLflow's auth DB, the registry's htpasswd; mlrig owns both), never left unknown.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from mlrig import contract, paths
from mlrig.contract import BasicAuth, DvcRemote, Mlflow, Registry, SecretRef, StackOutputs
from mlrig.core.shared.files import private_dir
from mlrig.errors import ConfigError, CredentialsError, MlrigError
from mlrig.tracking import config as tracking_server

REGISTRY_USER = "mlrig"
REGISTRY_REPOSITORY = "models"
SERVICES = ("mlflow", "registry")
# secret file -> bytes of randomness; the first two are passwords a service checks
SECRETS = {"mlflow-admin": 24, "registry": 24, "mlflow-flask": 32, "registry-http": 32}


class LocalState(BaseModel):
    """What the local back-end remembers between runs (ports chosen at first `up`)."""

    name: str
    mlflow_port: int
    registry_port: int
    created_at: datetime


class Layout:
    """Where each part of a local stack lives under its folder."""

    def __init__(self, name: str) -> None:
        self.name = contract.validate_stack_name(name)
        self.root = paths.stack_dir(name)

    @property
    def state_file(self) -> Path:
        return self.root / contract.LOCAL_STATE_FILE

    @property
    def outputs_file(self) -> Path:
        return self.root / contract.OUTPUTS_FILE

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def dvc_remote_dir(self) -> Path:
        return self.root / "dvc-remote"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def auth_db(self) -> Path:
        return self.mlflow_dir / "auth.db"

    @property
    def htpasswd(self) -> Path:
        return self.registry_dir / "htpasswd"

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    def secret_file(self, what: str) -> Path:
        return self.secrets_dir / what

    def has_data(self) -> bool:
        """True once a service has stored anything: such a folder is never deleted by a
        failed `up`, only by `down --purge`."""
        return (
            (self.mlflow_dir / "mlflow.db").exists()
            or self.auth_db.exists()
            or any((self.registry_dir / "data").glob("*"))
            or any(self.dvc_remote_dir.glob("*"))
        )

    def outputs(self, state: LocalState) -> StackOutputs:
        def auth(user: str, secret: str) -> BasicAuth:
            ref = SecretRef(source="file", ref=str(self.secret_file(secret)))
            return BasicAuth(username=user, password=ref)

        return StackOutputs(
            name=self.name,
            kind="local",
            created_at=state.created_at,
            dvc_remote=DvcRemote(url=str(self.dvc_remote_dir)),
            mlflow=Mlflow(
                tracking_uri=f"http://127.0.0.1:{state.mlflow_port}",
                auth=auth(tracking_server.ADMIN_USERNAME, "mlflow-admin"),
            ),
            registry=Registry(
                kind="oci",
                url=f"127.0.0.1:{state.registry_port}/{REGISTRY_REPOSITORY}",
                auth=auth(REGISTRY_USER, "registry"),
            ),
        )


def read_state(layout: Layout) -> LocalState | None:
    """local.json as it is: None when absent or corrupt (the caller recovers or refuses);
    a directory in its place is refused, since it is not ours to delete."""
    path = layout.state_file
    if path.is_dir():
        raise ConfigError(
            f"local stack state {path} is a directory",
            hint=f"move it away; `mlrig stack up --stack {layout.name}` then rebuilds it",
        )
    try:
        state = LocalState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, ValidationError):  # empty, truncated, random bytes
        return None
    return state if state.name == layout.name else None


def state_from_outputs(layout: Layout) -> LocalState | None:
    """The ports recorded in outputs.json, when it is readable and describes this stack."""
    try:
        out = contract.load(layout.name)
    except MlrigError:
        return None
    if out.kind != "local":
        return None
    mlflow_port = _port(out.mlflow_tracking_uri.split("//", 1)[-1])
    registry_port = _port(out.registry.host)
    if not mlflow_port or not registry_port:
        return None
    return LocalState(
        name=layout.name,
        mlflow_port=mlflow_port,
        registry_port=registry_port,
        created_at=out.created_at,
    )


def _port(hostport: str) -> int | None:
    try:
        return int(hostport.split("/", 1)[0].rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def registry_port_from_config(layout: Layout) -> int | None:
    import yaml

    try:
        cfg = yaml.safe_load((layout.registry_dir / "config.yml").read_text())
        return int(str(cfg["http"]["addr"]).rsplit(":", 1)[1])
    except (OSError, ValueError, KeyError, TypeError, IndexError, yaml.YAMLError):
        return None


def recover_state(layout: Layout) -> tuple[LocalState | None, str]:
    """The stack's ports from local.json, else outputs.json; with a note when recovered.

    (None, "") for a stack with no state at all. A stack that holds data but neither file
    is refused with the command that restores it on its old ports.
    """
    state = read_state(layout)
    if state is not None:
        return state, ""
    lost = "corrupt" if layout.state_file.exists() else "missing"
    state = state_from_outputs(layout)
    if state is not None:
        return state, f"{layout.state_file.name} was {lost}: rebuilt from outputs.json"
    if not layout.has_data():
        return None, ""
    reg = registry_port_from_config(layout)
    raise ConfigError(
        f"stack '{layout.name}' holds data but its ports are lost "
        f"({layout.state_file.name} and outputs.json are both missing or corrupt)",
        hint=(
            f"run `mlrig stack up --stack {layout.name} --mlflow-port PORT "
            f"--registry-port {reg or 'PORT'}` with the ports your repos use "
            "(MLFLOW_TRACKING_URI and the registry URL in their config); no data is touched"
        ),
    )


def write_state(layout: Layout, state: LocalState) -> None:
    private_dir(layout.root)
    contract.atomic_write(layout.state_file, state.model_dump_json(indent=2) + "\n", mode=0o600)


def restore_secrets(layout: Layout) -> list[str]:
    """Make sure every secret file holds a value; return those generated now."""
    import secrets as token

    private_dir(layout.secrets_dir)
    made = []
    for what, nbytes in SECRETS.items():
        path = layout.secret_file(what)
        if path.is_dir():
            raise CredentialsError(
                f"secret file {path} is not readable (it is a directory)",
                hint=(
                    f"move it away, then run `mlrig stack up --stack {layout.name}`: "
                    "it sets a new secret in the service that checks it"
                ),
            )
        if path.exists() and path.read_text().strip():
            continue
        contract.atomic_write(path, token.token_urlsafe(nbytes) + "\n", mode=0o600)
        made.append(what)
    return made
