"""`mlrig trainer …`: serve (the retraining service) and token."""
