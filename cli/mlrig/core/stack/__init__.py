"""`mlrig stack …`: up, status, outputs, env, list, down, plan, preview, rehearse.
The façade (`facade`, `stacks`) over the two back-ends, `local` and `aws`.
"""
