"""Public API for task code: exceptions, the Task and TaskContext classes, cancellation helpers.

Task code imports from here (`from django_tasks_google.base import cancel_task, is_task_cancelled`);
everything else in the app is plumbing behind these names.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.tasks import Task as DjangoTask
from django.tasks import TaskContext as DjangoTaskContext
from django.tasks import TaskResult
from django.tasks.exceptions import TaskResultDoesNotExist

if TYPE_CHECKING:
    from collections.abc import Callable


class TaskError(Exception):
    """A failure of the task's own logic. Retried while attempts remain (see PermanentTaskError)."""

    retryable = True


class PermanentTaskError(TaskError):
    """Raise it to fail the task at once: retrying cannot help, so no further attempt is made."""

    retryable = False


class TaskCancelledError(BaseException):
    """Raised inside a running task when its process receives SIGTERM.

    That happens on forceful cancellation (`cancel_task(id, force=True)`), when the attempt times
    out, and when the platform or the local worker shuts down. It derives from BaseException so a
    task's broad `except Exception` does not swallow it by accident; catch it explicitly to clean up.
    """


class TaskTimeout(TimeoutError):
    """Recorded as the error of an attempt that was stopped because it ran past its timeout."""


class TaskCancelled(Exception):
    """Recorded as the error of an execution that was cancelled (`cancel_task`) before it finished."""


class TaskInterrupted(Exception):
    """Recorded as the error of an attempt that was stopped from outside before it could finish.

    Examples: the worker or the Cloud Run instance shut down (SIGTERM), or the process running the
    attempt died and its lease expired. The task is retried (unless `run_once` forbids it).
    """


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Task(DjangoTask):
    """Django's Task with a per-attempt `timeout`, validated against the backend's `timeout_range`.

    `run_after` may also be a `timedelta`: it is resolved relative to the moment of `enqueue()`.
    """

    timeout: timedelta | None = None

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: Any = None,
        backend: str | None = None,
        timeout: timedelta | None = None,
    ) -> Task:
        changes: dict[str, Any] = {}
        if priority is not None:
            changes["priority"] = priority
        if queue_name is not None:
            changes["queue_name"] = queue_name
        if run_after is not None:
            changes["run_after"] = run_after
        if backend is not None:
            changes["backend"] = backend
        if timeout is not None:
            changes["timeout"] = timeout
        return dataclasses.replace(self, **changes)


def build_task_unvalidated(task_class: type[DjangoTask], **fields: Any) -> DjangoTask:
    """Build a Task without running the backend's validation.

    Used for tasks that were already validated when they were enqueued (stored executions) and for
    validation itself: a stored execution must stay readable even if settings changed since.
    """
    instance = object.__new__(task_class)
    for field in dataclasses.fields(task_class):
        value = fields.get(field.name, field.default)
        if value is dataclasses.MISSING:
            raise TypeError(f"Task field {field.name!r} is required")
        object.__setattr__(instance, field.name, value)
    return instance


def task_fields(task: DjangoTask) -> dict[str, Any]:
    return {field.name: getattr(task, field.name) for field in dataclasses.fields(task)}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TaskContext(DjangoTaskContext):
    """The context passed to tasks declared with `takes_context=True`.

    `attempt` is the delivery attempt as the transport counts it (1 for the first delivery), which
    is what decides whether another attempt will follow.
    """

    _cancel_event: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    _attempt: int = 0

    @property
    def attempt(self) -> int:
        return self._attempt or self.task_result.attempts


def is_task_cancelled(context: DjangoTaskContext, *, refresh: bool = False) -> bool:
    """Whether the running task should stop: it was cancelled, or its attempt lost its lease.

    Without `refresh` this is a cheap flag set by the heartbeat, so it can lag by up to one
    heartbeat interval; `refresh=True` asks the database now. Under a context of another backend
    (e.g. Django's ImmediateBackend in unit tests) it returns False unless the database says
    otherwise, so tasks using it stay portable.
    """
    from .models import TaskExecution

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


def cancel_task(task_result_or_id: TaskResult | str | int, *, force: bool = False) -> None:
    """Cancel a task that has not finished: it becomes FAILED with `cancelled_at` set.

    Graceful (default): a running task notices through `is_task_cancelled()`. Forceful
    (`force=True`, backends with `supports_force_cancel`): the process running the task receives
    SIGTERM, so `TaskCancelledError` is raised inside it. Cancelling a finished task changes nothing.
    Raises TaskResultDoesNotExist for an unknown id.
    """
    from .models import TaskExecution

    result_id = task_result_or_id.id if isinstance(task_result_or_id, TaskResult) else task_result_or_id
    pk = _execution_pk(result_id)
    execution = TaskExecution.objects.filter(pk=pk).first() if pk is not None else None
    if execution is None:
        raise TaskResultDoesNotExist(result_id)
    execution.cancel(force=force)


def _execution_pk(result_id: object) -> int | None:
    try:
        return int(str(result_id))
    except ValueError:
        return None


def task_function_missing(module_path: str, error: Exception) -> Callable[..., Any]:
    """A stand-in for a task function that can no longer be imported.

    Keeps the stored `module_path` (so results stay readable) and raises a clear ImportError if
    it is ever run, which records a normal, retryable failure.
    """
    module, _, qualname = module_path.rpartition(".")

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise ImportError(f"Cannot import the task {module_path!r}: {error}") from error

    missing.__module__ = module
    missing.__qualname__ = qualname
    missing.__name__ = qualname.rpartition(".")[2]
    return missing
