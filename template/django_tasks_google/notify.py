"""PostgreSQL LISTEN/NOTIFY between enqueue and the local worker, so pickup need not wait for a poll.

An enqueue on a ProcessBackend sends `NOTIFY` once its row is committed (the backend delivers
from `transaction.on_commit`), and an idle worker `LISTEN`s on a connection of its own; the
notification wakes it at once. Notifications are only a hint: the poll stays, so a lost one
(worker restarting, connection dropped) delays a task by a poll interval at most, never loses it.
Other databases poll as before.

PostgreSQL delivers a notification to the listeners of the same database only after the
sending transaction commits: https://www.postgresql.org/docs/current/sql-notify.html
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connections, router

if TYPE_CHECKING:
    from .models import TaskExecution

logger = logging.getLogger("django_tasks_google.worker")

# One channel per database (NOTIFY does not cross databases); the payload is unused.
CHANNEL = "django_tasks_google_enqueued"


def notify_enqueued(execution: TaskExecution) -> None:
    """Wake the workers listening on the execution's database (PostgreSQL; a no-op elsewhere)."""
    using = execution._state.db or router.db_for_write(type(execution))
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {CHANNEL}")
    except DatabaseError:
        # A hint only: the workers' poll picks the task up anyway.
        logger.warning("Could not notify the workers of task %s", execution.pk, exc_info=True)


class Listener:
    """A dedicated connection LISTENing on CHANNEL (psycopg 3), for the worker to wait on."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    @classmethod
    def open(cls, using: str) -> Listener | None:
        """A listener on database `using`, or None if it is not PostgreSQL or cannot be reached."""
        wrapper = connections[using]
        if wrapper.vendor != "postgresql":
            return None
        import psycopg

        try:
            # Django's own connection parameters, but a connection of our own: never from a pool,
            # never in a transaction, kept for the worker's lifetime.
            params = wrapper.get_connection_params()
            connection = psycopg.connect(**params, autocommit=True)
            connection.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error:
            logger.warning("Could not LISTEN for enqueued tasks; polling only", exc_info=True)
            return None
        return cls(connection)

    def fileno(self) -> int:
        return int(self.connection.fileno())

    def heard(self) -> bool:
        """Consume the notifications received so far; whether there were any (False, and closed,
        if the connection was lost: the worker polls and opens a new listener later)."""
        import psycopg

        try:
            return sum(1 for _ in self.connection.notifies(timeout=0)) > 0
        except psycopg.Error:
            logger.warning("Lost the LISTEN connection; polling until it is back", exc_info=True)
            self.close()
            return False

    @property
    def closed(self) -> bool:
        return bool(self.connection.closed)

    def close(self) -> None:
        self.connection.close()
