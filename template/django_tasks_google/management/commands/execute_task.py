"""`manage.py execute_task <id>`: run one attempt of an execution in the foreground.

The entry point of Cloud Run Jobs containers (`command` option + the execution id). Exits
non-zero only when the execution should be retried, so Cloud Run retries exactly then.
"""

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_tasks_google.executor import run_execution


class Command(BaseCommand):
    help = "Run one attempt of a TaskExecution (the Cloud Run Jobs entry point)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("execution_id", help="The TaskExecution id (the task result id).")

    def handle(self, *args: Any, execution_id: str, **options: Any) -> None:
        # Cloud Run counts attempts from 0; ours are 1-based. Absent (run by hand): the row counts.
        raw_attempt = os.environ.get("CLOUD_RUN_TASK_ATTEMPT")
        attempt = None
        if raw_attempt is not None:
            try:
                attempt = int(raw_attempt) + 1
            except ValueError:
                raise CommandError("CLOUD_RUN_TASK_ATTEMPT must be an integer") from None
        outcome = run_execution(
            execution_id, backend_alias=None, attempt=attempt, install_sigterm_handler=True
        )
        if outcome.retry:
            raise CommandError(f"Task id={execution_id} retry requested ({outcome.reason})")
        self.stdout.write(f"Task id={execution_id}: {outcome.reason}")
