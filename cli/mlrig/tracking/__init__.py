"""The tracking server's plugin: what MLflow's server process imports from mlrig.

MLflow loads `auth.authenticate` through its `authorization_function` setting; it checks
a bearer token as an OIDC token (`oidc`), sends Basic credentials through the password
throttle to MLflow's own check, guards the routes MLflow's auth leaves open (`guard`) and
writes the audit trail (`audit`). The server's settings, read by the CLI, the AWS program
and the rehearsal alike, are `server`. The server image copies this package alone: it
imports only itself (an import-linter contract holds that).
"""
