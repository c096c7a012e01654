"""CloudTasksBackend: each execution becomes a Cloud Tasks HTTP task pushed to /tasks/execute/."""

from __future__ import annotations

from datetime import timedelta

from ..models import TaskExecution
from .base import DjangoTasksGoogleBackend

# Cloud Tasks' dispatch_deadline bounds.
CLOUD_TASKS_TIMEOUT_RANGE = (timedelta(seconds=15), timedelta(minutes=30))


class CloudTasksBackend(DjangoTasksGoogleBackend):
    supports_defer = True
    timeout_range = CLOUD_TASKS_TIMEOUT_RANGE

    def dispatch(self, execution: TaskExecution) -> None:
        raise NotImplementedError(
            "CloudTasksBackend.dispatch is implemented by the Cloud Tasks backend issue"
        )

    def get_max_attempts(self, queue_name: str) -> int | None:
        raise NotImplementedError(
            "CloudTasksBackend.get_max_attempts is implemented by the Cloud Tasks backend issue"
        )
