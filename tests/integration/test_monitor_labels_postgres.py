"""monitor's ground truth from a real PostgreSQL: `--labels-query` with a
`postgresql+psycopg://` URL (the `postgres` extra's driver) against a throwaway cluster from
Debian's server binaries (TLS and scram passwords only, as `mlrig stack rehearse` runs it).

What this proves: the query's rows become the validated labels table (text ids, numeric
labels, row indexes) through the driver mlrig installs; a query that would write runs in a
transaction that is rolled back; a wrong password, a database that is not there, a bad URL
and a driver that is not installed are each one line naming the URL with its password
hidden, and the password appears nowhere in the message. What it does not prove: managed
PostgreSQL services (RDS's certificates, IAM auth) or other drivers. About 5 s on the shared
2-CPU machine, most of it initdb.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from mlrig.adapters import postgres
from mlrig.core.monitor import _labels
from mlrig.errors import DependencyMissing, MlrigError, ServiceError, UsageError
from tests.helpers import postgres_cluster

pytestmark = pytest.mark.integration
IDS = ["4f6a1a52-5c35-4cb2-9b0e-53a8d1f0c001", "4f6a1a52-5c35-4cb2-9b0e-53a8d1f0c002"]
QUERY = "SELECT inference_id, label, row_in_request AS row FROM outcomes ORDER BY 1, 3"


@pytest.fixture(scope="module")
def labels_db() -> Iterator[dict[str, Any]]:
    """A database `outcomes` owned by a login role that owns nothing else, holding three
    labels; yields its URL parts."""
    password = secrets.token_urlsafe(12)
    with postgres_cluster() as cluster:
        postgres.create_database(cluster, name="outcomes", owner="app", password=password)
        postgres.psql(
            cluster,
            """
            SET ROLE app;
            CREATE TABLE outcomes (inference_id text, label integer, row_in_request integer);
            INSERT INTO outcomes VALUES (:'a', 1, 0), (:'b', 0, 0), (:'b', 1, 1);
            """,
            database="outcomes",
            variables={"a": IDS[0], "b": IDS[1]},
        )
        yield {"cluster": cluster, "password": password, "port": cluster.port}


def url(db: dict[str, Any], password: str | None = None, database: str = "outcomes") -> str:
    secret = db["password"] if password is None else password
    return f"postgresql+psycopg://app:{secret}@127.0.0.1:{db['port']}/{database}?sslmode=require"


def one_line_without(exc: MlrigError, secret: str) -> str:
    line = exc.one_line()
    assert "\n" not in line and secret not in line and secret not in str(exc.hint or "")
    return line


def test_labels_come_from_a_postgresql_query(labels_db: dict[str, Any]) -> None:
    frame = _labels.read(url(labels_db), QUERY)
    assert frame.to_dict("list") == {
        "inference_id": [IDS[0], IDS[1], IDS[1]],
        "row": [0, 0, 1],
        "label": [1, 0, 1],
    }
    assert str(frame["row"].dtype) == "int64"


def test_a_query_that_writes_is_rolled_back(labels_db: dict[str, Any]) -> None:
    writes = "UPDATE outcomes SET label = 7 RETURNING inference_id, label"
    frame = _labels.read(url(labels_db), writes)  # it returns rows, so it runs ...
    assert list(frame["label"]) == [7, 7, 7]
    counts = postgres.psql(  # ... in a transaction that is rolled back
        labels_db["cluster"], "SELECT count(*) FROM outcomes WHERE label = 7", database="outcomes"
    )
    assert counts == "0"


def test_a_wrong_password_or_database_is_one_line_without_the_password(
    labels_db: dict[str, Any],
) -> None:
    wrong = "not-" + labels_db["password"]
    with pytest.raises(ServiceError) as refused:
        _labels.read(url(labels_db, password=wrong), QUERY)
    line = one_line_without(refused.value, wrong)
    assert f"postgresql+psycopg://app:***@127.0.0.1:{labels_db['port']}/outcomes" in line
    assert "OperationalError" in line and "password authentication failed" in line

    with pytest.raises(ServiceError) as missing:
        _labels.read(url(labels_db, database="nowhere"), QUERY)
    assert "nowhere" in one_line_without(missing.value, labels_db["password"])


def test_a_bad_url_or_a_missing_driver_is_one_line_without_the_password(
    labels_db: dict[str, Any],
) -> None:
    secret = labels_db["password"]
    with pytest.raises(UsageError) as bad:
        _labels.read(f"postgresql+psycopg://app:{secret}@127.0.0.1:notaport/outcomes", QUERY)
    assert "not a SQLAlchemy URL" in one_line_without(bad.value, secret)

    # a PostgreSQL driver mlrig does not install
    other = url(labels_db).replace("+psycopg", "+pg8000")
    with pytest.raises(DependencyMissing) as no_driver:
        _labels.read(other, QUERY)
    line = one_line_without(no_driver.value, secret)
    assert "pg8000" in line and "postgresql+psycopg://" in str(no_driver.value.hint)


def test_a_plain_postgresql_url_takes_the_installed_driver(labels_db: dict[str, Any]) -> None:
    """SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3, the extra's."""
    plain = url(labels_db).replace("+psycopg", "")
    assert len(_labels.read(plain, QUERY)) == 3
