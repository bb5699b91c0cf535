"""The `mlrig` command: joins the command groups and maps errors to exit codes.

This is the only place that turns an exception into output. Command modules import only
typer/rich at module level so `mlrig --help` stays instant.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from mlrig.errors import MlrigError
from mlrig.version import __version__

INTERNAL_ERROR_EXIT = 70


def debug_enabled() -> bool:
    return os.environ.get("MLRIG_DEBUG", "") not in ("", "0", "false")


def report(message: str, exit_code: int) -> typer.Exit:
    """Print one red line on stderr and return the Exit that carries the code."""
    from mlrig.ui import err_console

    err_console().print(
        f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True, emoji=False
    )
    return typer.Exit(exit_code)


class MlrigGroup(TyperGroup):
    """Top-level group that maps every exception to one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except MlrigError as exc:
            if debug_enabled():
                traceback.print_exc()
            raise report(_escape(exc.one_line()), exc.exit_code) from exc
        except KeyboardInterrupt as exc:
            raise report("interrupted", 130) from exc
        except BrokenPipeError:  # output piped into `head` and closed early
            raise typer.Exit(0) from None
        except Exception as exc:  # noqa: BLE001 - the single catch-all, by design
            if debug_enabled():
                traceback.print_exc()
            raise report(
                _escape(
                    f"internal error: {type(exc).__name__}: {exc} "
                    "(rerun with --debug for the traceback and report it)"
                ),
                INTERNAL_ERROR_EXIT,
            ) from exc


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


app = typer.Typer(
    cls=MlrigGroup,
    name="mlrig",
    help="An ML team's MLOps backbone: provision a stack, bootstrap repos, ship model images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlrig {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    if debug:
        os.environ["MLRIG_DEBUG"] = "1"


def _register() -> None:
    # command modules import only typer/rich at module level; the work is imported lazily
    from mlrig.commands import (
        access,
        checkout,
        demo,
        doctor,
        image,
        init,
        rehearse,
        retrain,
        setup,
        stack,
        trace,
        trainer,
    )

    stack.app.command("rehearse")(rehearse.rehearse)
    app.add_typer(stack.app, name="stack")
    app.command("init")(init.init_cmd)
    app.command("update")(init.update_cmd)
    app.add_typer(image.app, name="image")
    app.command("trace")(trace.trace)
    app.command("checkout")(checkout.checkout)
    app.command("retrain")(retrain.retrain)
    app.command("demo")(demo.demo)
    app.command("doctor")(doctor.doctor)
    app.add_typer(setup.app, name="setup")
    app.add_typer(access.app, name="access")
    app.add_typer(trainer.app, name="trainer")


_register()


def run() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    run()
