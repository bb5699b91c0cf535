"""`mlrig image …`: build, push and run lean model-serving images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlrig.commands.options import StackOpt
from mlrig.ui import console, err_console, spinner

app = typer.Typer(help="Build, push and run model-serving images.", no_args_is_help=True)


def _progress(msg: str) -> None:
    err_console().print(f"[dim]•[/] {msg}", markup=True, highlight=False)


@app.command()
def build(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="MLflow model URI: models:/NAME/VERSION, models:/NAME@ALIAS, "
            "models:/m-ID (an MLflow 3 logged model), runs:/ID/PATH (default: the repo's latest "
            "registered model).",
        ),
    ] = None,
    repo: Annotated[
        Path | None,
        typer.Option(
            help="Generated repo to read the model name and provenance from (default: cwd)."
        ),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option("--tag", "-t", help="Local image reference (default: mlrig/NAME:vVERSION)."),
    ] = None,
    platform: Annotated[
        str | None, typer.Option(help="linux/amd64 or linux/arm64 (default: the engine's).")
    ] = None,
    base_image: Annotated[
        str | None,
        typer.Option(help="Base image present on the engine (default: mlrig's Python 3.11 base)."),
    ] = None,
    stack: StackOpt = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Rebuild every layer.")] = False,
) -> None:
    """Build a serving image: dependencies layer keyed by the model's pins, model last."""
    from mlrig.core.image import build as image
    from mlrig.core.image import model as image_model

    if model is not None:
        image_model.check_uri(model)  # before the base image or the stack is touched
    with err_console().status("building the serving image"):
        built = image.build(
            model,
            repo=repo,
            tag=tag,
            platform=platform,
            base_image=base_image,
            stack=stack,
            no_cache=no_cache,
            progress=_progress,
        )
    prov = built.provenance
    console().print(
        f"[green]built[/] {built.ref} ({built.image_id[7:19]}, "
        f"{built.size / 1e6:.0f} MB, {built.seconds:.1f} s) from {prov.model_uri}"
        + (f" — run {prov.run_id}" if prov.run_id else "")
    )


@app.command()
def push(
    image_ref: Annotated[
        str | None,
        typer.Argument(metavar="[IMAGE]", help="Local image (default: the last one built)."),
    ] = None,
    stack: StackOpt = None,
    registry_endpoint: Annotated[
        str | None,
        typer.Option(
            help="Push to this host:port instead of the registry host (private ECR endpoints, "
            "proxies); also $MLRIG_ECR_REGISTRY_ENDPOINT."
        ),
    ] = None,
) -> None:
    """Push to the stack's registry, never overwriting a tag; the digest is verified."""
    from mlrig.core.image import push as serving_push
    from mlrig.core.image.last_built import last_built
    from mlrig.core.stack import stacks

    outputs = stacks.outputs(stacks.resolve_name(stack))
    ref = image_ref or last_built()
    with spinner(f"pushing {ref}"):  # rich is imported while the registry answers
        result = serving_push.push(ref, outputs, endpoint=registry_endpoint, progress=_progress)
    if result.tags:
        console().print(
            f"[green]pushed[/] {', '.join(result.tags)}"
            + (f" (unchanged: {', '.join(result.unchanged)})" if result.unchanged else "")
        )
    else:
        console().print(
            f"[green]already in the registry[/] (unchanged: {', '.join(result.unchanged)})"
        )
    console().print(result.reference, markup=False, soft_wrap=True)


@app.command()
def run(
    image_ref: Annotated[
        str | None,
        typer.Argument(metavar="[IMAGE]", help="Local image (default: the last one built)."),
    ] = None,
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 8080,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. The server has no authentication: 0.0.0.0 exposes "
            "it to the network."
        ),
    ] = "127.0.0.1",
    memory: Annotated[
        str,
        typer.Option(
            help="Memory limit of the container, swap included (docker units: 512m, 2g); "
            "beyond it the server is killed, not the host."
        ),
    ] = "1g",
    smoke: Annotated[
        bool,
        typer.Option(
            "--smoke", help="Send the model's input example, check the answer, then stop."
        ),
    ] = False,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="Keep the container: with --smoke, leave the server running; if it fails, "
            "keep it for `docker logs`.",
        ),
    ] = False,
    capture: Annotated[
        int,
        typer.Option(
            metavar="PCT",
            help="Record this share (0-100 %) of predictions as JSON lines (off by default).",
        ),
    ] = 0,
    capture_dir: Annotated[
        Path | None,
        typer.Option(
            "--capture-dir", help="Where --capture writes its records (default: ./captures)."
        ),
    ] = None,
) -> None:
    """Start the image locally (host networking, no pulls) and wait until it is healthy."""
    from mlrig.core.image import run as image_run

    with err_console().status("starting the model server"):
        running = image_run.run(
            image_ref,
            port=port,
            host=host,
            memory=memory,
            smoke=smoke,
            keep=keep,
            capture=capture,
            capture_dir=capture_dir,
        )
    console().print(
        f"[green]healthy[/] in {running.seconds_to_healthy:.1f} s at {running.url} "
        f"(listening on {running.bind}, memory limit {running.memory_bytes / 2**20:.0f} MiB)",
        highlight=False,
    )
    if running.captures is not None:
        console().print(
            f"capturing {capture}% of predictions into {running.captures} "
            f"(counters: {running.url}/capture)",
            markup=False,
            highlight=False,
        )
    if running.smoke_predictions is not None:
        console().print(
            f"[green]smoke check passed[/]: predictions {running.smoke_predictions}",
            markup=True,
            highlight=False,
        )
    if not smoke or keep:
        console().print(
            f"curl -s {running.url}/invocations -H 'Content-Type: application/json' "
            '-d \'{"dataframe_split": {"columns": [...], "data": [[...]]}}\'',
            markup=False,
        )
        console().print(f"stop it with: docker rm -f {running.container}", markup=False)


@app.command()
def status() -> None:
    """The serving containers `image run` started: state, memory kills and restarts."""
    from mlrig.core.image import run as image_run

    found = image_run.status()
    for name, state in found:
        console().print(
            image_run.describe(name, state), markup=False, highlight=False, soft_wrap=True
        )
    if not found:
        console().print("no serving container (start one with `mlrig image run`)", markup=False)
    if any(state.oom_killed or state.status != "running" for _, state in found):
        raise typer.Exit(1)
