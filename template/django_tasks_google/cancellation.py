"""Cancelling a task and asking whether it was cancelled: the public helpers task code calls.

They need both the stored row and its backend (a forceful cancel asks the platform to stop the
attempt), so they live above the backends; task code imports them from `django_tasks_google.base`.
"""

from __future__ import annotations

from typing import Any

from django.tasks import TaskContext as DjangoTaskContext
from django.tasks import TaskResult
from django.tasks.exceptions import TaskResultDoesNotExist

from .backends.base import google_backend
from .models import TaskExecution
from .task import AnyTaskResult, TaskContext


def is_task_cancelled(context: DjangoTaskContext[..., Any], *, refresh: bool = False) -> bool:
    """Whether the running task should stop: it was cancelled, or its attempt lost its lease.

    Without `refresh` this is a cheap flag set by the heartbeat, so it can lag by up to one
    heartbeat interval; `refresh=True` asks the database now. Under a context of another backend
    (e.g. Django's ImmediateBackend in unit tests) it returns False unless the database says
    otherwise, so tasks using it stay portable.
    """
    event = context._cancel_event if isinstance(context, TaskContext) else None
    if event is not None and event.is_set():
        return True
    if not refresh:
        return False
    pk = _execution_pk(context.task_result.id)
    if pk is None:
        return False
    cancelled = TaskExecution.objects.filter(pk=pk, cancelled_at__isnull=False).exists()
    if cancelled and event is not None:
        event.set()
    return cancelled


def cancel_task(task_result_or_id: AnyTaskResult | str | int, *, force: bool = False) -> None:
    """Cancel a task that has not finished: it becomes FAILED with `cancelled_at` set.

    Graceful (default): a running task notices through `is_task_cancelled()`. Forceful
    (`force=True`, backends with `supports_force_cancel`): the process running the task receives
    SIGTERM, so `TaskCancelledError` is raised inside it. Cancelling a finished task changes nothing.
    Raises TaskResultDoesNotExist for an unknown id.
    """
    execution_id = task_result_or_id.id if isinstance(task_result_or_id, TaskResult) else task_result_or_id
    pk = _execution_pk(execution_id)
    execution = TaskExecution.objects.filter(pk=pk).first() if pk is not None else None
    if execution is None:
        raise TaskResultDoesNotExist(execution_id)
    cancel_execution(execution, force=force)


def cancel_execution(execution: TaskExecution, *, force: bool = False) -> bool:
    """Cancel this execution unless it already finished; returns whether it was cancelled.

    See `ExecutionQuerySet.cancel`; with `force`, the backend then stops the running attempt
    (outside any transaction: no row lock is held while a platform API is called).
    """
    cancelled = TaskExecution.objects.cancel(execution, force=force)
    if cancelled and force:
        google_backend(execution.backend_alias).force_cancel(execution)
    return cancelled


def _execution_pk(execution_id: object) -> int | None:
    try:
        return int(str(execution_id))
    except ValueError:
        return None
