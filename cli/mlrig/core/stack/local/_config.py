"""Each local service's configuration and command line, written from the stack's secrets.

A regenerated password is set in the store that checks it (MLflow's auth DB, the
registry's htpasswd) and the services that must re-read a changed file are named. MLflow's
files and the registry's are written apart: `up` starts MLflow (the slow one) as soon as its
own files are there and writes the registry's (a bcrypt hash) while MLflow boots.
"""

from __future__ import annotations

from mlrig import contract
from mlrig.adapters import registry
from mlrig.core.shared import secrets
from mlrig.core.shared.progress import Progress
from mlrig.core.stack import oidc_rules
from mlrig.core.stack.local._services import Launch
from mlrig.core.stack.local.state import REGISTRY_USER, Layout, LocalState
from mlrig.tracking import config as tracking_server


def write_mlflow_configs(stack: Layout, made: list[str], progress: Progress) -> set[str]:
    """Write MLflow's auth.ini and OIDC rules; return {"mlflow"} when it must restart to see
    a change. A regenerated admin password is set in MLflow's auth DB."""
    restart: set[str] = set()
    db_uri = f"sqlite:///{stack.auth_db.resolve()}"
    ini, ini_text = stack.mlflow_dir / "auth.ini", tracking_server.auth_ini(db_uri)
    if ini.is_file() and ini.read_text() != ini_text:
        restart.add("mlflow")  # MLflow reads auth.ini at start only (e.g. a new default_permission)
    contract.atomic_write(ini, ini_text, mode=0o600)
    oidc_rules.ensure(stack.mlflow_dir / oidc_rules.CONFIG_FILE, stack.name)
    if "mlflow-admin" in made and stack.auth_db.exists():
        from mlrig.adapters import mlflow as mlflow_adapter

        password = secrets.read_secret_file(stack.secret_file("mlflow-admin"))
        if mlflow_adapter.set_auth_password(
            stack.auth_db, tracking_server.ADMIN_USERNAME, password
        ):
            progress("the MLflow admin password was lost: a new one is set in MLflow")
    if "mlflow-flask" in made:
        restart.add("mlflow")
    return restart


def write_registry_configs(
    stack: Layout, state: LocalState, made: list[str], progress: Progress
) -> set[str]:
    """Write the registry's htpasswd and config.yml; return {"registry"} when it must restart
    to see a change. A regenerated password is hashed into its htpasswd."""
    restart: set[str] = set()
    reg_pw = secrets.read_secret_file(stack.secret_file("registry"))
    if "registry" in made or not stack.htpasswd.exists():
        contract.atomic_write(
            stack.htpasswd, registry.htpasswd_line(REGISTRY_USER, reg_pw), mode=0o600
        )
        restart.add("registry")
        if "registry" in made and (stack.registry_dir / "config.yml").exists():
            progress("the registry password was lost: a new one is set in its htpasswd")
    config = stack.registry_dir / "config.yml"
    text = registry.config_yaml(
        port=state.registry_port,
        storage_dir=stack.registry_dir / "data",
        htpasswd=stack.htpasswd,
        http_secret=secrets.read_secret_file(stack.secret_file("registry-http")),
    )
    old = config.read_text() if config.is_file() else None
    if old != text:
        contract.atomic_write(config, text, mode=0o600)
        restart.add("registry")
    return restart


def launch(stack: Layout, service: str, state: LocalState, program: tuple[str, str]) -> Launch:
    if service == "mlflow":
        plan = tracking_server.local_plan(
            data_dir=stack.mlflow_dir,
            port=state.mlflow_port,
            admin_password=secrets.read_secret_file(stack.secret_file("mlflow-admin")),
            flask_secret=secrets.read_secret_file(stack.secret_file("mlflow-flask")),
            auth_config_path=(stack.mlflow_dir / "auth.ini").resolve(),
            oidc_config_path=(stack.mlflow_dir / oidc_rules.CONFIG_FILE).resolve(),
        )
        return Launch(plan.argv, plan.env)
    kind, where = program
    argv = [where, "serve", str(stack.registry_dir / "config.yml")]
    return Launch(argv, {}, image=where if kind == "image" else None)
