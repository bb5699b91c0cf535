"""Registry mechanics: push any image to an OCI registry or ECR with immutable tags, the
layer cache and the registry API's direct path. Used by `image push` and by the AWS
stack (the tracking server's image); no command of its own.
"""
