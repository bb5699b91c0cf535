"""The Pulumi Automation API behind one door: lazy imports, no CLI -> one clear line.

The Automation API drives the `pulumi` CLI as a subprocess; when the CLI is missing it
would surface a FileNotFoundError deep inside the SDK, so every entry point checks first.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from mlrig.errors import Conflict, CredentialsError, DependencyMissing, MlrigError, RemoteError

PROJECT = "mlrig"
INSTALL_HINT = (
    "install the Pulumi CLI (`curl -fsSL https://get.pulumi.com | sh`, or see "
    "https://www.pulumi.com/docs/install/) and make sure `pulumi` is on PATH; "
    "`mlrig stack plan` works without it"
)
_CREDENTIAL_PATTERNS = re.compile(
    r"no valid credential|NoCredentialProviders|InvalidClientTokenId|ExpiredToken|"
    r"UnrecognizedClientException|SignatureDoesNotMatch|failed to refresh cached credentials",
    re.IGNORECASE,
)


def cli_path() -> str:
    """Path of the `pulumi` CLI, or DependencyMissing with how to install it."""
    path = shutil.which("pulumi")
    if not path:
        raise DependencyMissing(
            "the `pulumi` CLI is not installed (AWS stacks need it)", hint=INSTALL_HINT
        )
    return path


def translate(exc: BaseException, action: str) -> MlrigError:
    """Map Automation API errors to mlrig's tree; the message keeps the CLI's last words."""
    from pulumi import automation as auto

    if isinstance(exc, MlrigError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return DependencyMissing(f"{action}: the `pulumi` CLI is not installed", hint=INSTALL_HINT)
    if isinstance(exc, auto.ConcurrentUpdateError):
        return Conflict(
            f"{action}: another update of this stack is running",
            hint="wait for it, or `pulumi cancel` if it died",
        )
    if isinstance(exc, auto.CommandError):
        text = str(exc)
        if _CREDENTIAL_PATTERNS.search(text):
            return CredentialsError(
                f"{action}: AWS rejected or found no credentials",
                hint="run `aws configure` / `aws sso login`, or pass --profile, and retry",
            )
        if "plugin" in text and ("not found" in text or "could not" in text):
            return DependencyMissing(
                f"{action}: the Pulumi AWS provider plugin is missing",
                hint="run `pulumi plugin install resource aws` with network access, then retry",
            )
        return RemoteError(
            f"{action} failed: {_last_error_line(text)}",
            hint="rerun with --debug for Pulumi's full output",
        )
    return RemoteError(f"{action} failed: {type(exc).__name__}: {exc}")


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no output"])[-1][:300]


def select_stack(
    name: str,
    program: Callable[[], None],
    *,
    backend_url: str,
    passphrase: str,
    env: Mapping[str, str] | None = None,
) -> Any:
    """Create or select stack `name` of the inline program on the given backend."""
    cli = cli_path()
    from pulumi import automation as auto

    env_vars = {
        "PULUMI_CONFIG_PASSPHRASE": passphrase,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        **(env or {}),
    }
    settings = auto.ProjectSettings(
        name=PROJECT, runtime="python", backend=auto.ProjectBackend(url=backend_url)
    )
    opts = auto.LocalWorkspaceOptions(
        project_settings=settings,
        env_vars=env_vars,
        secrets_provider="passphrase",
        pulumi_command=auto.PulumiCommand(root=os.path.dirname(os.path.dirname(cli))),
    )
    try:
        return auto.create_or_select_stack(
            stack_name=name, project_name=PROJECT, program=program, opts=opts
        )
    except Exception as exc:
        raise translate(exc, f"opening Pulumi stack '{name}'") from exc


def set_config(stack: Any, values: Mapping[str, str], secret: Mapping[str, str]) -> None:
    from pulumi import automation as auto

    for key, value in values.items():
        stack.set_config(key, auto.ConfigValue(value=value))
    for key, value in secret.items():
        stack.set_config(key, auto.ConfigValue(value=value, secret=True))


def get_config(stack: Any, key: str) -> str | None:
    try:
        return str(stack.get_config(key).value)
    except Exception:  # noqa: BLE001 - the Automation API raises CommandError for "unset"
        return None


def up(stack: Any, on_output: Callable[[str], Any]) -> dict[str, Any]:
    try:
        result = stack.up(on_output=on_output, show_secrets=False, color="never")
    except Exception as exc:
        raise translate(exc, f"pulumi up of stack '{stack.name}'") from exc
    return {k: v.value for k, v in result.outputs.items()}


def preview(stack: Any, on_output: Callable[[str], Any]) -> dict[str, int]:
    try:
        result = stack.preview(on_output=on_output, color="never")
    except Exception as exc:
        raise translate(exc, f"pulumi preview of stack '{stack.name}'") from exc
    return dict(result.change_summary)


def destroy(stack: Any, on_output: Callable[[str], Any]) -> None:
    try:
        stack.destroy(on_output=on_output, color="never", show_secrets=False)
    except Exception as exc:
        raise translate(exc, f"pulumi destroy of stack '{stack.name}'") from exc
