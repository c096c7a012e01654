"""Enqueue: validation, JSON arguments, run_after, timeouts, on-commit delivery, signals, results."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, connection, transaction
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_tasks_google.backends import DjangoTasksGoogleBackend, TaskDispatchError
from django_tasks_google.backends.delivery import DispatchResult
from django_tasks_google.models import TaskExecution
from django_tasks_google.notify import CHANNEL, Listener
from tests.django_tasks_google.sample_tasks import add, echo, job_sleep

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def enqueued_signals():
    received = []

    def receiver(sender, task_result, **kwargs):
        received.append((sender, task_result.id, task_result.status))

    task_enqueued.connect(receiver)
    yield received
    task_enqueued.disconnect(receiver)


def test_enqueue_stores_a_ready_execution() -> None:
    result = add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert result.backend == "test-tasks"
    row = TaskExecution.objects.get(pk=int(result.id))
    assert (row.module_path, row.backend_alias, row.queue_name) == (
        "tests.django_tasks_google.sample_tasks.add",
        "test-tasks",
        "default",
    )
    assert (row.args, row.kwargs, row.status) == ([2, 3], {}, "READY")
    assert row.max_attempts == 3  # the backend's option, stored by the INSERT
    assert result.id == str(row.pk)


def test_arguments_get_a_real_json_round_trip() -> None:
    result = echo.enqueue((1, 2), {1: "one"}, flag=True)
    row = TaskExecution.objects.get(pk=int(result.id))
    assert row.args == [[1, 2], {"1": "one"}]
    assert result.args == [[1, 2], {"1": "one"}]
    assert result.kwargs == {"flag": True}


@pytest.mark.parametrize(
    ("argument", "error"),
    [(timezone.now(), TypeError), (float("nan"), ValueError), (object(), TypeError)],
)
def test_arguments_that_cannot_be_stored_are_refused(argument: object, error: type) -> None:
    with pytest.raises(error, match="must be JSON-serializable"):
        echo.enqueue(argument)
    assert not TaskExecution.objects.exists()


def test_run_after_timedelta_is_resolved_at_enqueue() -> None:
    before = timezone.now()
    delayed = add.using(run_after=timedelta(minutes=5))
    assert delayed.run_after == timedelta(minutes=5)  # validation accepted it; nothing resolved yet
    result = delayed.enqueue(1, 1)
    row = TaskExecution.objects.get(pk=int(result.id))
    assert before + timedelta(minutes=5) <= row.run_after <= timezone.now() + timedelta(minutes=5)
    assert timezone.is_aware(row.run_after)
    assert result.task.run_after == row.run_after


def test_run_after_needs_a_defer_capable_backend() -> None:
    with pytest.raises(InvalidTask, match="does not support run_after"):
        job_sleep.using(run_after=timedelta(seconds=5))
    with pytest.raises(InvalidTask, match="does not support run_after"):
        job_sleep.using(run_after=timezone.now())


def test_timeout_is_validated_against_the_mode_and_stored() -> None:
    assert job_sleep.using(timeout=timedelta(seconds=1)).timeout == timedelta(seconds=1)
    with pytest.raises(InvalidTask, match="Task timeout must be between 0:00:15 and 0:30:00"):
        add.using(timeout=timedelta(seconds=5))
    with pytest.raises(InvalidTask, match="Task timeout must be between"):
        job_sleep.using(timeout=timedelta(hours=169))
    result = job_sleep.using(timeout=timedelta(seconds=90)).enqueue("/nonexistent")
    assert TaskExecution.objects.get(pk=int(result.id)).timeout == timedelta(seconds=90)


def test_queue_must_be_configured() -> None:
    with pytest.raises(InvalidTask, match="Queue 'nope' is not valid"):
        add.using(queue_name="nope")
    assert add.using(queue_name="other").enqueue(1, 2).task.queue_name == "other"


def test_delivery_waits_for_commit_and_rollback_drops_it(enqueued_signals: list) -> None:
    with transaction.atomic():
        result = add.enqueue(1, 2)
        assert enqueued_signals == []
    assert enqueued_signals == [(type(task_backends["test-tasks"]), result.id, TaskResultStatus.READY)]

    enqueued_signals.clear()
    with pytest.raises(RuntimeError), transaction.atomic():
        add.enqueue(3, 4)
        raise RuntimeError("roll back")
    assert enqueued_signals == []
    assert TaskExecution.objects.count() == 1


class FailingDispatchBackend(DjangoTasksGoogleBackend):
    """A transport whose delivery raises, like a Cloud Tasks API outage."""

    requires_gcp_config = False
    timeout_range = (timedelta(seconds=1), timedelta(hours=1))

    def dispatch(self, execution: TaskExecution) -> DispatchResult:
        raise ConnectionError("the queue is unreachable")

    def get_max_attempts(self, queue_name: str) -> int | None:
        return None


def test_failed_delivery_outside_a_transaction_fails_the_execution_and_raises(enqueued_signals: list) -> None:
    backend = {"BACKEND": f"{__name__}.FailingDispatchBackend", "QUEUES": ["default"]}
    with override_settings(TASKS={"test-tasks": backend}):
        with pytest.raises(TaskDispatchError, match="ConnectionError: the queue is unreachable") as raised:
            add.enqueue(1, 2)
        result = raised.value.task_result
        assert result.status == TaskResultStatus.FAILED
        result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "builtins.ConnectionError"
    assert "the queue is unreachable" in result.errors[0].traceback
    assert result.finished_at is not None
    assert enqueued_signals == []


def test_get_result_and_refresh() -> None:
    result = add.enqueue(2, 2)
    fetched = add.get_result(result.id)
    assert (fetched.id, fetched.status, fetched.args) == (result.id, TaskResultStatus.READY, [2, 2])
    TaskExecution.objects.filter(pk=int(result.id)).update(status="SUCCESSFUL", return_value=4)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 4


@pytest.mark.parametrize("result_id", ["999999", "not-a-number", "", "1.5"])
def test_get_result_of_an_unknown_id_raises_does_not_exist(result_id: str) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result(result_id)
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["test-tasks"].get_result(result_id)


def test_result_stays_readable_when_the_task_is_gone() -> None:
    result = add.enqueue(1, 2)
    TaskExecution.objects.filter(pk=int(result.id)).update(
        module_path="tests.django_tasks_google.sample_tasks.removed_task"
    )
    fetched = task_backends["test-tasks"].get_result(result.id)
    assert fetched.task.module_path == "tests.django_tasks_google.sample_tasks.removed_task"
    with pytest.raises(ImportError, match="Cannot import the task"):
        fetched.task.call()


def test_failed_delivery_inside_a_transaction_is_recorded_at_commit(enqueued_signals: list) -> None:
    backend = {"BACKEND": f"{__name__}.FailingDispatchBackend", "QUEUES": ["default"]}
    with override_settings(TASKS={"test-tasks": backend}):
        with transaction.atomic():
            result = add.enqueue(1, 2)  # delivered at commit, after enqueue() returned: no raise
        result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert enqueued_signals == []


# --- statements per enqueue (issue 17): one INSERT, which on PostgreSQL also wakes the workers ---


def test_enqueue_on_the_process_backend_is_one_insert() -> None:
    with CaptureQueriesContext(connection) as queries:
        result = add.enqueue(1, 2)
    [insert] = [query["sql"] for query in queries.captured_queries]
    assert insert.startswith("INSERT")
    # On PostgreSQL the INSERT itself notifies the listening workers (notify.py).
    assert ("pg_notify" in insert) == (connection.vendor == "postgresql")
    assert TaskExecution.objects.get(pk=result.id).max_attempts == 3


def test_enqueue_in_a_transaction_adds_only_the_insert() -> None:
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        add.enqueue(1, 2)
    assert [query["sql"].split()[0] for query in queries.captured_queries] == ["INSERT"]


@pytest.fixture
def listener() -> Iterator[Listener]:
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY: PostgreSQL")
    opened = Listener.open(DEFAULT_DB_ALIAS)
    assert opened is not None
    yield opened
    opened.close()


def payloads_until_the_end(listener: Listener) -> list[str]:
    """The payloads heard before an "end" notified after them (delivered in commit order)."""
    with connection.cursor() as cursor:
        cursor.execute(f"NOTIFY {CHANNEL}, 'end'")
    heard = []
    for notification in listener.connection.notifies(timeout=30):
        if notification.payload == "end":
            return heard
        heard.append(notification.payload)
    raise AssertionError(f"the 'end' notification never came; heard {heard}")


def test_the_insert_alone_wakes_a_listening_worker(listener: Listener) -> None:
    add.enqueue(1, 2)  # autocommit: the INSERT commits, and nothing else is sent
    assert payloads_until_the_end(listener) == [""]


def test_a_rolled_back_enqueue_wakes_no_worker(listener: Listener) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        add.enqueue(1, 2)
        raise RuntimeError("rolled back")
    assert payloads_until_the_end(listener) == []
    with transaction.atomic():
        add.enqueue(1, 2)
        add.enqueue(3, 4)
    # Notified at commit; PostgreSQL may fold one transaction's identical notifications into one.
    assert payloads_until_the_end(listener) in ([""], ["", ""])


def test_a_cloud_backends_insert_notifies_nobody(listener: Listener) -> None:
    backend = {"BACKEND": f"{__name__}.CountingBackend", "QUEUES": ["default"]}
    with override_settings(TASKS={"test-tasks": backend}):
        add.enqueue(1, 2)
    assert payloads_until_the_end(listener) == []


# --- results of the backend's own alias only -----------------------------------------------------


def test_get_result_only_returns_the_backends_own_executions() -> None:
    mine = add.enqueue(1, 2)
    other = job_sleep.enqueue("unused")  # another alias of the same backend class
    assert other.backend != mine.backend
    backend = task_backends["test-tasks"]
    assert backend.get_result(mine.id).id == mine.id
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(other.id)
    assert task_backends[other.backend].get_result(other.id).id == other.id


class CountingBackend(FailingDispatchBackend):
    calls: list[str] = []  # noqa: RUF012

    def dispatch(self, execution: TaskExecution) -> DispatchResult:
        return DispatchResult.DISPATCHED

    def get_max_attempts(self, queue_name: str) -> int | None:
        self.calls.append(queue_name)
        return None if queue_name == "unlimited" else 7


def test_max_attempts_cache_key_and_unlimited_sentinel() -> None:
    CountingBackend.calls = []
    caches["default"].clear()
    one = CountingBackend("one", {"OPTIONS": {"project_id": "p", "location": "l"}})
    two = CountingBackend("two", {"OPTIONS": {"project_id": "p", "location": "l"}})
    assert one.max_attempts_for("default") == 7
    assert one.max_attempts_for("default") == 7
    assert one.max_attempts_for("unlimited") is None
    assert one.max_attempts_for("unlimited") is None  # None is cached too
    assert two.max_attempts_for("default") == 7  # another alias: its own key
    assert CountingBackend.calls == ["default", "unlimited", "default"]
    assert caches["default"].get("django-tasks-google:max_attempts:one:p:l:default") == 7
    uncached = CountingBackend("three", {"OPTIONS": {"cache_ttl_max_attempts": 0}})
    uncached.max_attempts_for("default")
    uncached.max_attempts_for("default")
    assert CountingBackend.calls.count("default") == 4
