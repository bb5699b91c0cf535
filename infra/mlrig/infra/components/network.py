"""The VPC: two AZs, public and private subnets, NAT only where the profile pays for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws


@dataclass
class NetworkArgs:
    region: str
    cidr: str = "10.42.0.0/16"
    az_count: int = 2  # RDS subnet groups need two AZs even for a single-AZ instance
    nat_gateways: bool = False  # production: one per AZ so an AZ outage keeps egress
    tags: dict[str, str] = field(default_factory=dict)


class Network(pulumi.ComponentResource):
    vpc: aws.ec2.Vpc
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids: list[pulumi.Output[str]]

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={**tags, "Name": name},
            opts=child,
        )
        # The default security group allows all traffic between its members: empty it.
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg", vpc_id=self.vpc.id, ingress=[], egress=[], tags=tags, opts=child
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags=tags, opts=child)
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=self.vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}],
            tags=tags,
            opts=child,
        )
        azs = aws.get_availability_zones_output(state="available").names
        self.public_subnet_ids, self.private_subnet_ids = [], []
        route_table_ids = [public_rt.id]
        octets = args.cidr.split(".")
        for i in range(args.az_count):
            az = azs[i]
            public = aws.ec2.Subnet(
                f"{name}-public-{i}",
                vpc_id=self.vpc.id,
                availability_zone=az,
                cidr_block=f"{octets[0]}.{octets[1]}.{i}.0/24",
                # Only tasks that ask for a public IP get one (assign_public_ip on the service).
                map_public_ip_on_launch=False,
                tags={**tags, "tier": "public"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{i}-rta",
                subnet_id=public.id,
                route_table_id=public_rt.id,
                opts=child,
            )
            private = aws.ec2.Subnet(
                f"{name}-private-{i}",
                vpc_id=self.vpc.id,
                availability_zone=az,
                cidr_block=f"{octets[0]}.{octets[1]}.{100 + i}.0/24",
                map_public_ip_on_launch=False,
                tags={**tags, "tier": "private"},
                opts=child,
            )
            routes: list[Any] = []
            if args.nat_gateways:
                eip = aws.ec2.Eip(f"{name}-nat-{i}-ip", domain="vpc", tags=tags, opts=child)
                nat = aws.ec2.NatGateway(
                    f"{name}-nat-{i}",
                    subnet_id=public.id,
                    allocation_id=eip.id,
                    tags=tags,
                    opts=child,
                )
                routes = [{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}]
            private_rt = aws.ec2.RouteTable(
                f"{name}-private-{i}-rt", vpc_id=self.vpc.id, routes=routes, tags=tags, opts=child
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{i}-rta",
                subnet_id=private.id,
                route_table_id=private_rt.id,
                opts=child,
            )
            route_table_ids.append(private_rt.id)
            self.public_subnet_ids.append(public.id)
            self.private_subnet_ids.append(private.id)
        # Gateway endpoints are free: artifact traffic to S3 skips NAT data charges.
        aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint",
            vpc_id=self.vpc.id,
            vpc_endpoint_type="Gateway",
            service_name=f"com.amazonaws.{args.region}.s3",
            route_table_ids=route_table_ids,
            tags=tags,
            opts=child,
        )
        self.register_outputs(
            {
                "vpc_id": self.vpc.id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
            }
        )
