"""The one error tree: every failure a user can cause or fix is an MlrigError.

Each class carries an exit code and a message that says what was wrong and what to do;
`mlrig.main` is the only place that turns them into output and exit codes.
"""

from __future__ import annotations


class Reported(BaseException):
    """What mlrig tells a user as one line and an exit code: every MlrigError, and a
    command's termination by a signal (`Terminated`)."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        text = self.message.strip().replace("\n", " ")
        if self.hint:
            text = f"{text} — {self.hint.strip()}"
        return text


class MlrigError(Reported, Exception):
    """Root of every error mlrig reports to a user."""

    exit_code = 1


class UsageError(MlrigError):
    """Bad input on the command line or in a file the user wrote."""

    exit_code = 2


class ConfigError(MlrigError):
    """mlrig's own stored state (config, StackOutputs) is missing, corrupt or too new."""

    exit_code = 3


class StackNotFound(ConfigError):
    def __init__(self, name: str, known: list[str]) -> None:
        where = f"known stacks: {', '.join(known)}" if known else "no stacks exist yet"
        super().__init__(
            f"no stack named '{name}' ({where})",
            hint="create one with `mlrig stack up --local`",
        )


class DependencyMissing(MlrigError):
    """A program or library mlrig needs is not installed."""

    exit_code = 4


class ServiceError(MlrigError):
    """A service mlrig runs or talks to failed (MLflow, registry, engine, AWS...)."""

    exit_code = 5


class PortInUse(ServiceError):
    pass


class CredentialsError(MlrigError):
    """Credentials are missing, wrong or expired."""

    exit_code = 6


class RemoteError(ServiceError):
    """A remote API (AWS, registry, MLflow) answered with an error."""


class Conflict(MlrigError):
    """The requested change collides with existing state (tag exists, dir not empty...)."""

    exit_code = 7


class Aborted(MlrigError):
    """The user declined a confirmation."""

    exit_code = 130


class Terminated(Reported):
    """A command was stopped by SIGTERM/SIGHUP (a CI cancel, `timeout`) and cleaned up first.

    Not an Exception, as KeyboardInterrupt is not: raised by a signal handler wherever the
    main thread happens to be, it must not be taken for an ordinary failure by an `except
    Exception` or `except MlrigError` that turns one into a fallback and carries on."""

    exit_code = 143
