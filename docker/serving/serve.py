"""The serving image's entry point: mlrig's model server, the `mlrig_serve` package beside this
file (the image copies both to /opt/mlrig)."""

from mlrig_serve.app import main

if __name__ == "__main__":
    main()
