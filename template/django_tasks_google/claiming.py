"""Taking the lease of an execution, and the compare-and-set guard every transition uses.

The base of `TaskExecution.objects` (transitions.py adds the other transitions). Each write is
conditional, atomic on every database without row locks: either "still held by this lease" or
`as_read` ("nobody wrote the row since we read it"); the loser of a race changes nothing.

The push path's common case is one statement: a READY, due execution is claimed by one
`UPDATE ... RETURNING` (PostgreSQL, SQLite >= 3.35). Rarer cases (a lease to take over, a
refusal, another database) read the row, then compare-and-set. The local worker claims a batch
the same way (`claim_due`: one statement, `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several
workers share a table without waiting on each other). An execution that may not run
again (attempts.py) is marked FAILED at the claim, so it never stays READY with nobody to deliver it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Q, QuerySet
from django.db.models.expressions import Col
from django.tasks import TaskResultStatus
from django.tasks.exceptions import InvalidTaskBackend
from django.tasks.signals import task_finished
from django.utils import timezone

from . import attempts
from .errors import PermanentTaskError, TaskInterrupted
from .identity import worker_identity
from .outcomes import AttemptOutcome, Claim, Claimed, Outcome, answer
from .serialization import error_entry
from .signals import send_task_signal

if TYPE_CHECKING:
    from .backend_rules import BackendRules
    from .models import TaskExecution
    from .task import AnyTask

logger = logging.getLogger(__name__)

READY = TaskResultStatus.READY
RUNNING = TaskResultStatus.RUNNING
FAILED = TaskResultStatus.FAILED
SUCCESSFUL = TaskResultStatus.SUCCESSFUL
FINISHED_STATUSES = (SUCCESSFUL, FAILED)
# The history length used when an execution's backend cannot even be loaded.
FALLBACK_HISTORY = 100
# The claims' and the lease holder's SQL (`_statement`), by (model, statement, database alias, its
# shape); None where the database has no UPDATE ... RETURNING. Built once per process: it depends on
# nothing but the schema.
_statements: dict[tuple[object, ...], str | None] = {}
# Per connection (a thread's) and model: the converters of the columns that need one, by index.
_converters: WeakKeyDictionary[BaseDatabaseWrapper, dict[str, list[tuple[int, tuple[list[Any], Col]]]]] = (
    WeakKeyDictionary()
)


def lease_expired_error(execution: TaskExecution) -> TaskInterrupted:
    return TaskInterrupted(
        f"Attempt {execution.attempts} stopped renewing its lease (expired at {execution.lease_expires_at}): "
        "the process running it died or lost the database."
    )


def backend_of(execution: TaskExecution) -> BackendRules | None:
    try:
        return execution.backend
    except (InvalidTaskBackend, TypeError):
        return None


def send_finished(execution: TaskExecution, task: AnyTask | None = None) -> None:
    backend = backend_of(execution)
    if backend is not None:
        send_task_signal(task_finished, type(backend), execution.to_task_result(task))


class ClaimingQuerySet(QuerySet["TaskExecution"]):
    """The guard and the claim; see transitions.ExecutionQuerySet for the rest."""

    # --- the compare-and-set guard ---------------------------------------------------------------

    def as_read(self, execution: TaskExecution) -> ClaimingQuerySet:
        """The row, only if nobody wrote it since `execution` was read.

        Every claim changes attempts/last_attempted_at/lease, every heartbeat the lease expiry,
        every transition the status, every dispatch the delivery names: matching all of them
        proves the row is as it was read (no locks needed, SQLite included).
        """
        return self.filter(
            pk=execution.pk,
            status=execution.status,
            attempts=execution.attempts,
            lease_worker_id=execution.lease_worker_id,
            lease_expires_at=execution.lease_expires_at,
            last_attempted_at=execution.last_attempted_at,
            cloud_task_name=execution.cloud_task_name,
            cloud_run_job_execution_name=execution.cloud_run_job_execution_name,
        )

    def _set_as_read(self, execution: TaskExecution, **changes: Any) -> bool:
        """Apply `changes` if the row is as read; on success `execution` reflects them."""
        if not self.as_read(execution).update(**changes):
            return False
        for name, value in changes.items():
            setattr(execution, name, value)
        return True

    @staticmethod
    def _held_by(execution_id: int, lease_id: str) -> dict[str, object]:
        """The guard of a lease holder's writes: the row is RUNNING under this lease."""
        return {"pk": execution_id, "lease_worker_id": lease_id, "status": RUNNING}

    @staticmethod
    def _claim_undone(execution: TaskExecution) -> dict[str, Any]:
        """The changes that take back what a claim counted on its row: the attempt and the worker id
        it added, and its lease (a claim refused by the policy, or given back unstarted)."""
        return {
            "attempts": max(execution.attempts - 1, 0),
            "worker_ids": execution.worker_ids[:-1],
            "lease_worker_id": None,
            "lease_expires_at": None,
        }

    def _held(self, execution_id: int, lease_id: str) -> ClaimingQuerySet:
        return self.filter(**self._held_by(execution_id, lease_id))

    def _update_held(self, execution_id: int, lease_id: str, changes: dict[str, Any]) -> int:
        """`_held(...).update(**changes)` (plain values only) for the push path's writes.

        The same UPDATE, with each value converted by its field as QuerySet.update() does, but
        without compiling a query each time: for a no-op task that compilation cost more than the
        statement itself. Its SQL is built once per set of columns written (`_statement`).
        """
        db = self._write_db()
        connection = connections[db]
        held = self._held_by(execution_id, lease_id)
        sql = self._statement(self._build_update_sql, db, len(changes), *changes, *held)
        assert sql is not None  # this builder always builds one
        params = [
            self._field_column(name)[0].get_db_prep_save(value, connection) for name, value in changes.items()
        ]
        params += [
            self._field_column(name)[0].get_db_prep_value(value, connection) for name, value in held.items()
        ]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            changed: int = cursor.rowcount
        return changed

    def _build_update_sql(self, db: str, assigned: int, *names: str) -> str:
        """`UPDATE ... SET` the first `assigned` of `names` `WHERE` the others equal (a None
        parameter binds NULL)."""
        quote = connections[db].ops.quote_name
        columns = [f"{quote(self._field_column(name)[1])} = %s" for name in names]
        table = quote(self.model._meta.db_table)
        return f"UPDATE {table} SET {', '.join(columns[:assigned])} WHERE {' AND '.join(columns[assigned:])}"

    def _field_column(self, name: str) -> tuple[Field[Any, Any], str]:
        """The concrete field called `name` ("pk" too) and its column."""
        meta = self.model._meta
        field = meta.pk if name == "pk" else meta.get_field(name)
        if not isinstance(field, Field) or not field.column:
            raise TypeError(f"{name!r} is not a column of {meta.label}")
        return field, field.column

    def _write_db(self) -> str:
        """Where the lease writes go: the queryset's own database (`.using()`), else the router's
        database for writes, as enqueue's INSERT."""
        chosen: str | None = getattr(self, "_db", None)  # set by .using(); django-stubs omits it
        return chosen or router.db_for_write(self.model)

    def _returning(self, db: str, sql: str, params: Sequence[object]) -> list[TaskExecution]:
        """The rows of an `UPDATE ... RETURNING` of every concrete field's column, in field order.

        What `raw()` makes of them, without its per-call look at the cursor's columns and the
        fields' converters (looked up once per connection): the push path's claim and the local
        worker's are this statement.
        """
        connection = connections[db]
        fields = self.model._meta.concrete_fields
        by_model = _converters.setdefault(connection, {})
        converters = by_model.get(self.model._meta.label)
        if converters is None:
            compiler = self.query.get_compiler(using=db)
            columns = [field.get_col(self.model._meta.db_table) for field in fields]
            converters = by_model[self.model._meta.label] = list(compiler.get_converters(columns).items())
        with connection.cursor() as cursor:
            # Parameters adapted as raw() adapts them (SQLite stores datetimes as naive UTC text).
            cursor.execute(sql, [connection.ops.adapt_unknown_value(param) for param in params])
            rows = cursor.fetchall()
        names = [field.attname for field in fields]
        executions = []
        for row in rows:
            values = list(row)
            for index, (functions, column) in converters:
                for function in functions:
                    values[index] = function(values[index], column, connection)
            executions.append(self.model.from_db(db, names, values))
        return executions

    # --- claim -----------------------------------------------------------------------------------

    def claim(
        self,
        execution_id: int,
        *,
        backend: BackendRules | None,
        transport_attempt: int | None,
    ) -> Claimed | AttemptOutcome:
        """Take the lease of a due READY execution, or of a RUNNING one whose lease expired.

        `backend`, when given, must be the row's. A refusal is returned as an AttemptOutcome; an
        execution that may not run again (run_once, or no attempts left) is marked FAILED here, so
        it never stays READY with nobody to deliver it.
        """
        now = timezone.now()
        lease_id = uuid.uuid4().hex
        if backend is not None:
            execution = self._claim_ready(execution_id, backend, lease_id, now)
            if execution is not None:
                return self._claimed(execution, backend, lease_id, transport_attempt)
        return self._claim_read(execution_id, backend, lease_id, now, transport_attempt)

    def _claim_ready(
        self, execution_id: int, backend: BackendRules, lease_id: str, now: datetime
    ) -> TaskExecution | None:
        """The common case in one statement: a READY, due row whose history needs no clipping."""
        db = self._write_db()
        sql = self._statement(self._build_claim_ready_sql, db)
        if sql is None:
            return None
        params = [
            RUNNING,
            lease_id,
            # Always set, heartbeat or not: an attempt that dies must not keep the task forever.
            now + backend.heartbeat_timeout,
            now,
            now,
            worker_identity(),
            execution_id,
            READY,
            backend.alias,
            now,
            backend.max_history_entries,
        ]
        rows = self._returning(db, sql, params)
        return rows[0] if rows else None

    def _statement(self, build: Callable[..., str | None], db: str, *shape: int | str) -> str | None:
        """`build(db, *shape)`, built once per process for this model (see `_statements`)."""
        key = (self.model._meta.label, build.__name__, db, *shape)
        if key not in _statements:
            _statements[key] = build(db, *shape)
        return _statements[key]

    def _build_claim_ready_sql(self, db: str) -> str | None:
        json_append = self._json_append(db)
        if json_append is None:
            return None
        table = connections[db].ops.quote_name(self.model._meta.db_table)
        column = self._columns(db)
        append, fits = (part.format(w=column["worker_ids"]) for part in json_append)
        returned = ", ".join(column[field.name] for field in self.model._meta.concrete_fields)
        return (
            f"UPDATE {table} SET {column['status']} = %s, {column['lease_worker_id']} = %s, "
            f"{column['lease_expires_at']} = %s, {column['last_attempted_at']} = %s, "
            f"{column['started_at']} = COALESCE({column['started_at']}, %s), "
            f"{column['attempts']} = {column['attempts']} + 1, {append} "
            f"WHERE {column['id']} = %s AND {column['status']} = %s AND {column['backend_alias']} = %s "
            f"AND ({column['run_after']} IS NULL OR {column['run_after']} <= %s) "
            f"AND ({column['max_attempts']} IS NULL OR {column['attempts']} < {column['max_attempts']}) "
            f"AND {fits} RETURNING {returned}"
        )

    def _json_append(self, db: str) -> tuple[str, str] | None:
        """SQL appending %s to the JSON list {w}, and testing its length against %s (None: no
        one-statement claim on this database)."""
        connection = connections[db]
        if not connection.features.can_return_rows_from_update:
            return None
        return {
            "postgresql": ("{w} = {w} || jsonb_build_array(%s::text)", "jsonb_array_length({w}) < %s"),
            "sqlite": ("{w} = json_insert({w}, '$[#]', %s)", "json_array_length({w}) < %s"),
        }.get(connection.vendor)

    def _columns(self, db: str) -> dict[str, str]:
        q = connections[db].ops.quote_name
        # Every concrete field has a column (django-stubs types `column` as optional).
        return {field.name: q(field.column) for field in self.model._meta.concrete_fields if field.column}

    # --- batch claim (the local worker) ------------------------------------------------------------

    def claim_due(
        self, backends: Sequence[BackendRules], *, queues: Sequence[str], limit: int
    ) -> list[Claimed]:
        """Claim up to `limit` due READY executions of `backends`, priority first, then oldest.

        One `WITH picked AS MATERIALIZED (SELECT ... LIMIT n [FOR UPDATE SKIP LOCKED]) UPDATE ...
        RETURNING` on PostgreSQL and SQLite >= 3.35: on PostgreSQL rows another worker is claiming
        are skipped, not waited for, and SQLite runs one write at a time, so no row is claimed
        twice. Each claimed row then goes through `_claimed` (run_once, the attempt limit): a row
        that may not run again is marked FAILED there and not returned.
        """
        by_alias = {backend.alias: backend for backend in backends}
        aliases = sorted(by_alias)
        db = self._write_db()
        sql = self._statement(self._build_claim_due_sql, db, len(aliases), len(queues))
        if sql is None:
            return self._claim_each(by_alias, queues, limit)
        now = timezone.now()
        batch = uuid.uuid4().hex
        # The lease id is f"{batch}-{id}" (unique per attempt), as `lease_id` below.
        params: list[object] = [READY, *aliases, *queues, now, limit, RUNNING, f"{batch}-"]
        for alias in aliases:
            # Always set, heartbeat or not: an attempt that dies must not keep the task forever.
            params += [alias, now + by_alias[alias].heartbeat_timeout]
        params += [now, now, worker_identity(), READY]
        rows = sorted(
            self._returning(db, sql, params),
            key=lambda row: (-row.priority, row.enqueued_at, row.pk),
        )
        claimed = []
        for execution in rows:
            backend = by_alias[execution.backend_alias]
            lease_id = f"{batch}-{execution.pk}"
            history = backend.max_history_entries
            if len(execution.worker_ids) > history:
                # Rare (a long history): clip it by the policy's rule, under the lease just taken.
                clipped = attempts.clip_history(execution.worker_ids, history)
                self._held(execution.pk, lease_id).update(worker_ids=clipped)
                execution.worker_ids = clipped
            result = self._claimed(execution, backend, lease_id, None)
            if isinstance(result, Claimed):
                claimed.append(result)
        return claimed

    def _build_claim_due_sql(self, db: str, aliases: int, queues: int) -> str | None:
        json_append = self._json_append(db)
        if json_append is None:
            return None
        connection = connections[db]
        column = self._columns(db)
        table = connection.ops.quote_name(self.model._meta.db_table)
        append = json_append[0].format(w=column["worker_ids"])
        returned = ", ".join(column[field.name] for field in self.model._meta.concrete_fields)

        def placeholders(count: int) -> str:
            return ", ".join(["%s"] * count)

        # Each backend's lease length.
        expires = " ".join("WHEN %s THEN %s" for _ in range(aliases))
        queue_filter = f"AND {column['queue_name']} IN ({placeholders(queues)}) " if queues else ""
        lock = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
        # The candidates are picked once (MATERIALIZED): a subquery PostgreSQL re-ran for each
        # row would skip the rows it had just locked and pick more than `limit`.
        return (
            f"WITH picked AS MATERIALIZED (SELECT {column['id']} FROM {table} WHERE {column['status']} = %s "
            f"AND {column['backend_alias']} IN ({placeholders(aliases)}) {queue_filter}"
            f"AND ({column['run_after']} IS NULL OR {column['run_after']} <= %s) "
            f"ORDER BY {column['priority']} DESC, {column['enqueued_at']}, {column['id']} LIMIT %s{lock}) "
            f"UPDATE {table} SET {column['status']} = %s, "
            f"{column['lease_worker_id']} = %s || CAST({column['id']} AS TEXT), "
            f"{column['lease_expires_at']} = CASE {column['backend_alias']} {expires} END, "
            f"{column['last_attempted_at']} = %s, "
            f"{column['started_at']} = COALESCE({column['started_at']}, %s), "
            f"{column['attempts']} = {column['attempts']} + 1, {append} "
            f"WHERE {column['status']} = %s AND {column['id']} IN (SELECT {column['id']} FROM picked) "
            f"RETURNING {returned}"
        )

    def _claim_each(
        self, by_alias: dict[str, BackendRules], queues: Sequence[str], limit: int
    ) -> list[Claimed]:
        """Other databases: read the candidates, then claim each (the claim stays conditional)."""
        candidates = self.filter(status=READY, backend_alias__in=list(by_alias)).filter(
            Q(run_after__isnull=True) | Q(run_after__lte=timezone.now())
        )
        if queues:
            candidates = candidates.filter(queue_name__in=list(queues))
        ids = candidates.order_by("-priority", "enqueued_at", "pk").values_list("pk", "backend_alias")[:limit]
        claimed = []
        for pk, alias in list(ids):
            result = self.claim(pk, backend=by_alias[alias], transport_attempt=None)
            if isinstance(result, Claimed):
                claimed.append(result)
        return claimed

    def _claimed(
        self,
        execution: TaskExecution,
        backend: BackendRules,
        lease_id: str,
        transport_attempt: int | None,
    ) -> Claimed | AttemptOutcome:
        """Check a claim taken in one statement against what SQL could not (run_once, the
        backend's limit), and give it up as FAILED if the policy refuses it."""
        limit = attempts.attempt_limit(execution, backend)
        execution.attempts -= 1
        refusal = attempts.refusal(execution, backend, limit)
        execution.attempts += 1
        if refusal is not None:
            changes = {
                "status": FAILED,
                "finished_at": timezone.now(),
                **self._claim_undone(execution),
                "errors": attempts.with_error(execution.errors, refusal, backend.max_history_entries),
            }
            if not self._update_held(execution.pk, lease_id, changes):
                return answer(Outcome.LEASE_HELD, retry=True)
            for name, value in changes.items():
                setattr(execution, name, value)
            logger.warning(
                "Task %s (%s) FAILED without running: %s", execution.pk, execution.module_path, refusal
            )
            send_finished(execution)
            return answer(Outcome.FAILED, FAILED)
        number = attempts.attempt_number(execution.attempts - 1, transport_attempt)
        claim = _claim_of(execution, lease_id, number, limit, counted_by_row=transport_attempt is None)
        return Claimed(claim, execution)

    def _claim_read(
        self,
        execution_id: int,
        backend: BackendRules | None,
        lease_id: str,
        now: datetime,
        transport_attempt: int | None,
    ) -> Claimed | AttemptOutcome:
        execution = self.filter(pk=execution_id).first()
        if execution is None:
            return answer(Outcome.NOT_FOUND)
        if backend is not None and execution.backend_alias != backend.alias:
            return answer(Outcome.BACKEND_MISMATCH, execution.status)
        if execution.is_finished:
            return answer(Outcome.FINISHED, execution.status)
        if (
            execution.status == RUNNING
            and execution.lease_expires_at is not None
            and execution.lease_expires_at > now
        ):
            # A live attempt holds it (a duplicate delivery): ask for redelivery later.
            return answer(Outcome.LEASE_HELD, RUNNING, retry=True)
        if execution.status == READY and execution.run_after is not None and execution.run_after > now:
            # Delivered early (a caller, or a clock far off): the platform must deliver it again.
            return answer(Outcome.NOT_DUE, READY, retry=True)
        errors = list(execution.errors)
        if execution.status == RUNNING:
            # The holder stopped renewing its lease (crash, kill, lost database): record that attempt.
            errors.append(error_entry(lease_expired_error(execution)))
        own_backend = backend_of(execution)
        if own_backend is None:
            return self._fail_unrun(
                execution,
                errors,
                PermanentTaskError(
                    f"Task backend {execution.backend_alias!r} is not a django_tasks_google backend here."
                ),
                FALLBACK_HISTORY,
            )
        history = own_backend.max_history_entries
        limit = attempts.attempt_limit(execution, own_backend)
        refusal = attempts.refusal(execution, own_backend, limit)
        if refusal is not None:
            return self._fail_unrun(execution, errors, refusal, history)
        claimed = self._set_as_read(
            execution,
            status=RUNNING,
            lease_worker_id=lease_id,
            lease_expires_at=now + own_backend.heartbeat_timeout,
            last_attempted_at=now,
            started_at=execution.started_at or now,
            attempts=execution.attempts + 1,
            worker_ids=attempts.clip_history([*execution.worker_ids, worker_identity()], history),
            errors=attempts.clip_history(errors, history),
        )
        if not claimed:
            # Someone else changed the row between our read and our write; they own it now.
            return answer(Outcome.LEASE_HELD, retry=True)
        number = attempts.attempt_number(execution.attempts - 1, transport_attempt)
        return Claimed(
            _claim_of(execution, lease_id, number, limit, counted_by_row=transport_attempt is None),
            execution,
        )

    def _fail_unrun(
        self, execution: TaskExecution, errors: list[dict[str, str]], error: Exception, history: int
    ) -> AttemptOutcome:
        changed = self._set_as_read(
            execution,
            status=FAILED,
            finished_at=timezone.now(),
            errors=attempts.with_error(errors, error, history),
            lease_worker_id=None,
            lease_expires_at=None,
        )
        if not changed:
            return answer(Outcome.LEASE_HELD, retry=True)
        logger.warning("Task %s (%s) FAILED without running: %s", execution.pk, execution.module_path, error)
        send_finished(execution)
        return answer(Outcome.FAILED, FAILED)


def _claim_of(
    execution: TaskExecution, lease_id: str, number: int, limit: int | None, *, counted_by_row: bool
) -> Claim:
    return Claim(
        execution_id=execution.pk,
        lease_id=lease_id,
        attempt=number,
        limit=limit,
        counted_by_row=counted_by_row,
        first_start=execution.started_at == execution.last_attempted_at,
    )
