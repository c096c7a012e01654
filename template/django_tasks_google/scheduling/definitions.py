"""Scheduled-task definitions: create, validate, save and delete them, atomic with Cloud Scheduler.

A scheduled task of a Google backend (Cloud Tasks, Cloud Run Jobs) gets a Cloud Scheduler job
that pushes to ``/tasks/schedule/`` on schedule; one of a local ``ProcessBackend`` is fired by
``manage.py run_tasks`` instead and never touches Cloud Scheduler (no client is even built).

Saving is atomic with the sync: the row is written, Cloud Scheduler is updated, and only then is
the transaction committed. If Cloud Scheduler refuses, the row change is rolled back and a job
created in the attempt is deleted again, so neither side is left half-changed. (The RPCs run
while the row is locked; definitions change rarely, so holding that lock is cheap.)

The public entry points are re-exported by ``django_tasks_google.scheduler``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.tasks import Task as DjangoTask
from django.tasks import task_backends
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend
from django.utils import timezone
from django.utils.module_loading import import_string

from ..backends.base import DjangoTasksGoogleBackend
from ..models import ScheduledTask
from .cloud_scheduler import JobSync, SchedulerSyncError, SyncReport, wanted_job
from .cron import validate_cron_expression, validate_time_zone

if TYPE_CHECKING:
    from datetime import datetime

logger = logging.getLogger(__name__)

# Cloud Scheduler job id characters; the name becomes (the end of) the job id.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,200}")
DESCRIPTION_MAX_LENGTH = 500  # Cloud Scheduler's limit
# The fields that define what fires when; changing one moves `updated_at` (see the model).
DEFINITION_FIELDS = (
    "name",
    "description",
    "schedule",
    "time_zone",
    "state",
    "priority",
    "module_path",
    "backend_alias",
    "queue_name",
    "run_after",
    "takes_context",
    "args",
    "kwargs",
)


def schedule_task(
    task: DjangoTask[Any, Any],
    schedule: str,
    *,
    name: str = "",
    description: str = "",
    time_zone: str = "UTC",
    enabled: bool = True,
    backend: str = "",
    queue_name: str = "",
    takes_context: bool | None = None,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    priority: int | None = None,
    run_after: datetime | None = None,
) -> ScheduledTask:
    """Create or update the scheduled task called ``name`` (default: the task's name) and sync it.

    Every argument is applied, so calling it again with the same arguments changes nothing and
    with other arguments replaces the definition (a declarative upsert). Raises ValidationError
    for a bad definition (cron expression, time zone, name, backend, queue…) and
    SchedulerSyncError if Cloud Scheduler refuses the change; either way nothing is saved.
    """
    if not isinstance(task, DjangoTask):
        raise TypeError(f"schedule_task() needs a Task (a function decorated with @task), not {task!r}")
    name = name or task.name
    scheduled = ScheduledTask.objects.filter(name=name).first() or ScheduledTask(name=name)
    scheduled.description = description
    scheduled.schedule = schedule
    scheduled.time_zone = time_zone
    scheduled.state = ScheduledTask.State.ENABLED if enabled else ScheduledTask.State.DISABLED
    scheduled.priority = priority
    scheduled.module_path = task.module_path
    scheduled.backend_alias = backend
    scheduled.queue_name = queue_name
    scheduled.run_after = run_after
    scheduled.takes_context = takes_context
    scheduled.args = list(args) if args is not None else []
    scheduled.kwargs = dict(kwargs) if kwargs is not None else {}
    return save_scheduled_task(scheduled)


def save_scheduled_task(scheduled: ScheduledTask, *, declared: bool | None = None) -> ScheduledTask:
    """Validate, save and sync ``scheduled`` in one transaction (see the module docstring).

    Used by ``schedule_task()``, the admin and ``sync_scheduled_tasks``. ``declared`` marks the row
    as owned by settings.SCHEDULED_TASKS (None: keep the stored flag).
    """
    validate_scheduled_task(scheduled)
    with transaction.atomic():
        previous = None
        if scheduled.pk is not None:
            previous = ScheduledTask.objects.select_for_update().filter(pk=scheduled.pk).first()
        if declared is not None:
            scheduled.declared = declared
        if previous is None or any(
            getattr(previous, name) != getattr(scheduled, name) for name in DEFINITION_FIELDS
        ):
            scheduled.updated_at = timezone.now()
        scheduled.cloud_scheduler_job_name = previous.cloud_scheduler_job_name if previous else None
        scheduled.save()
        report = _sync(scheduled, previous)
        if report.job_name != scheduled.cloud_scheduler_job_name:
            scheduled.cloud_scheduler_job_name = report.job_name
            scheduled.save(update_fields=["cloud_scheduler_job_name"])
    for warning in report.warnings:
        logger.warning("Scheduled task %r: %s", scheduled.name, warning)
    return scheduled


def sync_scheduled_task(scheduled_task_id: int, *, dry_run: bool = False) -> SyncReport:
    """Bring Cloud Scheduler in line with the stored row (create, update, pause, resume).

    Raises ScheduledTask.DoesNotExist, or SchedulerSyncError (nothing changes in the database).
    """
    with transaction.atomic():
        scheduled = ScheduledTask.objects.select_for_update().get(pk=scheduled_task_id)
        report = _sync(scheduled, scheduled, dry_run=dry_run)
        if not dry_run and report.job_name != scheduled.cloud_scheduler_job_name:
            scheduled.cloud_scheduler_job_name = report.job_name
            scheduled.save(update_fields=["cloud_scheduler_job_name"])
    return report


def delete_scheduled_task(scheduled_task_id: int) -> None:
    """Delete the scheduled task and its Cloud Scheduler job (if it has one).

    If Cloud Scheduler refuses to delete the job, SchedulerSyncError is raised and the row is kept,
    so the job is never left firing for a task that no longer exists.
    """
    with transaction.atomic():
        scheduled = ScheduledTask.objects.select_for_update().get(pk=scheduled_task_id)
        if scheduled.cloud_scheduler_job_name:
            sync = _job_sync_for_existing_job(scheduled)
            if sync is not None:
                sync.delete(scheduled.cloud_scheduler_job_name, SyncReport())
        scheduled.delete()


def validate_scheduled_task(scheduled: ScheduledTask) -> None:
    """Raise ValidationError (per field) unless the definition can be saved and fired.

    Normalises ``schedule`` (single spaces) and ``time_zone`` ("utc" → "UTC") in place.
    """
    errors: dict[str, list[str]] = {}

    def check(field: str, validate: Any) -> None:
        try:
            validate()
        except ValidationError as exc:
            errors.setdefault(field, []).extend(exc.messages)

    def name() -> None:
        if not NAME_PATTERN.fullmatch(scheduled.name or ""):
            raise ValidationError(
                f"{scheduled.name!r} is not a valid name: use 1-200 letters, digits, '-' or '_' "
                "(it becomes the Cloud Scheduler job id)."
            )

    def description() -> None:
        if len(scheduled.description) > DESCRIPTION_MAX_LENGTH:
            raise ValidationError(f"At most {DESCRIPTION_MAX_LENGTH} characters (Cloud Scheduler's limit).")

    def schedule() -> None:
        scheduled.schedule = validate_cron_expression(scheduled.schedule or "")

    def time_zone() -> None:
        scheduled.time_zone = validate_time_zone(scheduled.time_zone or "")

    def arguments() -> None:
        if not isinstance(scheduled.args, list):
            errors.setdefault("args", []).append('Must be a JSON list, e.g. [1, "two"].')
        if not isinstance(scheduled.kwargs, dict):
            errors.setdefault("kwargs", []).append('Must be a JSON object, e.g. {"user_id": 1}.')
        try:
            json.dumps([scheduled.args, scheduled.kwargs])
        except (TypeError, ValueError) as exc:
            errors.setdefault("args", []).append(f"Arguments must be JSON-serializable: {exc}")

    check("name", name)
    check("description", description)
    check("schedule", schedule)
    check("time_zone", time_zone)
    arguments()
    try:
        _resolve(scheduled)
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)
    if errors:
        raise ValidationError(errors)


def scheduled_task_backend(scheduled: ScheduledTask) -> DjangoTasksGoogleBackend:
    """The backend the task is enqueued on (validated: a configured django_tasks_google backend)."""
    return _resolve(scheduled)[1]


# --- internals -----------------------------------------------------------------------------------


def _resolve(scheduled: ScheduledTask) -> tuple[DjangoTask[Any, Any], DjangoTasksGoogleBackend]:
    """The task to enqueue and its backend, or ValidationError naming the field at fault."""
    try:
        task = import_string(scheduled.module_path or "")
    except ImportError as exc:
        raise ValidationError({"module_path": f"Cannot import {scheduled.module_path!r}: {exc}"}) from exc
    if not isinstance(task, DjangoTask):
        raise ValidationError(
            {"module_path": f"{scheduled.module_path!r} is not a task (decorate it with @task)."}
        )
    alias = scheduled.backend_alias or task.backend
    try:
        backend = task_backends[alias]
    except InvalidTaskBackend as exc:
        raise ValidationError({"backend_alias": f"No task backend {alias!r} in settings.TASKS."}) from exc
    if not isinstance(backend, DjangoTasksGoogleBackend):
        raise ValidationError(
            {"backend_alias": f"Task backend {alias!r} is not a django_tasks_google backend."}
        )
    try:
        resolved = scheduled.task
    except InvalidTask as exc:
        field = "queue_name" if "queue" in str(exc).lower() else "module_path"
        raise ValidationError({field: f"The task cannot be enqueued as scheduled: {exc}"}) from exc
    return resolved, backend


def _sync(scheduled: ScheduledTask, previous: ScheduledTask | None, *, dry_run: bool = False) -> SyncReport:
    """Sync the saved row; returns the report, whose job_name is what the row should record."""
    backend = scheduled_task_backend(scheduled)
    old_name = previous.cloud_scheduler_job_name if previous is not None else None
    report = SyncReport()
    if not backend.uses_cloud_scheduler:
        # Fired by the local worker. A job left from a Google backend it used before goes away.
        if old_name:
            old_sync = _job_sync_for_existing_job(previous, dry_run=dry_run)  # type: ignore[arg-type]
            if old_sync is not None:
                old_sync.delete(old_name, report)
        return report
    sync = JobSync(backend, dry_run=dry_run)
    job = wanted_job(scheduled, backend)
    created = sync.apply(
        job, enabled=scheduled.state == ScheduledTask.State.ENABLED, owned_name=old_name, report=report
    )
    try:
        if old_name and old_name != job.name:
            # Renamed, or moved to another backend / project: the old job must stop firing.
            old_sync = _job_sync_for_existing_job(previous, dry_run=dry_run) or sync  # type: ignore[arg-type]
            old_sync.delete(old_name, report)
    except SchedulerSyncError:
        if created:
            sync.undo_create(job.name)
        raise
    report.job_name = job.name
    return report


def _job_sync_for_existing_job(scheduled: ScheduledTask, *, dry_run: bool = False) -> JobSync | None:
    """A JobSync able to reach the job the row records (its stored backend may have changed since).

    Prefers the row's own backend, then any configured Google backend of the job's project and
    location. None (with a warning) when no Google backend is configured here at all.
    """
    name = scheduled.cloud_scheduler_job_name or ""
    candidates: list[DjangoTasksGoogleBackend] = []
    with contextlib.suppress(ValidationError):
        candidates.append(scheduled_task_backend(scheduled))
    for backend in task_backends.all():
        if isinstance(backend, DjangoTasksGoogleBackend):
            candidates.append(backend)
    google = [backend for backend in candidates if backend.uses_cloud_scheduler]
    for backend in google:
        if name.startswith(f"projects/{backend.project_id}/locations/{backend.location}/jobs/"):
            return JobSync(backend, dry_run=dry_run)
    if google:
        return JobSync(google[0], dry_run=dry_run)
    logger.warning("Cannot delete Cloud Scheduler job %s: no Google task backend is configured", name)
    return None
