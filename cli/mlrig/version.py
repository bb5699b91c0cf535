"""mlrig: an ML team's MLOps backbone — stack, repository bootstrap, model images."""

__version__ = "0.1.0"
