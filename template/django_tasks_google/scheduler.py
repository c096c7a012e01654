"""The public scheduling API: scheduled (cron) tasks, defined in code, settings or the admin.

    from django_tasks_google.scheduler import delete_scheduled_task, schedule_task

    scheduled = schedule_task(send_notification, "0 */3 * * *", name="send-every-3-hours", args=[1])
    delete_scheduled_task(scheduled.pk)

This module only re-exports: the code lives in ``django_tasks_google.scheduling`` (one module per
job, see its docstring), and this import path is the one the package documents and keeps.
"""

from .scheduling.cloud_scheduler import SchedulerSyncError, SyncReport
from .scheduling.cron import next_slot
from .scheduling.declared import check_declared_scheduled_tasks, declared_scheduled_tasks, upsert_declared
from .scheduling.definitions import (
    delete_scheduled_task,
    save_scheduled_task,
    schedule_task,
    scheduled_task_backend,
    sync_scheduled_task,
    validate_scheduled_task,
)
from .scheduling.firing import run_now

__all__ = [
    "SchedulerSyncError",
    "SyncReport",
    "check_declared_scheduled_tasks",
    "declared_scheduled_tasks",
    "delete_scheduled_task",
    "next_slot",
    "run_now",
    "save_scheduled_task",
    "schedule_task",
    "scheduled_task_backend",
    "sync_scheduled_task",
    "upsert_declared",
    "validate_scheduled_task",
]
