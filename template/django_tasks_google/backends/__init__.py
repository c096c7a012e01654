"""The task backends: put one of these dotted paths in TASKS[alias]["BACKEND"]."""

from .base import DjangoTasksGoogleBackend
from .cloud_run_jobs import CloudRunJobsBackend
from .cloud_tasks import CloudTasksBackend
from .delivery import TaskDispatchError
from .process import ProcessBackend

__all__ = [
    "CloudRunJobsBackend",
    "CloudTasksBackend",
    "DjangoTasksGoogleBackend",
    "ProcessBackend",
    "TaskDispatchError",
]
