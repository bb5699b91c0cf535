"""`mlrig deploy [REF]`: a model version, by digest, behind an authenticated endpoint of
the local stack (model containers behind the stack's nginx); `mlrig deploy status`, `list`,
`promote`, `abort`, `rollback`, `delete`, `logs`, and the endpoint's `keys` (create, list,
revoke).
"""
