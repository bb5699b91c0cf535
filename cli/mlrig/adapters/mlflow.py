"""MLflow's client behind one door: lazy import, credentials from a stack, errors mapped.

Core code asks this module for models, runs and versions; it never imports `mlflow`.
"""

from __future__ import annotations
