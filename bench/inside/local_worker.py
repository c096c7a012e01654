"""Measured inside the rendered service (see ../local_worker.py): drain N no-op tasks two ways.

* ours: `manage.py run_tasks`, the pool worker (Django set up once, forked processes that run many
  attempts each);
* spawn per task: one `manage.py execute_task <id>` process per task, the same executor in a
  fresh interpreter that runs `django.setup()` each time.

Both run at most `--concurrency` attempts at once. Elapsed time runs from the start of the drain
(the worker's own start-up included) to the last `finished_at` recorded in the database.
The time until the first task finished shows the start-up cost. Prints one JSON line.
"""

# ruff: noqa: E402  (the app's modules are imported once django.setup() has run)

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import django

django.setup()

from django.core.management import call_command
from django.db.models import Max, Min
from django.tasks import TaskResultStatus
from django.utils import timezone
from django.utils.module_loading import import_string
from django_tasks_google.models import TaskExecution


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    # The service's own no-op sample task (returns a dict), on the local "default" alias.
    slug = re.search(r"^project_slug: (\S+)$", Path(".copier-answers.yml").read_text(), re.MULTILINE)
    if slug is None:
        sys.exit("No project_slug in .copier-answers.yml")
    task = import_string(f"{slug[1]}.tasks.send_notification")

    results = {}
    for name, drain in [("spawn", drain_spawning), ("ours", drain_with_worker)]:
        TaskExecution.objects.all().delete()
        ids = [task.enqueue(number).id for number in range(args.tasks)]
        started = timezone.now()
        drain(ids, args.concurrency)
        results[name] = elapsed_until_finished(ids, started)
    print(json.dumps(results))


def drain_spawning(ids: list[str], concurrency: int) -> None:
    def execute(execution_id: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "execute_task", execution_id],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # its log lines; an outcome other than success fails below
            check=False,
        )

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(execute, ids))


def drain_with_worker(ids: list[str], concurrency: int) -> None:
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "run_tasks", "--max-workers", str(concurrency)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while TaskExecution.objects.filter(pk__in=ids, finished_at__isnull=True).exists():
            if worker.poll() is not None:
                sys.exit(f"run_tasks exited early with code {worker.returncode}")
            if time.monotonic() > deadline:
                sys.exit("run_tasks did not finish the tasks within 300 s")
            time.sleep(0.05)  # elapsed time comes from finished_at, not from this poll
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def elapsed_until_finished(ids: list[str], started: datetime) -> dict[str, float]:
    """Seconds from the start of the drain until the first and the last task finished."""
    rows = TaskExecution.objects.filter(pk__in=ids)
    failed = rows.exclude(status=TaskResultStatus.SUCCESSFUL).count()
    if failed:
        sys.exit(f"{failed} of {len(ids)} tasks did not succeed")
    times = rows.aggregate(first=Min("finished_at"), last=Max("finished_at"))
    return {key: (value - started).total_seconds() for key, value in times.items()}


if __name__ == "__main__":
    main()
