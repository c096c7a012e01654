"""Tasks of the "Google behaves badly" suite; importable by the service under gunicorn and by job
containers (``record.using(backend="jobs", queue_name="batch")``). Each body run appends one line
to ``<directory>/<key>.runs`` (written and synced before anything else), so the suite counts body
runs across processes, kills included."""

import os
import time
from pathlib import Path

from django.tasks import task

from django_tasks_google.base import TaskContext, TaskError


def _log_run(directory: str, key: str, line: str) -> None:
    with (Path(directory) / f"{key}.runs").open("a") as runs:
        runs.write(f"{line}\n")
        runs.flush()
        os.fsync(runs.fileno())


def runs(directory: str, key: str) -> list[list[str]]:
    """The body runs of ``key`` so far: one ``[pid, attempt, plan, unix time]`` per run."""
    path = Path(directory) / f"{key}.runs"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@task(takes_context=True)
def record(
    context: TaskContext,
    directory: str,
    key: str,
    seconds: float = 0.0,
    fail_runs: int = 0,
    nul: bool = False,
) -> str:
    """Logs its run; the first run works ``seconds``; the first ``fail_runs`` runs fail on purpose.

    ``nul``: returns a string with a NUL character, which PostgreSQL's jsonb cannot store.
    """
    earlier = len(runs(directory, key))
    deliberate = earlier < fail_runs
    plan = "fail" if deliberate or nul else "ok"  # a NUL result fails its attempt by design
    _log_run(directory, key, f"{os.getpid()} {context.attempt} {plan} {time.time()}")
    if not earlier:
        time.sleep(seconds)
    if deliberate:
        raise TaskError(f"deliberate failure of run {earlier + 1}")
    return "a\x00b" if nul else "done"
