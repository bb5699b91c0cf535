"""Where a retrain runs when it is not this process: a one-off task (`mlrig retrain --remote`).

- `spec`: the task contract (TaskSpec, TaskHandle, TaskStatus, Backend) every backend runs.

It has no command of its own: `mlrig retrain --remote` and `POST /train` use it.
"""
