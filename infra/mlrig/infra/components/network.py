"""The VPC: two AZs, public and private subnets, NAT only where the profile pays for it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass
class NetworkArgs:
    region: str  # spells the S3 gateway endpoint's service name
    cidr: str = "10.42.0.0/16"  # a /16: subnets are carved from its first two octets
    az_count: int = 2  # RDS subnet groups need two AZs even for a single-AZ instance
    nat_gateways: bool = False  # production: one per AZ so an AZ outage keeps egress


@dataclass
class NetworkRef:
    """What the other components need to know of a network (a Network's `ref`)."""

    vpc_id: pulumi.Input[str]
    cidr: str
    public_subnet_ids: Sequence[pulumi.Input[str]]
    private_subnet_ids: Sequence[pulumi.Input[str]]


class Network(pulumi.ComponentResource):
    vpc: aws.ec2.Vpc
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids: list[pulumi.Output[str]]
    ref: NetworkRef

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:Network", name, None, opts)
        self._name, self._args = name, args
        self._child = child = pulumi.ResourceOptions(parent=self)
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": name},
            opts=child,
        )
        # The default security group allows all traffic between its members: empty it.
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg", vpc_id=self.vpc.id, ingress=[], egress=[], opts=child
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, opts=child)
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=self.vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}],
            opts=child,
        )
        azs = aws.get_availability_zones_output(state="available").names
        self.public_subnet_ids, self.private_subnet_ids = [], []
        route_table_ids = [public_rt.id]
        for i in range(args.az_count):
            public = self._subnet(i, azs[i], "public", route_table_id=public_rt.id)
            nat = self._nat_gateway(i, public) if args.nat_gateways else None
            routes: list[aws.ec2.RouteTableRouteArgsDict] = (
                [{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}] if nat else []
            )
            private_rt = aws.ec2.RouteTable(
                f"{name}-private-{i}-rt", vpc_id=self.vpc.id, routes=routes, opts=child
            )
            private = self._subnet(i, azs[i], "private", route_table_id=private_rt.id)
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
            opts=child,
        )
        self.ref = NetworkRef(
            vpc_id=self.vpc.id,
            cidr=args.cidr,
            public_subnet_ids=self.public_subnet_ids,
            private_subnet_ids=self.private_subnet_ids,
        )
        self.register_outputs(
            {
                "vpc_id": self.vpc.id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
            }
        )

    def _subnet(
        self, i: int, az: pulumi.Input[str], tier: str, *, route_table_id: pulumi.Input[str]
    ) -> aws.ec2.Subnet:
        """Subnet `i` of a tier (public: 10.x.i.0/24, private: 10.x.(100+i).0/24), routed."""
        name, octets = f"{self._name}-{tier}-{i}", self._args.cidr.split(".")
        subnet = aws.ec2.Subnet(
            name,
            vpc_id=self.vpc.id,
            availability_zone=az,
            cidr_block=f"{octets[0]}.{octets[1]}.{i if tier == 'public' else 100 + i}.0/24",
            # Only tasks that ask for a public IP get one (assign_public_ip on the service).
            map_public_ip_on_launch=False,
            tags={"tier": tier},
            opts=self._child,
        )
        aws.ec2.RouteTableAssociation(
            f"{name}-rta", subnet_id=subnet.id, route_table_id=route_table_id, opts=self._child
        )
        return subnet

    def _nat_gateway(self, i: int, public: aws.ec2.Subnet) -> aws.ec2.NatGateway:
        eip = aws.ec2.Eip(f"{self._name}-nat-{i}-ip", domain="vpc", opts=self._child)
        return aws.ec2.NatGateway(
            f"{self._name}-nat-{i}", subnet_id=public.id, allocation_id=eip.id, opts=self._child
        )
