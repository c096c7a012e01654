"""`manage.py execute_task <id>`: run one attempt of an execution in the foreground.

The entry point of Cloud Run Jobs containers (`command` option + the execution id). Exits
non-zero only when the execution should be retried, so Cloud Run retries exactly then.
"""

import logging
import os
import re
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.tasks import TaskResultStatus
from django.utils import timezone

from django_tasks_google.executor import Outcome, run_execution
from django_tasks_google.models import TaskExecution

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run one attempt of a TaskExecution (the Cloud Run Jobs entry point)."
    # A job container runs one attempt: checks belong to the deployment, and a failing unrelated
    # check must not fail every attempt (nor cost each container start the time to run them).
    requires_system_checks = ()

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("execution_id", help="The TaskExecution id (the task result id).")

    def handle(self, *args: Any, execution_id: str, **options: Any) -> None:
        # Cloud Run counts attempts from 0; ours are 1-based. Absent (run by hand): the row counts.
        # (Cloud Run retries a task at most 10 times, so a longer value is not Cloud Run's.)
        raw_attempt = os.environ.get("CLOUD_RUN_TASK_ATTEMPT")
        attempt = None
        if raw_attempt is not None:
            if not re.fullmatch(r"[0-9]{1,9}", raw_attempt.strip()):
                raise CommandError("CLOUD_RUN_TASK_ATTEMPT must be a non-negative integer below 10**9")
            attempt = int(raw_attempt) + 1
        outcome = run_execution(
            execution_id, backend_alias=None, attempt=attempt, install_sigterm_handler=True
        )
        # Cloud Run runs the attempts of a task one after another, so a lease held against a retry
        # is an earlier attempt's whose container was killed (out of memory, or still busy 10 s
        # after SIGTERM). Exiting now would use up the remaining retries within seconds and leave
        # the task RUNNING; that lease runs out by itself instead.
        retry_blocked_by_dead_attempt = (
            outcome.reason == Outcome.LEASE_HELD and attempt is not None and attempt > 1
        )
        if retry_blocked_by_dead_attempt and wait_for_dead_lease(execution_id):
            outcome = run_execution(
                execution_id, backend_alias=None, attempt=attempt, install_sigterm_handler=True
            )
        if outcome.retry:
            raise CommandError(f"Task id={execution_id} retry requested ({outcome.reason})")
        self.stdout.write(f"Task id={execution_id}: {outcome.reason}")


def wait_for_dead_lease(execution_id: str) -> bool:
    """Wait until the lease on a RUNNING execution expires; False if its holder renews it (alive).

    A dead holder's lease never moves, so the wait is bounded by `heartbeat_timeout_seconds`.
    """
    pk = int(execution_id)
    first_seen = None
    while True:
        lease = TaskExecution.objects.filter(pk=pk).values_list("status", "lease_expires_at").first()
        now = timezone.now()
        if lease is None or lease[0] != TaskResultStatus.RUNNING or lease[1] is None or lease[1] <= now:
            return True
        if first_seen is None:
            first_seen = lease[1]
            logger.info("Task %s: an earlier attempt's lease holds it until %s; waiting", pk, lease[1])
        elif lease[1] > first_seen:
            return False
        # Polled, not slept through: the row may be cancelled or released meanwhile.
        time.sleep(min(1.0, max(0.05, (lease[1] - now).total_seconds())))
