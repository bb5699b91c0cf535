"""The Stack façade over an AWS stack (`mlrig.core.stack.aws.stack`, Pulumi's Automation API)."""

from __future__ import annotations

from mlrig.core.stack.aws import stack as aws_stack
from mlrig.core.stack.facade import (
    Confirmation,
    DownReport,
    Progress,
    ServiceRow,
    Stack,
    UpOptions,
    UpReport,
    no_progress,
)
from mlrig.errors import MlrigError


class AwsFacade(Stack):
    kind = "aws"

    def request(self, options: UpOptions) -> aws_stack.AwsStackRequest:
        """The checked request `up`/`preview` act on: bad input fails here, before anything."""
        return aws_stack.AwsStackRequest(
            name=self.name,
            region=aws_stack.resolve_region(options.region),
            profile=options.profile,
            github_repo=options.github_repo,
            domain=options.domain,
            backend_url=options.backend_url,
            server_size=options.server_size,
        ).validate()

    def confirm_up(self, options: UpOptions) -> Confirmation | None:
        req = self.request(options)
        sized = f" --server-size {req.server_size}" if req.server_size else ""
        return Confirmation(
            f"Create or update AWS stack '{self.name}' ({req.profile}{sized}) in {req.region}? "
            f"It costs money while it exists (`mlrig stack plan --profile {req.profile}{sized}` "
            "shows how much)",
            "nothing was changed",
        )

    def up(self, options: UpOptions, progress: Progress = no_progress) -> UpReport:
        outputs = aws_stack.up(self.request(options), progress=progress)
        return UpReport(
            outputs,
            f"AWS stack '{self.name}' is up",
            f"MLflow at {outputs.mlflow_tracking_uri}; `mlrig stack outputs --stack {self.name}`",
        )

    def preview(self, options: UpOptions) -> dict[str, int]:
        """What `up` would change: a count per operation (create, update, delete, ...)."""
        return aws_stack.preview(self.request(options))

    def confirm_down(self, purge: bool) -> Confirmation | None:
        if purge:
            question = (
                f"Destroy AWS stack '{self.name}' AND delete its data (DVC objects, MLflow "
                "artifacts, images, the database)?"
            )
        else:
            question = f"Destroy AWS stack '{self.name}'?"
        return Confirmation(question, "nothing was destroyed")

    def down(self, *, purge: bool = False, progress: Progress = no_progress) -> DownReport:
        result = aws_stack.down(self.name, purge=purge, progress=progress)
        return DownReport(f"AWS stack '{self.name}' destroyed", result.remaining)

    def status(self) -> list[ServiceRow]:
        """What the outputs record, and whether the credentials reach the stack's account."""
        from mlrig.adapters import aws

        out = self.outputs()
        try:
            identity = aws.caller_identity(region=out.region)
            creds = ServiceRow("aws credentials", "valid", identity["arn"], True)
        except MlrigError as exc:
            creds = ServiceRow("aws credentials", "failing", exc.one_line(), False)
        return [
            creds,
            ServiceRow("mlflow", "provisioned", out.mlflow_tracking_uri, True),
            ServiceRow("registry", "provisioned", out.registry_url, True),
            ServiceRow("dvc remote", "provisioned", out.dvc_remote_url, True),
        ]
