"""`mlrig demo`: the golden path on the local stack."""
