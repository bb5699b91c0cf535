"""Allows `python -m mlrig`."""

from mlrig.main import run

run()
