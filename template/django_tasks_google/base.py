"""Public API for task code: exceptions, the Task and TaskContext classes, cancellation helpers.

Task code imports from here (`from django_tasks_google.base import cancel_task, is_task_cancelled`);
everything else in the app is plumbing behind these names, and none of it imports this module
(the names are defined in errors.py, task.py and cancellation.py, at their own layers).
"""

from .cancellation import cancel_task, is_task_cancelled
from .errors import (
    PermanentTaskError,
    TaskCancelled,
    TaskCancelledError,
    TaskError,
    TaskInterrupted,
    TaskTimeout,
)
from .task import Task, TaskContext

__all__ = [
    "PermanentTaskError",
    "Task",
    "TaskCancelled",
    "TaskCancelledError",
    "TaskContext",
    "TaskError",
    "TaskInterrupted",
    "TaskTimeout",
    "cancel_task",
    "is_task_cancelled",
]
