"""The repository template `mlrig init` renders (copier); data only, read with importlib.resources."""
