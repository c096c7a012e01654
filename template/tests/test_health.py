"""`/healthz` (liveness, never touches the database) and `/readyz` (readiness: the database answers)."""

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client


@pytest.fixture
def unreachable_database(tmp_path: Path) -> Iterator[Callable[[], None]]:
    """Point the default connection at a database that really cannot be opened; yields `restore()`."""
    saved = dict(connection.settings_dict)

    def restore() -> None:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)

    connection.close()
    with socket.socket() as bound:  # bound, never listening: connecting to it is refused
        bound.bind(("127.0.0.1", 0))
        if connection.vendor == "sqlite":
            connection.settings_dict["NAME"] = str(tmp_path / "missing-directory" / "db.sqlite3")
        else:
            connection.settings_dict.update(HOST="127.0.0.1", PORT=str(bound.getsockname()[1]))
        try:
            yield restore
        finally:
            restore()


def test_liveness_answers_without_the_database() -> None:
    # No django_db mark: pytest-django makes any database access here raise.
    response = Client(HTTP_HOST="10.0.0.7:8080").get("/healthz")  # a probe's Host, not allowed
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readiness_answers_ok_when_the_database_answers() -> None:
    response = Client(HTTP_HOST="10.0.0.7:8080").get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("unreachable_database")
def test_readiness_is_503_when_the_database_cannot_be_reached() -> None:
    assert Client().get("/healthz").status_code == 200  # liveness is unaffected
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unreachable"}


@pytest.mark.django_db(transaction=True)
def test_readiness_recovers_once_the_database_answers_again(unreachable_database: Callable[[], None]) -> None:
    client = Client()
    assert client.get("/readyz").status_code == 503
    unreachable_database()  # the database is back
    assert client.get("/readyz").status_code == 200
