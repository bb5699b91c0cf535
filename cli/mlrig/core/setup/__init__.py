"""`mlrig setup engine`: a Docker engine that answers, and mlrig's base image."""
