"""cancel_task and is_task_cancelled outside a worker (the worker tests cover running tasks)."""

import pytest
from django.db import connection, transaction
from django.tasks import TaskContext, TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_finished
from django.test import override_settings

from django_tasks_google.base import cancel_task, is_task_cancelled
from django_tasks_google.models import TaskExecution
from tests.django_tasks_google.sample_tasks import add, job_sleep

# Autocommit, as in a view or a shell: on PostgreSQL a bare SELECT ... FOR UPDATE would fail here.
pytestmark = pytest.mark.django_db(transaction=True)


def test_cancel_a_ready_task_in_autocommit() -> None:
    assert connection.get_autocommit()
    result = add.enqueue(1, 2)
    cancel_task(result.id)
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    row = TaskExecution.objects.get(pk=int(result.id))
    assert row.cancelled_at is not None and row.finished_at is not None
    assert not row.force_cancel


def test_cancel_accepts_a_task_result_and_works_inside_a_transaction() -> None:
    result = add.enqueue(1, 2)
    with transaction.atomic():
        cancel_task(result)
    assert TaskExecution.objects.get(pk=int(result.id)).cancelled_at is not None


def test_cancelling_a_finished_task_changes_nothing() -> None:
    result = add.enqueue(1, 2)
    TaskExecution.objects.filter(pk=int(result.id)).update(status="SUCCESSFUL", return_value=3)
    before = TaskExecution.objects.get(pk=int(result.id))
    cancel_task(result.id)
    after = TaskExecution.objects.get(pk=int(result.id))
    assert after.status == "SUCCESSFUL" and after.return_value == 3
    assert after.cancelled_at is None and after.finished_at == before.finished_at


def test_cancel_unknown_id_raises() -> None:
    with pytest.raises(TaskResultDoesNotExist):
        cancel_task("424242")
    with pytest.raises(TaskResultDoesNotExist):
        cancel_task("abc")


def test_force_cancel_needs_backend_support() -> None:
    result = add.enqueue(1, 2)  # cloud_tasks mode: no forceful cancellation
    with pytest.raises(NotImplementedError, match="does not support forceful cancellation"):
        cancel_task(result.id, force=True)
    assert TaskExecution.objects.get(pk=int(result.id)).status == "READY"
    jobs = job_sleep.enqueue("/nonexistent")
    cancel_task(jobs.id, force=True)
    row = TaskExecution.objects.get(pk=int(jobs.id))
    assert row.force_cancel and row.status == "FAILED"


def test_is_task_cancelled_with_our_context_refreshes_from_the_database() -> None:
    from django_tasks_google.base import TaskContext as OurContext

    result = add.enqueue(1, 2)
    context = OurContext(task_result=result)
    assert not is_task_cancelled(context, refresh=True)
    cancel_task(result.id)
    assert not is_task_cancelled(context)  # the cheap check waits for the heartbeat
    assert is_task_cancelled(context, refresh=True)
    assert is_task_cancelled(context)  # remembered


PROBED: list[tuple[bool, bool]] = []


def probe_cancellation(context: TaskContext) -> None:
    PROBED.append((is_task_cancelled(context), is_task_cancelled(context, refresh=True)))


def test_is_task_cancelled_is_portable_to_other_backends() -> None:
    """Under Django's ImmediateBackend (plain TaskContext) it returns False instead of raising."""
    from django.tasks import task

    PROBED.clear()
    immediate = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    with override_settings(TASKS=immediate):
        result = task(takes_context=True)(probe_cancellation).enqueue()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert PROBED == [(False, False)]


def test_cancelling_sends_task_finished_and_records_a_task_cancelled_error() -> None:
    received = []

    def on_finished(sender, task_result, **kwargs):
        errors = [error.exception_class_path for error in task_result.errors]
        received.append((sender.__name__, task_result.status, errors))

    task_finished.connect(on_finished)
    try:
        result = add.enqueue(1, 2)
        cancel_task(result.id)
        cancel_task(result.id)  # already finished: nothing more is sent
    finally:
        task_finished.disconnect(on_finished)
    cancelled = ["django_tasks_google.base.TaskCancelled"]
    assert received == [("ProcessBackend", TaskResultStatus.FAILED, cancelled)]
