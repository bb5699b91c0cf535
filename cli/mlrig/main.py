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

from mlrig.errors import Reported

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
        except Reported as exc:  # an MlrigError, or a termination by a signal
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


_app = typer.Typer(
    cls=MlrigGroup,
    name="mlrig",
    help="An ML team's MLOps backbone: provision a stack, bootstrap repos, ship model images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        from mlrig.version import describe

        typer.echo(describe())
        raise typer.Exit()


@_app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print mlrig's version, its template's and its stack contract's.",
    ),
) -> None:
    if debug:
        os.environ["MLRIG_DEBUG"] = "1"


# Every top-level name: (module under mlrig.commands, attribute, a group or a command).
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "stack": ("stack", "app", True),
    "init": ("init", "init_cmd", False),
    "update": ("init", "update_cmd", False),
    "image": ("image", "app", True),
    "deploy": ("deploy", "app", True),
    "monitor": ("monitor", "monitor", False),
    "trace": ("trace", "trace", False),
    "checkout": ("checkout", "checkout", False),
    "retrain": ("retrain", "retrain", False),
    "demo": ("demo", "demo", False),
    "doctor": ("doctor", "doctor", False),
    "setup": ("setup", "app", True),
    "access": ("access", "app", True),
    "trainer": ("trainer", "app", True),
}


_registered: set[str] = set()


def _register(names: list[str]) -> None:
    """Add these top-level commands and groups to the app, in COMMANDS' order (once each).
    Command modules import only typer/rich at module level; the work is imported lazily."""
    from importlib import import_module

    for name, (module_name, attr, group) in COMMANDS.items():
        if name not in names or name in _registered:
            continue
        module = import_module(f"mlrig.commands.{module_name}")
        if name == "stack":
            from mlrig.commands import rehearse

            module.app.command("rehearse")(rehearse.rehearse)
        if group:
            _app.add_typer(getattr(module, attr), name=name)
        else:
            _app.command(name)(getattr(module, attr))
        _registered.add(name)


def _requested(argv: list[str]) -> list[str]:
    """The one top-level name argv invokes, when it names one; else every name (help, a
    typo's error, completion). Typer turns the whole tree into click commands before it
    parses, so `mlrig image push` need not build `stack`, `access` and the rest."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first in COMMANDS and not os.environ.get("_MLRIG_COMPLETE"):
        return [first]
    return list(COMMANDS)


def __getattr__(name: str) -> typer.Typer:
    """`mlrig.main.app`, for an importer (tests, `python -m`): every command registered."""
    if name == "app":
        _register(list(COMMANDS))
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:  # `typer mlrig.main …` looks for an `app` in dir(module)
    return sorted([*globals(), "app"])


def run() -> None:
    _register(_requested(sys.argv[1:]))
    try:
        _app()
    except BrokenPipeError:
        sys.exit(0)
    finally:
        # The process ends here. Its last garbage collections walk every object the imports
        # made (pydantic's schemas, rich, requests, docker): ~0.1 s of a whole command. Frozen
        # objects are skipped; the atexit handlers still run and the OS takes the memory.
        import gc

        gc.freeze()


if __name__ == "__main__":
    run()
