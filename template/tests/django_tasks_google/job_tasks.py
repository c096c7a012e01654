"""Tasks the Cloud Run Jobs tests enqueue; importable by the job container subprocesses.

They are declared on the "default" alias and queue, which every generated project has; the tests
point that alias at CloudRunJobsBackend.
"""

import time
from pathlib import Path

from django.tasks import task

from django_tasks_google.base import TaskCancelledError, TaskContext, TaskError


@task(takes_context=True)
def fails_on_first_attempt(context: TaskContext) -> dict:
    if context.attempt == 1:
        raise TaskError("the first attempt fails")
    return {"attempt": context.attempt}


@task()
def always_fails() -> None:
    raise TaskError("this task always fails")


@task(takes_context=True)
def wait_for_sigterm(context: TaskContext, started_marker: str, cleanup_marker: str) -> str:
    """On its first attempt: signals that it runs, then waits for SIGTERM (TaskCancelledError),
    cleans up and stops. Later attempts finish at once."""
    if context.attempt > 1:
        return f"attempt {context.attempt} finished"
    Path(started_marker).write_text("started")
    try:
        deadline = time.monotonic() + 60  # never hang a test run
        while time.monotonic() < deadline:
            time.sleep(0.02)
    except TaskCancelledError:
        Path(cleanup_marker).write_text("cleaned up")
        raise
    return "not interrupted"
