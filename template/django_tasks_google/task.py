"""The app's Task and TaskContext, and how a Task object is built from stored fields.

The bottom of the app: backends, models and the executor all build or read tasks, so this module
imports nothing of the app. Task code reaches these names through `django_tasks_google.base`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.tasks import Task as DjangoTask
from django.tasks import TaskContext as DjangoTaskContext
from django.tasks import TaskResult

# Tasks of any signature and result: the app stores arguments and return values as JSON and never
# calls a task with arguments it can check statically.
type AnyTask = DjangoTask[..., Any]
type AnyTaskResult = TaskResult[..., Any]

# Django's classes are generic in django-stubs only: subscripting them at run time would fail.
if TYPE_CHECKING:
    _DjangoTaskBase = DjangoTask[..., Any]
    _DjangoTaskContextBase = DjangoTaskContext[..., Any]
else:
    _DjangoTaskBase = DjangoTask
    _DjangoTaskContextBase = DjangoTaskContext


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Task(_DjangoTaskBase):
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


def build_task_unvalidated(task_class: type[AnyTask], **fields: Any) -> AnyTask:
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


def task_fields(task: AnyTask) -> dict[str, Any]:
    return {field.name: getattr(task, field.name) for field in dataclasses.fields(task)}


# django-stubs declares Django's (frozen) TaskContext dataclass as not frozen.
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TaskContext(_DjangoTaskContextBase):  # type: ignore[misc]
    """The context passed to tasks declared with `takes_context=True`.

    `attempt` is the delivery attempt as the transport counts it (1 for the first delivery), which
    is what decides whether another attempt will follow.
    """

    _cancel_event: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    _attempt: int = 0

    @property
    def attempt(self) -> int:
        return self._attempt or self.task_result.attempts


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
