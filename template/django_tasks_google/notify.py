"""PostgreSQL LISTEN/NOTIFY between enqueue and the local worker, so pickup need not wait for a poll.

What wakes a worker, and nothing else: the INSERT of a ProcessBackend enqueue. On PostgreSQL its
`max_attempts` value is `WakeWorkers` (see `waking_workers`), computed in a subquery that also calls
`pg_notify`, so the one INSERT statement is also the notification: no second round trip. An
idle worker `LISTEN`s on a connection of its own (`Listener`) and the notification wakes it at
once. The admin's Retry and a fired schedule enqueue, so they notify too. Rows made READY again
by an UPDATE (a failed attempt's retry, a released attempt) notify nobody: the next poll picks
them up. The cloud backends' INSERTs send nothing: no local worker listens for them, and a
transaction that notifies holds one server-wide lock from just before its commit until after it
(`PreCommit_Notify` in https://github.com/postgres/postgres/blob/master/src/backend/commands/async.c),
which would serialise all their enqueues' commits for nothing.

A notification is only a hint: the poll stays, so a lost one (worker restarting, connection
dropped) delays a task by a poll interval at most, never loses it. Other databases poll as before.

PostgreSQL queues a notification with the transaction that sent it and delivers it to the
listeners of the same database only once that transaction commits (never if it rolls back);
identical ones sent by one transaction may be delivered once. Its queue holds 8 GB by default; only
if a listening session stopped reading long enough to fill it would the enqueue's commit fail:
https://www.postgresql.org/docs/current/sql-notify.html
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.db.models import Expression, Field, Value

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models.sql.compiler import SQLCompiler

logger = logging.getLogger("django_tasks_google.worker")

type SqlParams = tuple[Any, ...]

# One channel per database (NOTIFY does not cross databases); the payload is unused.
CHANNEL = "django_tasks_google_enqueued"


def waking_workers(value: object, output_field: Field[Any, Any], using: str) -> object:
    """`value` for a column of an INSERT on database `using` that must wake the listening workers:
    a `WakeWorkers` on PostgreSQL, `value` itself elsewhere (nothing listens there)."""
    if connections[using].vendor == "postgresql":
        return WakeWorkers(value, output_field)
    return value


class WakeWorkers(Expression):
    """A column value of an INSERT that also notifies the listening workers (PostgreSQL).

    `(SELECT value::type FROM pg_notify(...))`: the statement's own transaction carries the
    notification, committed or rolled back with the row. Other databases get the plain value.
    """

    def __init__(self, value: object, output_field: Field[Any, Any]) -> None:
        super().__init__(output_field=output_field)
        self.value = value

    def as_sql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> tuple[str, SqlParams]:
        sql, params = compiler.compile(Value(self.value, output_field=self.output_field))
        return sql, tuple(params)

    def as_postgresql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> tuple[str, SqlParams]:
        sql, params = self.as_sql(compiler, connection)
        column_type = self.output_field.db_type(connection)
        return f"(SELECT {sql}::{column_type} FROM pg_notify(%s, ''))", (*params, CHANNEL)


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
