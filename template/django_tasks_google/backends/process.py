"""ProcessBackend: tasks run on this machine by `manage.py run_tasks`, one process per attempt.

Its `mode` mirrors a production backend's capabilities, so task code behaves the same locally:
"cloud_tasks" accepts `run_after`; "cloud_run_jobs" supports forceful cancellation and enforces
`Task.timeout` by SIGTERM, as Cloud Run does.
"""

from __future__ import annotations

from typing import Any

from ..models import TaskExecution
from .base import DjangoTasksGoogleBackend
from .cloud_run_jobs import CLOUD_RUN_JOBS_TIMEOUT_RANGE
from .cloud_tasks import CLOUD_TASKS_TIMEOUT_RANGE
from .options import OptionReader

MODES = ("cloud_tasks", "cloud_run_jobs")


class ProcessBackend(DjangoTasksGoogleBackend):
    requires_gcp_config = False
    uses_cloud_scheduler = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        # Per instance: the flags follow the mocked production backend.
        self.supports_defer = self.mode == "cloud_tasks"
        self.supports_force_cancel = self.mode == "cloud_run_jobs"
        self.timeout_range = (
            CLOUD_TASKS_TIMEOUT_RANGE if self.mode == "cloud_tasks" else CLOUD_RUN_JOBS_TIMEOUT_RANGE
        )

    def parse_options(self, options: OptionReader) -> None:
        super().parse_options(options)
        self.mode = options.choice("mode", "cloud_tasks", MODES, subject="ProcessBackend mode")
        self.max_attempts = options.integer("max_attempts", 1, minimum=1) or 1
        self.max_workers = options.integer("max_workers", 4, minimum=1) or 4
        self.poll_interval = options.number("poll_interval_seconds", 1.0, above=0)
        self.batch_size = options.integer("batch_size", self.max_workers, minimum=1) or self.max_workers
        # On shutdown, running attempts get this long to finish before they are interrupted
        # (and returned to READY).
        self.shutdown_timeout = options.number("shutdown_timeout_seconds", 10.0, minimum=0)
        # After SIGTERM (cancel, timeout, shutdown) an attempt gets this long before SIGKILL,
        # like Cloud Run's 10 seconds.
        self.kill_grace = options.number("kill_grace_seconds", 10.0, minimum=0)

    def dispatch(self, execution: TaskExecution) -> None:
        """Nothing to send: the worker polls the table. Fix the attempt limit on the row."""
        max_attempts = self.max_attempts_for(execution.queue_name)
        TaskExecution.objects.filter(pk=execution.pk).update(max_attempts=max_attempts)
        execution.max_attempts = max_attempts

    def get_max_attempts(self, queue_name: str) -> int | None:
        return self.max_attempts

    def force_cancel(self, execution: TaskExecution) -> None:
        """Nothing to call: the worker running the attempt sees `force_cancel` and SIGTERMs it."""
