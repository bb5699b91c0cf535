"""Which GitHub repositories' OIDC tokens the tracking server accepts, and as whom.

A rule maps a `repository` claim (and the `ref` globs allowed for it) to that repository's
machine identity. Where the rules live:
- local stack: `<stack dir>/mlflow/oidc.json`, which the server's auth hook re-reads when it
  changes, so `add_rule` takes effect at the next request without a restart;
- AWS stack: `<stack dir>/oidc.json`, which `mlrig stack up` sets as Pulumi config
  (`mlrig:oidcRules`, see `pulumi_config`); the program renders it into the task's
  MLRIG_OIDC_CONFIG (`StackConfig.oidc` -> `tracking.container.container_spec(oidc=...)`), so a
  changed rule takes effect with the next `mlrig stack up` (a new task revision).
The issuer is GitHub's and the audience `mlrig:<stack>` unless the file says otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlrig import contract, paths
from mlrig.errors import ConfigError, UsageError
from mlrig.tracking import oidc as tracking_oidc

CONFIG_FILE = "oidc.json"


def local_config_path(stack: str) -> Path:
    from mlrig.core.stack.local.state import Layout

    return Layout(stack).mlflow_dir / CONFIG_FILE


def is_local(stack: str) -> bool:
    from mlrig.core.stack.local.state import Layout

    return Layout(stack).state_file.exists()


def config_path(stack: str) -> Path:
    """Where the stack's rules are kept: the file the local server reads, or for an AWS
    stack the file `mlrig stack up` turns into Pulumi config (`pulumi_config`)."""
    return local_config_path(stack) if is_local(stack) else paths.stack_dir(stack) / CONFIG_FILE


def pulumi_config(stack: str) -> dict[str, str]:
    """Plain Pulumi config for an AWS stack's rules: nothing while it never had any, an
    empty list once its last rule is removed (so the next `up` drops it from the task)."""
    path = paths.stack_dir(stack) / CONFIG_FILE
    if not path.is_file():
        return {}
    config = load(path, stack)
    out = {"mlrig:oidcRules": json.dumps([r.to_json() for r in config.rules])}
    if config.audience != tracking_oidc.default_audience(stack):
        out["mlrig:oidcAudience"] = config.audience
    if config.issuer != tracking_oidc.GITHUB_ISSUER:
        out["mlrig:oidcIssuer"] = config.issuer
    return out


def default_config(stack: str) -> tracking_oidc.OidcConfig:
    return tracking_oidc.OidcConfig(
        issuer=tracking_oidc.GITHUB_ISSUER, audience=tracking_oidc.default_audience(stack)
    )


def load(path: Path, stack: str) -> tracking_oidc.OidcConfig:
    """The config in `path`, or the stack's default when there is no file yet."""
    if not path.is_file():
        return default_config(stack)
    try:
        return tracking_oidc.parse_config(json.loads(path.read_text()))
    except ValueError as exc:
        raise ConfigError(
            f"{path} is not a valid OIDC config: {exc}",
            hint="fix it by hand or delete it; `mlrig stack up` writes a fresh one without rules",
        ) from None


def save(path: Path, config: tracking_oidc.OidcConfig) -> None:
    contract.atomic_write(path, json.dumps(config.to_json(), indent=2) + "\n", mode=0o600)


def ensure(path: Path, stack: str) -> None:
    """Write the default config (no rules yet) when the stack has none."""
    if not path.is_file():
        save(path, default_config(stack))


def add_rule(
    stack: str,
    *,
    repository: str,
    identity: str,
    refs: tuple[str, ...] = tracking_oidc.DEFAULT_REFS,
    path: Path | None = None,
) -> bool:
    """Let `repository`'s tokens (on `refs`) act as `identity`; replaces that repository's
    earlier rule. Returns False when the rule was already there. A local stack's server
    sees it at the next request; an AWS stack's at its next `mlrig stack up`."""
    path = path or config_path(stack)
    config = load(path, stack)
    rule = tracking_oidc.Rule(repository, identity, tuple(refs))
    try:  # the same checks the server applies when it reads the file
        tracking_oidc.parse_config({**config.to_json(), "rules": [rule.to_json()]})
    except ValueError as exc:
        raise UsageError(f"OIDC rule: {exc}", hint="the repository is 'owner/name'") from None
    others = [r for r in config.rules if r.repository.casefold() != repository.casefold()]
    if rule in config.rules and len(others) == len(config.rules) - 1:
        return False
    save(
        path,
        tracking_oidc.OidcConfig(
            config.issuer, config.audience, (*others, rule), config.refresh_min_seconds
        ),
    )
    return True


def remove_rule(stack: str, repository: str, *, path: Path | None = None) -> bool:
    """Stop accepting `repository`'s tokens; False when it had no rule."""
    path = path or config_path(stack)
    config = load(path, stack)
    kept = tuple(r for r in config.rules if r.repository.casefold() != repository.casefold())
    if len(kept) == len(config.rules):
        return False
    save(
        path,
        tracking_oidc.OidcConfig(config.issuer, config.audience, kept, config.refresh_min_seconds),
    )
    return True
