"""The values a user types for an AWS stack (region, GitHub repository, domain), each checked
once here so `stack up --aws` and the offline `stack plan` refuse the same bad input."""

from __future__ import annotations

import re

from mlrig.errors import UsageError

# us-east-1, eu-central-2, us-gov-west-1, us-iso-east-1, us-isob-east-1, ap-southeast-10 ...
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d+$")
# GitHub: an owner of 1-39 letters, digits and single inner hyphens; a repository name of
# 1-100 letters, digits, '.', '_' or '-' (but not '.' or '..', which GitHub refuses)
_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
_REPO_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
# one DNS label: 1-63 letters, digits or inner hyphens (lowercase: Route 53 stores it so)
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_TLD = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")


def check_region(region: str) -> str:
    if not _REGION.fullmatch(region):
        raise UsageError(
            f"invalid AWS region {region!r}", hint="e.g. us-east-1, eu-west-2, us-gov-west-1"
        )
    return region


def check_github_repo(value: str | None) -> str | None:
    """owner/repo on GitHub (what the CI role's OIDC subject names); None: not given."""
    if value is None:
        return None
    owner, _, name = value.partition("/")
    if not (_OWNER.fullmatch(owner) and _REPO_NAME.fullmatch(name) and name not in (".", "..")):
        raise UsageError(
            f"invalid --github-repo {value!r}",
            hint="use owner/repo, e.g. acme/churn-model (letters, digits, '-'; the "
            "repository may also have '.' and '_')",
        )
    return value


def check_domain(domain: str | None) -> str | None:
    """A lowercase DNS name of two or more labels (the tracking server's HTTPS name)."""
    if domain is None:
        return None
    labels = domain.split(".")
    if not (
        4 <= len(domain) <= 253
        and len(labels) >= 2
        and all(_LABEL.fullmatch(label) for label in labels)
        and _TLD.fullmatch(labels[-1])
    ):
        raise UsageError(
            f"invalid --domain {domain!r}",
            hint="a lowercase DNS name such as mlflow.example.com whose parent zone is in Route 53",
        )
    return domain


def check_server_size(size: str | None) -> str | None:
    """CPU:MIB, a Fargate task size for the tracking server; None: the profile's."""
    if size is None:
        return None
    from mlrig.tracking import container as ts_container

    try:
        ts_container.parse_size(size)
    except ValueError as exc:
        raise UsageError(
            f"invalid --server-size: {exc}",
            hint=f"e.g. {ts_container.TEAM_SIZE} (2 vCPU, 4 GiB) or 1024:2048 (1 vCPU, 2 GiB)",
        ) from None
    return size


def check(region: str, github_repo: str | None, domain: str | None) -> None:
    """Every AWS input at once, in the order a user reads the command line."""
    check_region(region)
    check_github_repo(github_repo)
    check_domain(domain)
