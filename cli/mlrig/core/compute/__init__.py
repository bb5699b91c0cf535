"""Where a one-off training task runs for `mlrig retrain --remote` (no command of its own).

`spec` is the contract every backend runs (TaskSpec, TaskHandle, TaskStatus, Backend);
`aws` runs it as a Fargate RunTask on the stack's ECS cluster (submit, lines, status, stop);
`price` checks a task's size against Fargate's table and prices an hour of it, on demand and
on Spot (`mlrig retrain --remote --dry-run`).
"""
