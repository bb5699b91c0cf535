"""Pulumi behind one door: the Automation API (lazy imports, no CLI -> one clear line) and
programs run offline under Pulumi's mocks.

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


def _workspace(
    backend_url: str, passphrase: str, env: Mapping[str, str] | None, project: str
) -> dict[str, Any]:
    """A local workspace's settings for `project` on the given backend."""
    cli = cli_path()
    from pulumi import automation as auto

    return {
        "project_settings": auto.ProjectSettings(
            name=project, runtime="python", backend=auto.ProjectBackend(url=backend_url)
        ),
        "env_vars": {
            "PULUMI_CONFIG_PASSPHRASE": passphrase,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            **(env or {}),
        },
        "secrets_provider": "passphrase",
        "pulumi_command": auto.PulumiCommand(root=os.path.dirname(os.path.dirname(cli))),
    }


def list_stack_names(
    *,
    backend_url: str,
    passphrase: str,
    env: Mapping[str, str] | None = None,
    project: str = PROJECT,
) -> list[str]:
    """The names of `project`'s stacks on the backend (the last part of a qualified name)."""
    from pulumi import automation as auto

    try:
        ws = auto.LocalWorkspace(**_workspace(backend_url, passphrase, env, project))
        return [s.name.rsplit("/", 1)[-1] for s in ws.list_stacks()]
    except Exception as exc:
        raise translate(exc, f"listing the stacks of project '{project}'") from exc


def remove_stack(stack: Any) -> None:
    """Forget a destroyed stack (its config and history) on its backend."""
    try:
        stack.workspace.remove_stack(stack.name)
    except Exception as exc:
        raise translate(exc, f"removing stack '{stack.name}'") from exc


def select_stack(
    name: str,
    program: Callable[[], None],
    *,
    backend_url: str,
    passphrase: str,
    env: Mapping[str, str] | None = None,
    project: str = PROJECT,
) -> Any:
    """Create or select stack `name` of the inline program (of `project`: the stack's own,
    or an endpoint's) on the given backend."""
    from pulumi import automation as auto

    opts = auto.LocalWorkspaceOptions(**_workspace(backend_url, passphrase, env, project))
    try:
        return auto.create_or_select_stack(
            stack_name=name, project_name=project, program=program, opts=opts
        )
    except Exception as exc:
        raise translate(exc, f"opening Pulumi stack '{name}'") from exc


def set_config(stack: Any, values: Mapping[str, str], secret: Mapping[str, str]) -> None:
    from pulumi import automation as auto

    for key, value in values.items():
        stack.set_config(key, auto.ConfigValue(value=value))
    for key, value in secret.items():
        stack.set_config(key, auto.ConfigValue(value=value, secret=True))


def remove_config(stack: Any, keys: list[str]) -> None:
    for key in keys:
        try:
            stack.remove_config(key)
        except Exception:  # noqa: BLE001, S112 - removing an unset key is not an error
            continue


def outputs(stack: Any) -> dict[str, Any]:
    """The stack's outputs from its last update (empty before the first)."""
    try:
        return {k: v.value for k, v in stack.outputs().items()}
    except Exception as exc:
        raise translate(exc, f"reading the outputs of stack '{stack.name}'") from exc


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


# --- a program run under Pulumi's mocks (offline: no CLI, no plugin, no account) ---


class MocksRunError(Exception):
    """A program did not finish under mocks (an output never resolved, or was unset)."""


# What the mocks answer for a resource registration: (type token, name, inputs, custom) ->
# (id, outputs); components (custom False) get ("", {}) and only their registration counts.
OnResource = Callable[[str, str, dict[str, Any], bool], tuple[str, dict[str, Any]]]
# What the mocks answer for a provider function call: (token, args) -> result.
OnCall = Callable[[str, dict[str, Any]], dict[str, Any]]


def run_under_mocks(
    program: Callable[[], Mapping[str, Any]],
    *,
    stack: str,
    on_resource: OnResource,
    on_call: OnCall,
    resolve_timeout: float,
    project: str = PROJECT,
) -> dict[str, Any]:
    """Run `program()` under mocks answered by the two callbacks; return its resolved outputs.

    Every output must resolve within `resolve_timeout` seconds to a value: an unknown or unset
    output raises MocksRunError rather than passing silently. Errors the program or a
    callback raise propagate unchanged."""
    import asyncio

    import pulumi
    from pulumi.runtime import mocks as pulumi_mocks
    from pulumi.runtime import settings
    from pulumi.runtime import stack as pulumi_stack

    class _Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
            rid, outputs = on_resource(args.typ, args.name, dict(args.inputs), bool(args.custom))
            return rid, outputs

        def call(
            self, args: pulumi.runtime.MockCallArgs
        ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
            return on_call(args.token, dict(args.args)), []  # no check failures

    _ensure_event_loop()  # set_mocks already registers the root stack resource
    pulumi.runtime.set_mocks(_Mocks(), project=project, stack=stack, preview=False)
    settings.SETTINGS.outputs.clear()
    resolved: dict[str, Any] = {}
    unresolved: list[str] = []

    async def main() -> None:
        outputs = program()
        keys = list(outputs)
        tasks = [asyncio.ensure_future(pulumi.Output.from_input(outputs[k]).future()) for k in keys]
        _, pending = await asyncio.wait(tasks, timeout=resolve_timeout)
        if pending:
            stuck = [k for k, t in zip(keys, tasks, strict=True) if t in pending]
            unresolved.append(f"outputs {stuck} did not resolve within {resolve_timeout:g} s")
            for task in pending:  # else Pulumi's runtime waits for them forever
                task.cancel()
            raise MocksRunError(unresolved[0])
        for key, task in zip(keys, tasks, strict=True):
            value = task.result()
            if value is None:
                raise MocksRunError(f"output {key!r} resolved to nothing (unknown or missing)")
            resolved[key] = value

    try:
        pulumi_mocks._sync_await(pulumi_stack.run_pulumi_func(main))
    except asyncio.CancelledError as exc:
        # The runtime reports the tasks cancelled above rather than our error.
        if unresolved:
            raise MocksRunError(unresolved[0]) from exc
        raise
    finally:
        settings.SETTINGS.outputs.clear()
    return resolved


def _ensure_event_loop() -> None:
    """Pulumi's runtime uses the thread's current loop; asyncio.run() elsewhere unsets it."""
    import asyncio

    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        asyncio.set_event_loop(asyncio.new_event_loop())
