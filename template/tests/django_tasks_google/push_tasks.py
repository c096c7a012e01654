"""Tasks the Cloud Tasks tests enqueue; also importable by the gunicorn server of the end-to-end test.

Declared on the "default" alias and queue, which every generated project has; the tests point
that alias (and sometimes a second one, through `.using(backend=...)`) at CloudTasksBackend.
"""

import threading

from django.db import transaction
from django.tasks import task

from django_tasks_google.base import PermanentTaskError, TaskContext, TaskError

# Seconds a blocking task waits at most: a test that never releases it fails instead of hanging.
WAIT_LIMIT = 30

# Gates of `blocks`, by name: the test waits for "<name>:started" and sets "<name>:release".
GATES: dict[str, threading.Event] = {}


def gate(name: str) -> threading.Event:
    return GATES.setdefault(name, threading.Event())


@task()
def add(a: int, b: int) -> int:
    return a + b


@task(takes_context=True)
def fails_until_attempt(context: TaskContext, succeed_on: int) -> int:
    if context.attempt < succeed_on:
        raise TaskError(f"attempt {context.attempt} fails")
    return context.attempt


@task()
def always_fails() -> None:
    raise TaskError("this task always fails")


@task()
def fails_permanently() -> None:
    raise PermanentTaskError("retrying cannot help")


@task()
def blocks(name: str) -> str:
    """Runs until the test releases it: keeps the execution's lease held meanwhile."""
    gate(f"{name}:started").set()
    if not gate(f"{name}:release").wait(WAIT_LIMIT):
        raise TimeoutError(f"gate {name!r} was never released")
    return "released"


@task()
def reports_transaction() -> bool:
    """Whether the task runs inside a database transaction (it must not: the executor commits)."""
    return transaction.get_connection().in_atomic_block
