"""`mlrig access …`: apply, show, add-user, add-machine, rotate, log; and the machine
identities other features log in as.
"""
