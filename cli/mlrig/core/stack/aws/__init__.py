"""The AWS stack: the Pulumi program run from the CLI, and its façade."""
