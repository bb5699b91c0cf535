"""GitHub Actions access through OIDC: one role, trusted by one repository, no keys and no
secret (MLflow is reached with a GitHub OIDC token too)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlrig.infra import config
from mlrig.infra.components import policies
from mlrig.infra.components.dvc_remote import RemoteRef
from mlrig.infra.components.remote_training import RemoteTraining

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"


@dataclass
class CiAccessArgs:
    github_repo: str  # owner/repo
    github_ref: str  # e.g. "ref:refs/heads/main" or "environment:prod"
    repository_arn: pulumi.Input[str]  # the ECR repository CI pushes model images to
    dvc: RemoteRef  # the DVC prefix CI reads and writes
    existing_provider_arn: pulumi.Input[str] | None = None  # one per account: reuse it if set
    training: RemoteTraining | None = None  # CI submits `mlrig retrain --remote` tasks
    region: str = ""


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
        if args.training is not None:
            self._training_policy(name, args, args.training, child)
        self.register_outputs({"role_arn": self.role.arn, "provider_arn": provider_arn})

    def _training_policy(
        self,
        name: str,
        args: CiAccessArgs,
        training: RemoteTraining,
        child: pulumi.ResourceOptions,
    ) -> None:
        aws.iam.RolePolicy(
            f"{name}-training-policy",
            role=self.role.id,
            policy=pulumi.Output.all(
                args.repository_arn,
                training.outputs["cluster_arn"],
                training.task_role.arn,
                training.execution_role.arn,
                training.log_group.arn,
                args.dvc.bucket_arn,
                training.parameter.arn,
            ).apply(
                lambda a: policies.ci_training(
                    region=args.region,
                    account=str(a[0]).split(":")[4],
                    cluster_arn=a[1],
                    family_prefix=config.training_family_prefix(pulumi.get_stack()),
                    role_arns=[a[2], a[3]],
                    log_group_arn=a[4],
                    bucket_arn=a[5],
                    results_prefix=config.REMOTE_RESULTS_PREFIX,
                    parameter_arn=a[6],
                    project_tag=config.TRAINING_PROJECT_TAG,
                )
            ),
            opts=child,
        )
