"""Stored state: one TaskExecution per enqueued task, one ScheduledTask per cron definition.

Field names and tables match the published django-tasks-google package, so a database it created
migrates forward (its migrations 0001-0004 are reproduced; ours start at 0005).
"""

from __future__ import annotations

import dataclasses

from django.db import models
from django.tasks import Task as DjangoTask
from django.tasks import TaskResult, TaskResultStatus
from django.tasks.base import TaskError as DjangoTaskError
from django.utils import timezone
from django.utils.module_loading import import_string

from .backend_rules import BackendRules, backend_rules
from .claiming import FINISHED_STATUSES
from .serialization import error_entry
from .task import AnyTask, AnyTaskResult, Task, build_task_unvalidated, task_fields, task_function_missing
from .transitions import ExecutionQuerySet

__all__ = [
    "FINISHED_STATUSES",
    "ScheduledTask",
    "ScheduledTaskFiring",
    "TaskExecution",
    "error_entry",
    "load_task",
]

# Tasks imported once per process: every delivery of a task needs it, and Task objects are frozen.
_loaded_tasks: dict[str, AnyTask] = {}


def load_task(module_path: str) -> AnyTask:
    """The Task object at `module_path`, or a stand-in whose function raises ImportError."""
    task = _loaded_tasks.get(module_path)
    if task is not None:
        return task
    try:
        found = import_string(module_path)
    except Exception as exc:  # an ImportError, or anything the module raised while importing
        func = task_function_missing(module_path, exc)
        return build_task_unvalidated(Task, func=func)
    if not isinstance(found, DjangoTask):
        func = task_function_missing(module_path, TypeError(f"{module_path} is not a Task"))
        return build_task_unvalidated(Task, func=func)
    _loaded_tasks[module_path] = found
    return found


class TaskExecution(models.Model):
    """One enqueued task: its definition, arguments, status, attempts, lease and result.

    Its state changes only through `TaskExecution.objects` (transitions.py).
    """

    priority = models.IntegerField(default=0)
    module_path = models.TextField()
    backend_alias = models.TextField(default="default")
    queue_name = models.TextField(default="default")
    run_after = models.DateTimeField(null=True)
    takes_context = models.BooleanField(default=False)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    # Per-attempt time limit of the task (None: the platform's default).
    timeout = models.DurationField(null=True, blank=True)

    status = models.TextField(choices=TaskResultStatus.choices, default=TaskResultStatus.READY)
    enqueued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    last_attempted_at = models.DateTimeField(null=True)
    # Clipped to the backend's max_history_entries; `attempts` keeps the true count.
    errors = models.JSONField(default=list)
    # One worker identity (identity.py) per attempt; the lease of the current one is lease_worker_id.
    worker_ids = models.JSONField(default=list)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.IntegerField(null=True)
    return_value = models.JSONField(null=True)

    cancelled_at = models.DateTimeField(null=True)
    force_cancel = models.BooleanField(default=False)
    # Set on the copy that the admin's Retry enqueues, so each links to the other.
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )

    # The attempt holding the lease may write the row; the lease always expires, so a crashed
    # holder never blocks the task for longer than heartbeat_timeout_seconds.
    lease_worker_id = models.TextField(null=True)  # noqa: DJ001 (NULL = no lease; the published schema)
    lease_expires_at = models.DateTimeField(null=True)

    # NULL, not "", while unknown: the columns are unique (and the published schema has them so).
    cloud_task_name = models.TextField(null=True, unique=True)  # noqa: DJ001
    cloud_run_job_execution_name = models.TextField(null=True, unique=True)  # noqa: DJ001

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        indexes = (
            # The local worker's poll: READY rows of its aliases and queues whose run_after passed.
            models.Index(
                fields=["status", "backend_alias", "queue_name", "run_after"], name="dtg_execution_poll_idx"
            ),
            # Recovery of RUNNING rows whose lease expired.
            models.Index(fields=["status", "lease_expires_at"], name="dtg_execution_lease_idx"),
            # The admin's default ordering and date hierarchy.
            models.Index(fields=["enqueued_at"], name="dtg_execution_enqueued_idx"),
        )

    def __str__(self) -> str:
        return f"TaskExecution id={self.pk} path={self.module_path} status={self.status}"

    @property
    def backend(self) -> BackendRules:
        """The rules of the backend that enqueued this row (TypeError if it is not one of ours)."""
        return backend_rules(self.backend_alias)

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def task(self) -> AnyTask:
        """The task as it was enqueued. Not re-validated: old rows stay readable after settings change."""
        default = load_task(self.module_path)
        fields = task_fields(default)
        fields.update(
            priority=self.priority,
            backend=self.backend_alias,
            queue_name=self.queue_name,
            run_after=self.run_after,
            takes_context=self.takes_context,
        )
        task_class = type(default)
        if "timeout" in fields or task_class is Task:
            fields["timeout"] = self.timeout
        return build_task_unvalidated(task_class, **fields)

    @property
    def task_errors(self) -> list[DjangoTaskError]:
        return [
            DjangoTaskError(exception_class_path=entry["exception_class_path"], traceback=entry["traceback"])
            for entry in self.errors
        ]

    def to_task_result(self, task: AnyTask | None = None) -> AnyTaskResult:
        """Django's TaskResult for this row (pass `task` to skip importing it again)."""
        result = TaskResult(
            task=task if task is not None else self.task,
            id=str(self.pk),
            status=TaskResultStatus(self.status),
            enqueued_at=self.enqueued_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            last_attempted_at=self.last_attempted_at,
            args=self.args,
            kwargs=self.kwargs,
            backend=self.backend_alias,
            errors=self.task_errors,
            worker_ids=list(self.worker_ids),
        )
        object.__setattr__(result, "_return_value", self.return_value)
        return result

    @property
    def task_result(self) -> AnyTaskResult:
        return self.to_task_result()


class ScheduledTask(models.Model):
    """A cron definition: fires `module_path` on `schedule` (Cloud Scheduler, or the local worker)."""

    class State(models.TextChoices):
        ENABLED = "enabled", "Enabled"
        DISABLED = "disabled", "Disabled"

    name = models.TextField(unique=True)
    description = models.TextField(blank=True, default="")
    schedule = models.TextField(help_text="Unix cron expression, e.g. '0 */3 * * *'.")
    time_zone = models.TextField(default="UTC")
    state = models.TextField(choices=State.choices, default=State.ENABLED)
    priority = models.IntegerField(null=True, blank=True)
    module_path = models.TextField()
    # "" means the task's own backend / queue.
    backend_alias = models.TextField(blank=True, default="")
    queue_name = models.TextField(blank=True, default="")
    run_after = models.DateTimeField(null=True, blank=True)
    takes_context = models.BooleanField(null=True, blank=True)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    # NULL while unknown (unique column; the published schema has them so).
    cloud_scheduler_job_name = models.TextField(null=True, unique=True)  # noqa: DJ001
    idempotency_key = models.TextField(null=True)  # noqa: DJ001
    # Written by settings.SCHEDULED_TASKS through `manage.py sync_scheduled_tasks` (which also
    # deletes it, with --prune, once the setting no longer declares it).
    declared = models.BooleanField(
        default=False,
        editable=False,
        help_text="Declared in settings.SCHEDULED_TASKS: sync_scheduled_tasks overwrites edits made here.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # When the definition last changed: the local worker's --catch-up never fires slots from
    # before it (they belonged to another schedule, or passed while the task was disabled).
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return f"ScheduledTask id={self.pk} path={self.module_path} state={self.state}"

    @property
    def task(self) -> AnyTask:
        """The task to enqueue: the imported task with this row's non-empty fields applied."""
        default = load_task(self.module_path)
        return default.using(
            backend=self.backend_alias or None,
            queue_name=self.queue_name or None,
            priority=self.priority,
            run_after=self.run_after,
        )

    def enqueue(self) -> AnyTaskResult:
        task = self.task
        if self.takes_context is not None and self.takes_context != task.takes_context:
            task = dataclasses.replace(task, takes_context=self.takes_context)
        return task.enqueue(*self.args, **self.kwargs)


class ScheduledTaskFiring(models.Model):
    """One fired slot of a ScheduledTask: the record that makes firing happen once per slot.

    Cloud Scheduler delivers at least once (retries, rare duplicates) and several local workers
    may tick the same schedule. The firing is inserted in the transaction that enqueues the task,
    and its unique `key` lets the first delivery of a slot win: every repeat finds the key taken
    and enqueues nothing.
    """

    class Source(models.TextChoices):
        CLOUD_SCHEDULER = "cloud_scheduler", "Cloud Scheduler"
        LOCAL = "local", "Local worker"
        MANUAL = "manual", "Run now"

    # Indexed by dtg_firing_latest_idx, which starts with this column.
    scheduled_task = models.ForeignKey(
        ScheduledTask, on_delete=models.CASCADE, related_name="firings", db_index=False
    )
    # "<job name>:<X-CloudScheduler-ScheduleTime>" or "local:<pk>:<slot, ISO 8601 in the task's
    # time zone>" (the published package's formats); "manual:<pk>:<uuid>" for "Run now".
    key = models.TextField(unique=True)
    source = models.TextField(choices=Source.choices)
    # The slot being fired (for "Run now": the moment of the click).
    scheduled_for = models.DateTimeField()
    fired_at = models.DateTimeField(default=timezone.now)
    task_execution = models.ForeignKey(
        TaskExecution, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        indexes = (
            # The local worker's "latest fired slot per task" and the admin's history.
            models.Index(fields=["scheduled_task", "source", "scheduled_for"], name="dtg_firing_latest_idx"),
        )

    def __str__(self) -> str:
        return f"ScheduledTaskFiring key={self.key}"
