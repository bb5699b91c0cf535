"""Where a retrain runs when it is not this process: a one-off task (`mlrig retrain --remote`).

- `spec`: the task contract (TaskSpec, TaskHandle, TaskStatus, Backend) every backend runs.
- `image`: the repository's own trainer image (its requirements.txt, mlrig's wheel with the
  few dependencies the task's entrypoint imports, git), content-addressed, pushed to the
  stack's registry and named by the digest read back.
- `task`: the entrypoint inside the task (`python -m mlrig.core.compute.task`): clone the
  submitted commit from its bundle, run retrain's own pipeline and gate, `dvc push`, leave
  a bundle of the one new commit and result.json for the caller.
- `local`: the local stack's backend: the task as a container on the local engine.
- `aws`: the AWS backend: the task as a Fargate RunTask on the stack's ECS cluster (submit,
  lines, status, stop).
- `price`: a task's size checked against Fargate's table and an hour of it priced, on demand
  and on Spot (`mlrig retrain --remote --dry-run`).
- `remote`: the caller's side: submit, follow, apply the result (or `--attach` to a task).

It has no command of its own: `mlrig retrain --remote` and `POST /train` use it.
"""
