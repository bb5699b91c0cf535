"""An ECR repository: immutable tags, scanned on push, encrypted, with a lifecycle policy."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlrig.infra.components import policies


@dataclass
class RegistryArgs:
    repository_name: str
    kms_key_arn: pulumi.Input[str] | None = None  # None: AES256 with an AWS-owned key
    keep_tagged: int = 50
    untagged_days: int = 7
    force_delete: bool = False  # only `mlrig stack down --purge` turns this on
    # Lambda functions named like this may pull (endpoints, `config.function_name_pattern`)
    lambda_pull_functions: str | None = None


class Registry(pulumi.ComponentResource):
    repository: aws.ecr.Repository

    def __init__(
        self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:Registry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        encryption: list[aws.ecr.RepositoryEncryptionConfigurationArgsDict] = [
            {"encryption_type": "KMS", "kms_key": args.kms_key_arn}
            if args.kms_key_arn
            else {"encryption_type": "AES256"}
        ]
        # Immutable with no exclusion: mlrig pushes by content tag and verifies by digest, so
        # no moving tag (`latest`) is needed; a team that wants one adds an exclusion filter.
        self.repository = aws.ecr.Repository(
            name,
            name=args.repository_name,
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True},
            encryption_configurations=encryption,
            force_delete=args.force_delete,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=self.repository.name,
            policy=lifecycle_policy(args.keep_tagged, args.untagged_days),
            opts=child,
        )
        if args.lambda_pull_functions is not None:
            pattern = args.lambda_pull_functions
            aws.ecr.RepositoryPolicy(
                f"{name}-lambda-pull",
                repository=self.repository.name,
                # arn:aws:ecr:REGION:ACCOUNT:repository/NAME
                policy=self.repository.arn.apply(
                    lambda arn: policies.lambda_pull(arn.split(":")[4], arn.split(":")[3], pattern)
                ),
                opts=child,
            )
        self.register_outputs(
            {
                "repository_url": self.repository.repository_url,
                "repository_arn": self.repository.arn,
            }
        )


def lifecycle_policy(keep_tagged: int, untagged_days: int) -> str:
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"expire untagged images after {untagged_days} days",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": untagged_days,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 2,
                    "description": f"keep the last {keep_tagged} tagged images",
                    "selection": {
                        "tagStatus": "tagged",
                        "tagPatternList": ["*"],
                        "countType": "imageCountMoreThan",
                        "countNumber": keep_tagged,
                    },
                    "action": {"type": "expire"},
                },
            ]
        }
    )


def enhanced_scanning(
    name: str, opts: pulumi.ResourceOptions | None = None
) -> aws.ecr.RegistryScanningConfiguration:
    """Registry-wide Inspector scanning (billed per image scan); replaces basic scan-on-push."""
    return aws.ecr.RegistryScanningConfiguration(
        name,
        scan_type="ENHANCED",
        rules=[
            {
                "scan_frequency": "SCAN_ON_PUSH",
                "repository_filters": [{"filter": "*", "filter_type": "WILDCARD"}],
            }
        ],
        opts=opts,
    )
