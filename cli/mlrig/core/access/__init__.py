"""`mlrig access …`: apply, show, add-user, add-machine, rotate, log; and the machine
identities other features log in as, and the environment of one identity
(`mlrig stack env --as`, `identity_env`).
"""
