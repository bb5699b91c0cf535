"""One pulumi.ComponentResource per part of the AWS stack."""
