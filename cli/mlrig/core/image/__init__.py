"""`mlrig image …`: build, push, run, status."""
