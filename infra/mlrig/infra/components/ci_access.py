"""GitHub Actions access through OIDC: one role, trusted by one repository, no keys and no
secret (MLflow is reached with a GitHub OIDC token too)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlrig.infra.components import policies
from mlrig.infra.components.dvc_remote import RemoteRef

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"


@dataclass
class CiAccessArgs:
    github_repo: str  # owner/repo
    github_ref: str  # e.g. "ref:refs/heads/main" or "environment:prod"
    repository_arn: pulumi.Input[str]  # the ECR repository CI pushes model images to
    dvc: RemoteRef  # the DVC prefix CI reads and writes
    existing_provider_arn: pulumi.Input[str] | None = None  # one per account: reuse it if set


class CiAccess(pulumi.ComponentResource):
    role: aws.iam.Role

    def __init__(
        self, name: str, args: CiAccessArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:CiAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        provider_arn: pulumi.Input[str]
        if args.existing_provider_arn:
            provider_arn = args.existing_provider_arn
        else:
            provider_arn = aws.iam.OpenIdConnectProvider(
                f"{name}-github-oidc",
                url=GITHUB_OIDC_URL,
                client_id_lists=["sts.amazonaws.com"],
                opts=child,
            ).arn
        self.role = aws.iam.Role(
            f"{name}-role",
            description=f"GitHub Actions of {args.github_repo}",
            assume_role_policy=pulumi.Output.from_input(provider_arn).apply(
                lambda arn: policies.github_trust(arn, args.github_repo, args.github_ref)
            ),
            max_session_duration=3600,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-policy",
            role=self.role.id,
            policy=pulumi.Output.all(args.repository_arn, args.dvc.bucket_arn).apply(
                lambda a: policies.ci_role(a[0], a[1], args.dvc.prefix)
            ),
            opts=child,
        )
        self.register_outputs({"role_arn": self.role.arn, "provider_arn": provider_arn})
