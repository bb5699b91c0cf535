"""The serving image's entry point: mlrig's model server, the `mlrig_serve` package beside this
file (the image copies both to /opt/mlrig). Started by AWS Lambda (AWS_LAMBDA_RUNTIME_API set)
it answers Lambda's events through the runtime interface client (`mlrig_serve.aws_lambda`);
otherwise it serves HTTP."""

import os

if __name__ == "__main__":
    if os.environ.get("AWS_LAMBDA_RUNTIME_API"):
        from mlrig_serve.aws_lambda import main
    else:
        from mlrig_serve.app import main
    main()
