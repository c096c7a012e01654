"""CloudRunJobsBackend: each execution runs as an execution of a Cloud Run job (`execute_task <id>`)."""

from __future__ import annotations

from datetime import timedelta

from ..models import TaskExecution
from .base import DjangoTasksGoogleBackend
from .options import OptionReader

# Cloud Run Jobs' per-attempt task timeout bounds.
CLOUD_RUN_JOBS_TIMEOUT_RANGE = (timedelta(seconds=1), timedelta(hours=168))
DEFAULT_COMMAND = ["python", "manage.py", "execute_task"]


class CloudRunJobsBackend(DjangoTasksGoogleBackend):
    supports_defer = False
    supports_force_cancel = True
    timeout_range = CLOUD_RUN_JOBS_TIMEOUT_RANGE

    def parse_options(self, options: OptionReader) -> None:
        super().parse_options(options)
        # Sent as the container's args, followed by the execution id.
        self.command = options.string_list("command", DEFAULT_COMMAND)

    def dispatch(self, execution: TaskExecution) -> None:
        raise NotImplementedError(
            "CloudRunJobsBackend.dispatch is implemented by the Cloud Run Jobs backend issue"
        )

    def get_max_attempts(self, queue_name: str) -> int | None:
        raise NotImplementedError(
            "CloudRunJobsBackend.get_max_attempts is implemented by the Cloud Run Jobs backend issue"
        )

    def force_cancel(self, execution: TaskExecution) -> None:
        raise NotImplementedError(
            "CloudRunJobsBackend.force_cancel is implemented by the Cloud Run Jobs backend issue"
        )
