"""Tasks the core tests enqueue; importable by the worker and execute_task subprocesses.

They use the test-only ProcessBackend aliases of config/test_settings.py ("test-tasks": cloud_tasks
mode, 3 attempts; "test-jobs": cloud_run_jobs mode, 1 attempt; "test-once": run_once). Tasks that
must be observed from the test write marker files into a directory the test passes in.
"""

import os
import signal
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from django.tasks import TaskContext, task

from django_tasks_google.base import PermanentTaskError, TaskCancelledError, TaskError, is_task_cancelled

WAIT_LIMIT = 30  # seconds: no test task waits longer than this for anything


@task(backend="test-tasks")
def add(a: int, b: int) -> int:
    return a + b


@task(backend="test-tasks")
def echo(*args: object, **kwargs: object) -> dict:
    """Returns its arguments as it received them (after the JSON round trip)."""
    return {"args": list(args), "kwargs": kwargs, "types": [type(arg).__name__ for arg in args]}


@task(backend="test-tasks")
async def add_async(a: int, b: int) -> int:
    return a + b


@task(backend="test-tasks")
def returns_datetime() -> datetime:
    return datetime(2030, 1, 1, tzinfo=UTC)


@task(backend="test-tasks")
def returns_decimal() -> Decimal:
    return Decimal("1.5")


@task(backend="test-tasks")
def fails(message: str = "it failed") -> None:
    raise TaskError(message)


@task(backend="test-tasks")
def fails_permanently() -> None:
    raise PermanentTaskError("cannot succeed")


@task(backend="test-tasks")
def raises_value_error() -> None:
    raise ValueError("plain exception")


@task(backend="test-once")
def fails_once_only() -> None:
    raise TaskError("a retryable failure, but run_once")


@task(backend="test-tasks", takes_context=True)
def fails_until_attempt(context: TaskContext, succeed_on: int) -> int:
    if context.attempt < succeed_on:
        raise TaskError(f"attempt {context.attempt} fails")
    return context.attempt


@task(backend="test-tasks", takes_context=True)
def report_context(context: TaskContext) -> dict:
    return {
        "attempt": context.attempt,
        "id": context.task_result.id,
        "status": str(context.task_result.status),
        "sigterm_handler": repr(signal.getsignal(signal.SIGTERM)),
    }


@task(backend="test-tasks")
def record_run(directory: str, seconds: float = 0.0) -> int:
    """Writes one uniquely named marker per run: the test counts how often each id ran."""
    marker = Path(directory) / f"run-{os.getpid()}-{time.monotonic_ns()}"
    time.sleep(seconds)
    marker.write_text("ran")
    return os.getpid()


@task(backend="test-tasks", takes_context=True)
def record_run_with_id(context: TaskContext, directory: str) -> str:
    Path(directory, f"{context.task_result.id}-{os.getpid()}-{time.monotonic_ns()}").write_text("ran")
    return context.task_result.id


@task(backend="test-tasks", takes_context=True)
def wait_until_cancelled(context: TaskContext, directory: str, refresh: bool = False) -> str:
    """Graceful cancellation: loops until is_task_cancelled(), then reports how it ended."""
    Path(directory, "started").write_text(str(os.getpid()))
    deadline = time.monotonic() + WAIT_LIMIT
    while time.monotonic() < deadline:
        if is_task_cancelled(context, refresh=refresh):
            Path(directory, "noticed").write_text("cancelled")
            return "noticed cancellation"
        time.sleep(0.02)
    return "never cancelled"


@task(backend="test-tasks", takes_context=True)
def cancel_itself(context: TaskContext) -> str:
    """Cancels its own execution, then checks both ways of noticing it."""
    from django_tasks_google.base import cancel_task

    cancel_task(context.task_result.id)
    immediately = is_task_cancelled(context, refresh=True)
    return f"noticed={immediately}"


@task(backend="test-tasks", takes_context=True)
def cancel_itself_then_wait(context: TaskContext) -> bool:
    """Cancels itself, then waits for the heartbeat (no refresh) to notice."""
    from django_tasks_google.base import cancel_task

    cancel_task(context.task_result.id)
    deadline = time.monotonic() + WAIT_LIMIT
    while time.monotonic() < deadline and not is_task_cancelled(context):
        time.sleep(0.02)
    return is_task_cancelled(context)


def _sleep_or_sigterm(directory: str, seconds: float, swallow: bool) -> str:
    Path(directory, "started").write_text(str(os.getpid()))
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)
    except TaskCancelledError:
        Path(directory, "cleanup").write_text("TaskCancelledError")
        if not swallow:
            raise
        # A task that ignores the request to stop: only SIGKILL ends it.
        deadline = time.monotonic() + WAIT_LIMIT
        while time.monotonic() < deadline:
            time.sleep(0.02)
    Path(directory, "finished").write_text("finished")
    return "slept"


@task(backend="test-jobs")
def job_sleep(directory: str, seconds: float = WAIT_LIMIT) -> str:
    """A Cloud Run Jobs-mode task that sleeps; SIGTERM raises TaskCancelledError inside it."""
    return _sleep_or_sigterm(directory, seconds, swallow=False)


@task(backend="test-jobs")
def job_sleep_ignoring_sigterm(directory: str) -> str:
    return _sleep_or_sigterm(directory, WAIT_LIMIT, swallow=True)


@task(backend="test-tasks")
def sleep(directory: str, seconds: float = WAIT_LIMIT) -> str:
    """A cloud_tasks-mode task that sleeps (3 attempts allowed)."""
    return _sleep_or_sigterm(directory, seconds, swallow=False)


@task(backend="test-tasks", takes_context=True)
def sleeps_on_first_attempt(context: TaskContext, directory: str) -> int:
    """The first attempt writes its pid and sleeps (the test kills it); later attempts succeed."""
    if context.attempt == 1:
        Path(directory, "started").write_text(str(os.getpid()))
        time.sleep(WAIT_LIMIT)
    return context.attempt


@task(backend="test-tasks")
def returns_nul() -> str:
    return "a\x00b"


@task(backend="test-tasks")
def raises_nul() -> None:
    raise ValueError("a NUL \x00 and a lone surrogate \ud800")


@task(backend="test-tasks")
def drops_its_connection() -> str:
    """PostgreSQL only: another session terminates this one's, as a database restart would."""
    import threading

    from django.db import connection, connections

    pid = connection.cursor().connection.info.backend_pid

    def terminate() -> None:
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        finally:
            connections.close_all()

    killer = threading.Thread(target=terminate)
    killer.start()
    killer.join(WAIT_LIMIT)
    return "saved"
