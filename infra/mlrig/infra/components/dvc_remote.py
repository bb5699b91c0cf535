"""The DVC remote: a private, encrypted, versioned S3 bucket reachable only over TLS."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass
class DvcRemoteArgs:
    bucket_prefix: str  # S3 appends a unique suffix; at most 37 characters
    prefix: str = "dvc"
    kms_key_arn: pulumi.Input[str] | None = None  # None: SSE-S3 (AES256), no KMS charges
    noncurrent_version_days: int = 30
    abort_multipart_days: int = 7
    access_log_bucket: pulumi.Input[str] | None = None  # an existing log bucket; None: none
    force_destroy: bool = False


@dataclass
class RemoteRef:
    """One prefix of the remote's bucket, as a reader or writer of it needs to know it."""

    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    prefix: str


class DvcRemote(pulumi.ComponentResource):
    bucket: aws.s3.Bucket
    url: pulumi.Output[str]

    def __init__(
        self, name: str, args: DvcRemoteArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:DvcRemote", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket_prefix=args.bucket_prefix,
            force_destroy=args.force_destroy,
            opts=child,
        )
        bucket_id = self.bucket.id
        self._lock_down(name, args)
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket_id,
            versioning_configuration={"status": "Enabled"},
            opts=child,
        )
        # Versioning keeps overwritten DVC objects recoverable; the lifecycle bounds that cost.
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket_id,
            rules=[
                {
                    "id": "expire-noncurrent-and-abort-multipart",
                    "status": "Enabled",
                    "filter": {},
                    "noncurrent_version_expiration": {
                        "noncurrent_days": args.noncurrent_version_days
                    },
                    "abort_incomplete_multipart_upload": {
                        "days_after_initiation": args.abort_multipart_days
                    },
                }
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        if args.access_log_bucket:
            aws.s3.BucketLogging(
                f"{name}-access-logs",
                bucket=bucket_id,
                target_bucket=args.access_log_bucket,
                target_prefix=pulumi.Output.concat(bucket_id, "/"),
                opts=child,
            )
        self.prefix = args.prefix
        self.url = pulumi.Output.concat("s3://", bucket_id, "/", args.prefix)
        self.register_outputs(
            {"bucket_name": bucket_id, "bucket_arn": self.bucket.arn, "url": self.url}
        )

    def ref(self, prefix: str) -> RemoteRef:
        """Another prefix of this bucket (the MLflow artifacts live beside the DVC cache)."""
        return RemoteRef(bucket_name=self.bucket.id, bucket_arn=self.bucket.arn, prefix=prefix)

    def _lock_down(self, name: str, args: DvcRemoteArgs) -> None:
        """No ACLs, no public access, encrypted at rest, TLS 1.2+ only in transit."""
        child, bucket_id = pulumi.ResourceOptions(parent=self), self.bucket.id
        # Ownership enforced: ACLs are disabled, so no object can be shared by ACL.
        ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket_id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child,
        )
        block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block",
            bucket=bucket_id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        rules: list[aws.s3.BucketServerSideEncryptionConfigurationRuleArgsDict] = [
            {
                "apply_server_side_encryption_by_default": (
                    {"sse_algorithm": "aws:kms", "kms_master_key_id": args.kms_key_arn}
                    if args.kms_key_arn
                    else {"sse_algorithm": "AES256"}
                ),
                "bucket_key_enabled": bool(args.kms_key_arn),
            }
        ]
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=bucket_id, rules=rules, opts=child
        )
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket_id,
            policy=self.bucket.arn.apply(tls_only_policy),
            # A policy put before the public-access block would be checked as public.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[block, ownership]),
        )


def tls_only_policy(bucket_arn: str) -> str:
    """Deny every request that is not over TLS 1.2+ (for every principal, so it can't leak)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
                {
                    "Sid": "DenyOutdatedTls",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
                },
            ],
        }
    )
