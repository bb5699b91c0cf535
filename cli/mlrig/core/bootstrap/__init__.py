"""`mlrig init` and `mlrig update` (the exception to `core/<group>/`: the two top-level
commands share this package): render the pipeline template into a git+DVC repo, or with
`mlrig init --adopt` (adopt.py) wire an existing one to a stack without rewriting it.
"""
