"""The exceptions task code raises or catches, and those recorded as an attempt's error.

They are defined here, at the bottom of the app, because every layer raises or records them (the
attempt policy, the claim, the executor, the worker). Their public home stays
`django_tasks_google.base`: each class's `__module__` says so, because an error's stored
`exception_class_path` is built from it, and rows written by the published package (and by earlier
versions of this app) name `django_tasks_google.base.<class>`; Django's `TaskError.exception_class`
imports that path, which `base` re-exports.
"""

from __future__ import annotations

PUBLIC_MODULE = "django_tasks_google.base"


class TaskError(Exception):
    """A failure of the task's own logic. Retried while attempts remain (see PermanentTaskError)."""

    __module__ = PUBLIC_MODULE
    retryable = True


class PermanentTaskError(TaskError):
    """Raise it to fail the task at once: retrying cannot help, so no further attempt is made."""

    __module__ = PUBLIC_MODULE
    retryable = False


class TaskCancelledError(BaseException):
    """Raised inside a running task when its process receives SIGTERM.

    That happens on forceful cancellation (`cancel_task(id, force=True)`), when the attempt times
    out, and when the platform or the local worker shuts down. It derives from BaseException so a
    task's broad `except Exception` does not swallow it by accident; catch it explicitly to clean up.
    """

    __module__ = PUBLIC_MODULE


class TaskTimeout(TimeoutError):
    """Recorded as the error of an attempt that was stopped because it ran past its timeout."""

    __module__ = PUBLIC_MODULE


class TaskCancelled(Exception):
    """Recorded as the error of an execution that was cancelled (`cancel_task`) before it finished."""

    __module__ = PUBLIC_MODULE


class TaskInterrupted(Exception):
    """Recorded as the error of an attempt that was stopped from outside before it could finish.

    Examples: the worker or the Cloud Run instance shut down (SIGTERM), or the process running the
    attempt died and its lease expired. The task is retried (unless `run_once` forbids it).
    """

    __module__ = PUBLIC_MODULE
