"""`mlrig retrain`: run a generated repository's pipeline again and ship what passes."""
