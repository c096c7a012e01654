"""ProcessBackend: tasks run on this machine by `manage.py run_tasks`, in its pool of processes.

Its `mode` mirrors a production backend's capabilities, so task code behaves the same locally:
"cloud_tasks" accepts `run_after`; "cloud_run_jobs" supports forceful cancellation and enforces
`Task.timeout` by SIGTERM, as Cloud Run does.
"""

from __future__ import annotations

from typing import Any

from django.db.models import IntegerField

from ..models import TaskExecution
from ..notify import waking_workers
from ..task import AnyTask
from .base import DjangoTasksGoogleBackend
from .cloud_run_jobs import CLOUD_RUN_JOBS_TIMEOUT_RANGE
from .cloud_tasks import CLOUD_TASKS_TIMEOUT_RANGE
from .delivery import DispatchResult
from .options import ProcessOptions


class ProcessBackend(DjangoTasksGoogleBackend):
    requires_gcp_config = False
    uses_cloud_scheduler = False
    # The worker releases its own abandoned attempts; nothing is delivered that could be lost.
    needs_recovery = False
    options_class = ProcessOptions
    config: ProcessOptions

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        # Per instance: the capabilities follow the mirrored production backend.
        cloud_run = self.config.mode == "cloud_run_jobs"
        self.supports_defer = not cloud_run
        self.supports_force_cancel = cloud_run
        self.enforces_timeout = cloud_run
        self.timeout_range = CLOUD_RUN_JOBS_TIMEOUT_RANGE if cloud_run else CLOUD_TASKS_TIMEOUT_RANGE

    def insert_fields(self, task: AnyTask, using: str) -> dict[str, Any]:
        # The attempt limit is a constant option: stored by the INSERT, which on PostgreSQL also
        # wakes the workers (notify.py), so enqueue is one statement.
        return {"max_attempts": waking_workers(self.config.max_attempts, IntegerField(), using)}

    def dispatch(self, execution: TaskExecution) -> DispatchResult:
        """Nothing to send: the INSERT woke the listening workers (notify.py), and they poll."""
        return DispatchResult.DISPATCHED

    def get_max_attempts(self, queue_name: str) -> int | None:
        return self.config.max_attempts

    def force_cancel(self, execution: TaskExecution) -> None:
        """Nothing to call: the worker running the attempt sees `force_cancel` and SIGTERMs it."""
