"""The DVC remote bucket: private, ACL-free, encrypted, versioned, TLS only, lifecycle."""

from __future__ import annotations

import json

from tests.helpers import make_plan

S3 = "aws:s3/"
BUCKET_ID = "mlrig-plan-20261126abcdef"  # what the mocks name the bucket
BUCKET_ARN = f"arn:aws:s3:::{BUCKET_ID}"


def test_bucket_itself(any_plan) -> None:
    bucket = any_plan.one(S3 + "bucket:Bucket")
    assert bucket.inputs["bucketPrefix"] == "mlrig-plan-"
    assert bucket.inputs["forceDestroy"] is False
    assert "acl" not in bucket.inputs and "policy" not in bucket.inputs
    assert any_plan.outputs["dvc_remote_url"] == f"s3://{BUCKET_ID}/dvc"


def test_all_public_access_blocked_and_acls_disabled(any_plan) -> None:
    block = any_plan.one(S3 + "bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert block.inputs == {
        "bucket": BUCKET_ID,
        "blockPublicAcls": True,
        "blockPublicPolicy": True,
        "ignorePublicAcls": True,
        "restrictPublicBuckets": True,
    }
    owner = any_plan.one(S3 + "bucketOwnershipControls:BucketOwnershipControls")
    assert owner.inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}


def test_encryption_defaults_to_sse_s3(any_plan) -> None:
    sse = any_plan.one(
        S3 + "bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    assert sse.inputs["bucket"] == BUCKET_ID
    assert sse.inputs["rules"] == [
        {
            "applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"},
            "bucketKeyEnabled": False,
        }
    ]


def test_kms_by_config() -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/abcd"
    plan = make_plan("small", kms_key_arn=key)
    sse = plan.one(
        S3 + "bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "aws:kms",
        "kmsMasterKeyId": key,
    }
    assert sse.inputs["rules"][0]["bucketKeyEnabled"] is True


def test_versioning_and_lifecycle(any_plan) -> None:
    versioning = any_plan.one(S3 + "bucketVersioning:BucketVersioning")
    assert versioning.inputs["versioningConfiguration"] == {"status": "Enabled"}
    (rule,) = any_plan.one(S3 + "bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs[
        "rules"
    ]
    assert rule["status"] == "Enabled"
    assert rule["noncurrentVersionExpiration"] == {"noncurrentDays": 30}
    assert rule["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7}


def test_policy_denies_plain_http_and_old_tls(any_plan) -> None:
    policy = json.loads(any_plan.one(S3 + "bucketPolicy:BucketPolicy").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert set(by_sid) == {"DenyInsecureTransport", "DenyOutdatedTls"}
    for st in by_sid.values():
        assert st["Effect"] == "Deny" and st["Principal"] == "*" and st["Action"] == "s3:*"
        assert st["Resource"] == [BUCKET_ARN, f"{BUCKET_ARN}/*"]
    assert by_sid["DenyInsecureTransport"]["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }
    assert by_sid["DenyOutdatedTls"]["Condition"] == {"NumericLessThan": {"s3:TlsVersion": "1.2"}}


def test_access_logging_only_when_asked(any_plan) -> None:
    assert any_plan.of_type(S3 + "bucketLogging:BucketLogging") == []
    plan = make_plan("small", access_log_bucket="org-s3-logs")
    logging = plan.one(S3 + "bucketLogging:BucketLogging")
    assert logging.inputs["targetBucket"] == "org-s3-logs"
    assert logging.inputs["targetPrefix"] == f"{BUCKET_ID}/"


def test_teardown_purge_allows_force_destroy() -> None:
    bucket = make_plan("small", force_delete=True).one(S3 + "bucket:Bucket")
    assert bucket.inputs["forceDestroy"] is True
