"""`mlrig doctor`: check every link of the chain."""
