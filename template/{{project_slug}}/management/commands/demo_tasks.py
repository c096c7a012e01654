"""`manage.py demo_tasks`: run the sample tasks on the local worker and show what happened.

Starts `manage.py run_tasks`, enqueues each sample task (and cancels a second, long
`batch_process` once it runs), waits for all of them to finish, prints their results, then stops
the worker with SIGTERM as you would. Exits non-zero if anything turned out differently.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.tasks import TaskResult, TaskResultStatus

from django_tasks_google.backends import ProcessBackend
from django_tasks_google.base import cancel_task
from django_tasks_google.models import TaskExecution

from ...tasks import batch_process, recompute_analytics, send_notification


class Command(BaseCommand):
    help = "Run the sample tasks on the local worker (run_tasks) and print their results."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--timeout", type=float, default=120, help="Seconds to wait for the tasks (default 120)."
        )

    def handle(self, *args: Any, timeout: float, **options: Any) -> None:
        for sample in (send_notification, recompute_analytics, batch_process):
            if not isinstance(sample.get_backend(), ProcessBackend):
                raise CommandError(
                    f"{sample.name} runs on backend {sample.backend!r}, which is not a local ProcessBackend. "
                    "Run the demo with TASKS_TARGET=local."
                )
        worker = self.start_worker()
        try:
            expected = self.enqueue_and_wait(timeout)
        finally:
            exit_code = self.stop_worker(worker)
        ids = [int(result.id) for result, _check in expected]
        rows = TaskExecution.objects.in_bulk(ids)
        self.print_table([rows[pk] for pk in ids])
        problems = [
            f"{rows[pk].module_path} (id {pk}): {problem}"
            for pk, (_result, check) in zip(ids, expected, strict=True)
            if (problem := check(rows[pk]))
        ]
        if exit_code != 0:
            problems.append(f"the worker exited with code {exit_code}")
        if problems:
            raise CommandError("Unexpected results:\n  " + "\n  ".join(problems))
        self.stdout.write(self.style.SUCCESS("All sample tasks behaved as expected."))

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.stdout.write("Starting the local worker: manage.py run_tasks")
        # Its own session: a Ctrl-C here reaches the demo, which then stops the worker cleanly.
        return subprocess.Popen(
            [
                sys.executable,
                str(Path(settings.BASE_DIR) / "manage.py"),
                "run_tasks",
                "--poll-interval",
                "0.2",
            ],
            cwd=settings.BASE_DIR,
            env=os.environ.copy(),
            start_new_session=True,
        )

    def stop_worker(self, worker: subprocess.Popen[bytes]) -> int:
        self.stdout.write("Stopping the worker (SIGTERM)")
        worker.send_signal(signal.SIGTERM)
        try:
            return worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            return worker.wait()

    def enqueue_and_wait(self, timeout: float) -> list[tuple[TaskResult, Any]]:
        """Enqueue the samples; returns each result with a check of its final row (None = as expected)."""
        expected: list[tuple[TaskResult, Any]] = [
            (send_notification.enqueue(user_id=42), succeeded_with({"user_id": 42, "status": "sent"})),
            (recompute_analytics.enqueue(), succeeded_with({"ok": True})),
            (
                batch_process.enqueue(items=5, seconds_per_item=0.1),
                succeeded_with({"processed": 5, "cancelled": False}),
            ),
        ]
        # Long enough to be cancelled while it runs.
        long_batch = batch_process.enqueue(items=1200, seconds_per_item=0.05)
        expected.append((long_batch, cancelled))
        self.stdout.write(f"Enqueued {len(expected)} tasks; waiting for them (at most {timeout:.0f}s)")
        deadline = time.monotonic() + timeout
        wait_until(lambda: status_of(long_batch) != TaskResultStatus.READY, deadline)
        time.sleep(1)  # let it get going, so the cancellation reaches a running task
        self.stdout.write(f"Cancelling task {long_batch.id} (batch_process) gracefully while it runs")
        cancel_task(long_batch.id)
        wait_until(lambda: all(result.is_finished for result in refreshed(expected)), deadline)
        return expected

    def print_table(self, rows: list[TaskExecution]) -> None:
        header = ("id", "task", "status", "return value", "errors")
        lines = [header] + [
            (
                str(row.pk),
                row.module_path.rpartition(".")[2],
                row.status,
                shorten(repr(row.return_value)) if row.status == TaskResultStatus.SUCCESSFUL else "-",
                describe_errors(row),
            )
            for row in rows
        ]
        widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
        self.stdout.write("")
        for number, line in enumerate(lines):
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
            if number == 0:
                self.stdout.write("  ".join("-" * width for width in widths))
        self.stdout.write("")


def succeeded_with(value: object) -> Any:
    def check(row: TaskExecution) -> str | None:
        if row.status != TaskResultStatus.SUCCESSFUL:
            return f"expected SUCCESSFUL, got {row.status}"
        if row.return_value != value:
            return f"expected {value!r}, got {row.return_value!r}"
        return None

    return check


def cancelled(row: TaskExecution) -> str | None:
    if row.status != TaskResultStatus.FAILED or row.cancelled_at is None:
        return f"expected a cancelled (FAILED) task, got {row.status}"
    return None


def status_of(result: TaskResult) -> str:
    result.refresh()
    return result.status


def refreshed(expected: list[tuple[TaskResult, Any]]) -> list[TaskResult]:
    for result, _check in expected:
        result.refresh()
    return [result for result, _check in expected]


def wait_until(condition: Any, deadline: float) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise CommandError("The tasks did not finish in time; is the worker running? See its log above.")
        time.sleep(0.2)


def describe_errors(row: TaskExecution) -> str:
    if row.cancelled_at is not None:
        return "cancelled"
    if not row.errors:
        return ""
    last = row.errors[-1]["traceback"].strip().splitlines()[-1]
    return shorten(f"{len(row.errors)}: {last}")


def shorten(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
