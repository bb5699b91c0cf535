"""A SQLAlchemy query's result, read the way the pipeline's ingest stage reads one: any
database SQLAlchemy reaches (sqlite:///…, postgresql://…; the driver is the user's install),
the query run in a transaction that is rolled back, so a read never writes.

Credentials are never echoed: every message names the URL with its password hidden, and a
driver's error text has the password removed should it quote it."""

from __future__ import annotations

from typing import Any

from mlrig.errors import ConfigError, DependencyMissing, ServiceError, UsageError


def public_url(url: str) -> str:
    """The URL as it may be printed: no password (the user name and host stay)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<a URL that is not a SQLAlchemy URL>"


def query(url: str, sql: str, max_rows: int) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of `sql` on the database at `url`, at most max_rows rows.
    A bad URL or a missing driver: UsageError/DependencyMissing; the database refusing the
    connection or the query: ServiceError; more rows than max_rows: ConfigError."""
    import sqlalchemy
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import make_url

    public = public_url(url)
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        raise UsageError(
            f"{public}: not a SQLAlchemy URL",
            hint="give dialect[+driver]://user@host:port/database, e.g. postgresql://app@db/prod",
        ) from None
    secret = parsed.password
    try:
        engine = sqlalchemy.create_engine(parsed)
    except sa_exc.NoSuchModuleError:
        raise UsageError(f"{public}: SQLAlchemy has no dialect {parsed.drivername!r}") from None
    except ImportError as exc:
        raise DependencyMissing(
            f"{public}: the database driver is not installed ({exc.name or exc})",
            hint="install the driver into mlrig's environment; for PostgreSQL: pip install "
            "'mlrig[postgres]' and a postgresql+psycopg:// URL",
        ) from None
    try:
        with engine.connect() as conn:  # leaving without commit rolls the transaction back
            result = conn.execute(sqlalchemy.text(sql))
            if not result.returns_rows:
                raise UsageError(f"the labels query on {public} returns no rows: use a SELECT")
            columns = [str(c) for c in result.keys()]  # noqa: SIM118 - a Result iterates rows
            rows = [tuple(r) for r in result.fetchmany(max_rows + 1)]
    except sa_exc.DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        if secret:
            detail = detail.replace(str(secret), "***")
        raise ServiceError(
            f"{public}: {type(exc.orig).__name__}: {detail[:300]}",
            hint="check the query and that the database answers (a password comes from the "
            "URL or the driver's own environment, e.g. PGPASSWORD)",
        ) from None
    except sa_exc.SQLAlchemyError as exc:
        raise ServiceError(f"{public}: {type(exc).__name__}") from None
    finally:
        engine.dispose()
    if len(rows) > max_rows:
        raise ConfigError(f"the labels query on {public} returns more than {max_rows} rows")
    return columns, rows
