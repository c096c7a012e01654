"""The enqueue's INSERT (inserting.py) stores, returns and signals what `save(force_insert=True)` does."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import IntegerField, Value
from django.db.models.signals import post_save, pre_save
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_tasks_google import inserting
from django_tasks_google.models import TaskExecution
from django_tasks_google.notify import waking_workers

pytestmark = pytest.mark.django_db

NOW = datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")


def every_column(retry_of: TaskExecution) -> dict[str, object]:
    """A value for every column, none of them the default, in the types enqueue and the worker write."""
    return {
        "priority": -7,
        "module_path": "tests.django_tasks_google.sample_tasks.echo",
        "backend_alias": "test-tasks",
        "queue_name": "other",
        "run_after": datetime(2031, 2, 3, 12, 0, 0, 1, tzinfo=PARIS),
        "takes_context": True,
        "args": [1, "é", None, [2.5, {"k": "v"}], {"nested": {"list": [True, False]}}],
        "kwargs": {"flag": True, "text": "quote ' and \" and \\", "none": None},
        "timeout": timedelta(minutes=5, microseconds=7),
        "status": "RUNNING",
        "started_at": datetime(2031, 1, 1, 0, 0, 0, 5, tzinfo=UTC),
        "finished_at": datetime(2031, 1, 1, 1, 0, 0, tzinfo=PARIS),
        "last_attempted_at": datetime(2031, 1, 1, 0, 30, tzinfo=UTC),
        "errors": [{"exception_class_path": "builtins.ValueError", "traceback": "Traceback\n..."}],
        "worker_ids": ["host-1", "host-2"],
        "attempts": 2,
        "max_attempts": waking_workers(3, IntegerField(), DEFAULT_DB_ALIAS),
        "return_value": {"answer": 42},
        "cancelled_at": datetime(2031, 1, 2, tzinfo=UTC),
        "force_cancel": True,
        "retry_of": retry_of,
        "lease_worker_id": "lease-1",
        "lease_expires_at": datetime(2031, 1, 1, 0, 31, tzinfo=UTC),
        "cloud_task_name": "projects/p/locations/l/queues/q/tasks/t1",
        "cloud_run_job_execution_name": "projects/p/locations/l/jobs/j/executions/e1",
    }


def only_required(retry_of: TaskExecution) -> dict[str, object]:
    """What an enqueue on a backend without insert_fields writes: the defaults and NULLs elsewhere."""
    return {"module_path": "tests.django_tasks_google.sample_tasks.add", "args": [], "kwargs": {}}


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """`enqueued_at` (auto_now_add) of both inserts compared: the same instant."""
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    return NOW


def stored_row(pk: int) -> dict[str, object]:
    """The row as the database driver returns it (no field conversion), without its id."""
    table = connection.ops.quote_name(TaskExecution._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE id = %s", [pk])
        values = cursor.fetchone()
        names = [column[0] for column in cursor.description]
    return {name: value for name, value in zip(names, values, strict=True) if name != "id"}


def attributes(execution: TaskExecution) -> dict[str, object]:
    return {
        field.attname: getattr(execution, field.attname)
        for field in TaskExecution._meta.concrete_fields
        if field.attname != "id"
    } | {"_state": (execution._state.adding, execution._state.db)}


@pytest.mark.parametrize("values", [every_column, only_required])
def test_the_row_and_the_instance_are_those_save_makes(values, frozen_now: datetime) -> None:
    retry_of = TaskExecution.objects.create(module_path="x", args=[], kwargs={})
    inserted = TaskExecution(**values(retry_of))
    with CaptureQueriesContext(connection) as queries:
        inserting.insert(inserted, DEFAULT_DB_ALIAS)
    assert len(queries.captured_queries) == 1
    assert isinstance(inserted.pk, int)
    row = stored_row(inserted.pk)
    TaskExecution.objects.filter(pk=inserted.pk).delete()  # its unique columns, free for save()

    saved = TaskExecution(**values(retry_of))
    saved.save(force_insert=True, using=DEFAULT_DB_ALIAS)

    assert row == stored_row(saved.pk)
    # The INSERT's RETURNING replaced an expression by its value (max_attempts on PostgreSQL).
    assert attributes(inserted) == attributes(saved)
    assert inserted.enqueued_at == frozen_now
    assert inserted.pk != saved.pk


@pytest.fixture
def signals() -> Iterator[list[tuple[str, dict[str, object]]]]:
    """What each pre_save/post_save receiver of TaskExecution gets, and the instance's state then."""
    received: list[tuple[str, dict[str, object]]] = []

    def receiver(signal, **kwargs):
        instance = kwargs["instance"]
        state = {"pk_set": instance.pk is not None, "adding": instance._state.adding}
        name = "pre_save" if signal is pre_save else "post_save"
        received.append((name, {**kwargs, **state}))

    pre_save.connect(receiver, sender=TaskExecution)
    post_save.connect(receiver, sender=TaskExecution)
    yield received
    pre_save.disconnect(receiver, sender=TaskExecution)
    post_save.disconnect(receiver, sender=TaskExecution)


def test_pre_save_and_post_save_receivers_get_what_save_sends(signals) -> None:
    def received_for(execution: TaskExecution) -> list[tuple[str, dict[str, object]]]:
        received = [(name, {**sent, "instance": sent["instance"] is execution}) for name, sent in signals]
        signals.clear()
        return received

    inserted = TaskExecution(module_path="x", args=[], kwargs={})
    inserting.insert(inserted, DEFAULT_DB_ALIAS)
    by_insert = received_for(inserted)
    saved = TaskExecution(module_path="x", args=[], kwargs={})
    saved.save(force_insert=True, using=DEFAULT_DB_ALIAS)
    by_save = received_for(saved)

    assert by_insert == by_save
    assert [name for name, _ in by_insert] == ["pre_save", "post_save"]
    assert by_insert[1][1] == {
        "sender": TaskExecution,
        "instance": True,
        "created": True,
        "update_fields": None,
        "raw": False,
        "using": DEFAULT_DB_ALIAS,
        "pk_set": True,
        "adding": False,
    }


def test_the_statement_is_built_again_for_another_shape() -> None:
    """Which columns hold expressions is the statement's shape: each shape has its own SQL."""

    def insert(max_attempts: object) -> tuple[str, TaskExecution]:
        execution = TaskExecution(module_path="x", args=[], kwargs={}, max_attempts=max_attempts)
        statements: list[str] = []

        def record(execute, sql, params, many, context):
            statements.append(sql)  # as sent, before the driver puts the parameters in
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            inserting.insert(execution, DEFAULT_DB_ALIAS)
        [sql] = statements
        return sql, execution

    plain_sql, plain = insert(4)
    expression_sql, computed = insert(Value(5, output_field=IntegerField()) + Value(1))
    again_sql, _ = insert(7)

    assert expression_sql != plain_sql
    assert again_sql == plain_sql
    # The expression's value, returned by the INSERT, replaced the expression (as save() does).
    assert computed.max_attempts == 6
    assert TaskExecution.objects.get(pk=computed.pk).max_attempts == 6
    assert TaskExecution.objects.get(pk=plain.pk).max_attempts == 4


def test_an_instance_with_its_primary_key_set_is_saved_by_save() -> None:
    execution = TaskExecution(pk=987654, module_path="x", args=[], kwargs={})
    inserting.insert(execution, DEFAULT_DB_ALIAS)
    assert TaskExecution.objects.get(pk=987654).module_path == "x"
    assert not execution._state.adding
