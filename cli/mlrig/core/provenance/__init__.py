"""`mlrig trace` and `mlrig checkout` (the exception to `core/<group>/`: both read and
restore one provenance record, `record`).
"""
