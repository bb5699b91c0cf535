"""mlrig.infra: the AWS stack as a Pulumi program (see program.py) and its components."""
