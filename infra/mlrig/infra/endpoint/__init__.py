"""An endpoint's own Pulumi program (project `mlrig-endpoint`, one stack per endpoint): a
Lambda container function by digest, its alias `live`, a keyed route on the base stack's
HTTP API (or, warm, a Fargate service behind it). It reads the base stack through a
StackReference and owns none of the base stack's resources."""
