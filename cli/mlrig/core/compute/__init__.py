"""Where a one-off training task runs for `mlrig retrain --remote` (no command of its own).

`spec` is the contract every backend runs (TaskSpec, TaskHandle, TaskStatus, Backend).
"""
