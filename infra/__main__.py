"""Entry point for the `pulumi` CLI (Pulumi.yaml: `main: infra/`): config in, outputs out."""

from mlrig.infra import program
from mlrig.infra.config import from_pulumi_config

program.export(program.build(from_pulumi_config()))
