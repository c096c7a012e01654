"""The task attempt that log records belong to, as labels a log formatter can attach.

One process runs many attempts, concurrently in a push-serving service's threads, so "which
attempt wrote this line" cannot be read from the message alone. Code running an attempt enters
`task_attempt()`; a formatter calls `attempt_labels()` for each record (the project's Cloud Logging
formatter puts them in `logging.googleapis.com/labels`, so Logs Explorer can filter on them).
A ContextVar keeps concurrent attempts apart: each thread sees only its own.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_labels: ContextVar[dict[str, str] | None] = ContextVar("django_tasks_google_attempt_labels", default=None)


@contextmanager
def task_attempt(execution_id: str | int, task_path: str, attempt: int) -> Iterator[None]:
    """Label the records logged inside the block with this attempt (values are strings, as Cloud
    Logging's labels must be)."""
    token = _labels.set(
        {"task_execution_id": str(execution_id), "task_path": task_path, "task_attempt": str(attempt)}
    )
    try:
        yield
    finally:
        _labels.reset(token)


def attempt_labels() -> dict[str, str]:
    """The labels of the attempt running in this context; empty outside one."""
    return dict(_labels.get() or {})
