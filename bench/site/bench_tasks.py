"""The tasks every subject of bench/compare.py runs: the same trivial work for all three backends."""

import time

from django.tasks import task


@task
def noop() -> None:
    """Nothing: what is measured is the backend's own cost per task."""


@task
def sleep_50ms() -> None:
    """Waits 50 ms without using the CPU, like a task that calls a slow API."""
    time.sleep(0.05)
