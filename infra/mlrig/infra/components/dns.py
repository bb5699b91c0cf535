"""A custom domain for the tracking server: its ACM certificate (DNS-validated) and alias."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass
class Domain:
    name: str  # the server's host name, e.g. mlflow.example.com
    hosted_zone_id: pulumi.Input[str] | None = None  # None: the zone of its parent domain


@dataclass
class Certificate:
    """An issued certificate for a domain, and the Route 53 zone that answers for it."""

    arn: pulumi.Output[str]
    domain: str
    zone_id: pulumi.Input[str]


def certificate(name: str, domain: Domain, opts: pulumi.ResourceOptions) -> Certificate:
    """An ACM certificate validated through the domain's Route 53 zone."""
    zone_id: pulumi.Input[str] = (
        domain.hosted_zone_id
        or aws.route53.get_zone_output(name=domain.name.split(".", 1)[1]).zone_id
    )
    cert = aws.acm.Certificate(
        f"{name}-cert",
        domain_name=domain.name,
        validation_method="DNS",
        key_algorithm="EC_prime256v1",
        opts=opts,
    )
    option = cert.domain_validation_options[0]
    record = aws.route53.Record(
        f"{name}-cert-validation",
        zone_id=zone_id,
        name=option.resource_record_name,
        type=option.resource_record_type,
        records=[option.resource_record_value],
        ttl=300,
        allow_overwrite=True,
        opts=opts,
    )
    ready = aws.acm.CertificateValidation(
        f"{name}-cert-ready",
        certificate_arn=cert.arn,
        validation_record_fqdns=[record.fqdn],
        opts=opts,
    )
    return Certificate(arn=ready.certificate_arn, domain=domain.name, zone_id=zone_id)


def alias(
    name: str,
    cert: Certificate,
    target_name: pulumi.Input[str],
    target_zone: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> pulumi.Output[str]:
    """Point the certificate's domain at a load balancer or API domain; its https URL."""
    aws.route53.Record(
        f"{name}-alias",
        zone_id=cert.zone_id,
        name=cert.domain,
        type="A",
        aliases=[{"name": target_name, "zone_id": target_zone, "evaluate_target_health": False}],
        opts=opts,
    )
    return pulumi.Output.from_input(f"https://{cert.domain}")
