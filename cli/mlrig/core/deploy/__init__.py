"""`mlrig deploy [REF]`: a model version, by digest, behind an authenticated endpoint of
the local stack (model containers behind the stack's nginx, `endpoints`) or of an AWS stack
(a Lambda function, or a Fargate service with `--warm`, behind its HTTP API: `aws`; the
command picks one by the stack's kind); `mlrig deploy status`, `list`, `promote`, `abort`,
`rollback`, `delete`, `logs`, and the endpoint's `keys` (create, list, revoke). `serving`
resolves `mlrig trace endpoint:NAME` (the trace command's one form from above provenance).
"""
