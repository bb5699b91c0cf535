"""What `mlrig stack rehearse` runs: the AWS stack's containers, locally."""
