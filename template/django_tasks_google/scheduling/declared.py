"""Schedules declared in ``settings.SCHEDULED_TASKS``: read them, check them, upsert them.

Declared schedules live in code review, not in the admin: ``sync_scheduled_tasks`` upserts them
on deploy (and syncs their Cloud Scheduler jobs), ``run_tasks`` upserts the ones it fires itself
when it starts (see ``upsert_declared_locally``), and ``manage.py check`` refuses malformed ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import DatabaseError

from ..models import ScheduledTask
from .cloud_scheduler import SchedulerSyncError
from .definitions import (
    DEFINITION_FIELDS,
    save_scheduled_task,
    scheduled_task_backend,
    validate_scheduled_task,
)

logger = logging.getLogger(__name__)

DECLARATION_KEYS = {
    "task",
    "schedule",
    "description",
    "time_zone",
    "enabled",
    "backend",
    "queue_name",
    "priority",
    "takes_context",
    "args",
    "kwargs",
}


def declared_scheduled_tasks() -> dict[str, ScheduledTask]:
    """settings.SCHEDULED_TASKS as unsaved ScheduledTask definitions, by name.

        SCHEDULED_TASKS = {
            "send-notification": {"task": "myapp.tasks.send_notification", "schedule": "*/15 * * * *",
                                  "args": [1], "time_zone": "Europe/Amsterdam"},
        }

    Keys: task (dotted path, required), schedule (required), description, time_zone ("UTC"),
    enabled (True), backend, queue_name, priority, takes_context, args, kwargs. Raises
    ImproperlyConfigured naming the entry and key for anything malformed; the definitions
    themselves are validated when saved.
    """
    declared = getattr(settings, "SCHEDULED_TASKS", {}) or {}
    if not isinstance(declared, dict):
        raise ImproperlyConfigured("SCHEDULED_TASKS must be a dict of name -> definition.")
    definitions: dict[str, ScheduledTask] = {}
    for name, entry in declared.items():
        where = f"SCHEDULED_TASKS[{name!r}]"
        if not isinstance(entry, dict):
            raise ImproperlyConfigured(f"{where} must be a dict with at least 'task' and 'schedule'.")
        unknown = sorted(set(entry) - DECLARATION_KEYS)
        if unknown:
            raise ImproperlyConfigured(f"{where} has unknown key(s) {', '.join(map(repr, unknown))}.")
        for key in ("task", "schedule"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ImproperlyConfigured(f"{where}[{key!r}] is required (a non-empty string).")
        definitions[name] = ScheduledTask(
            name=name,
            module_path=entry["task"],
            schedule=entry["schedule"],
            description=entry.get("description", ""),
            time_zone=entry.get("time_zone", "UTC"),
            state=ScheduledTask.State.ENABLED if entry.get("enabled", True) else ScheduledTask.State.DISABLED,
            backend_alias=entry.get("backend", ""),
            queue_name=entry.get("queue_name", ""),
            priority=entry.get("priority"),
            takes_context=entry.get("takes_context"),
            args=entry.get("args", []),
            kwargs=entry.get("kwargs", {}),
            declared=True,
        )
    return definitions


def upsert_declared(definition: ScheduledTask) -> ScheduledTask:
    """Save a declared definition over the stored row of the same name (or as a new row), synced."""
    stored = ScheduledTask.objects.filter(name=definition.name).first()
    if stored is not None:
        for name in DEFINITION_FIELDS:
            setattr(stored, name, getattr(definition, name))
        definition = stored
    return save_scheduled_task(definition, declared=True)


def check_declared_scheduled_tasks(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """System check: every SCHEDULED_TASKS entry is well-formed and would save (`manage.py check`)."""
    try:
        declared = declared_scheduled_tasks()
    except ImproperlyConfigured as exc:
        return [
            checks.Error(str(exc), hint="See SCHEDULED_TASKS in settings.", id="django_tasks_google.E101")
        ]
    errors = []
    for name, definition in declared.items():
        try:
            validate_scheduled_task(definition)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.append(
                    checks.Error(
                        f"SCHEDULED_TASKS[{name!r}]: {field}: {' '.join(messages)}",
                        hint="Fix the declaration in settings.SCHEDULED_TASKS.",
                        id="django_tasks_google.E102",
                    )
                )
    return errors


@dataclass
class LocalUpsert:
    """What ``upsert_declared_locally`` did, by declared name."""

    upserted: list[str] = field(default_factory=list)
    left_to_sync: list[str] = field(default_factory=list)  # Cloud Scheduler's: sync_scheduled_tasks
    failed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{len(self.upserted)} declared schedule(s) upserted ({', '.join(self.upserted) or 'none'})"]
        if self.left_to_sync:
            parts.append(
                f"{len(self.left_to_sync)} left to `manage.py sync_scheduled_tasks` "
                f"(Cloud Scheduler's): {', '.join(self.left_to_sync)}"
            )
        if self.failed:
            parts.append(f"{len(self.failed)} invalid, not upserted: {', '.join(self.failed)}")
        return "; ".join(parts)


def upsert_declared_locally(backend_aliases: Iterable[str]) -> LocalUpsert:
    """Upsert the declared schedules fired by a local worker serving ``backend_aliases``.

    Never calls Cloud Scheduler: a declaration for a Google backend, or one whose stored row still
    records a Cloud Scheduler job (moved from a Google backend), is left to ``sync_scheduled_tasks``.
    An unchanged declaration keeps its row as it is (``updated_at`` included, so catch-up still
    knows what was missed). A declaration that cannot be saved is logged and skipped.
    """
    served = frozenset(backend_aliases)
    report = LocalUpsert()
    for name, definition in declared_scheduled_tasks().items():
        try:
            backend = scheduled_task_backend(definition)
        except ValidationError as exc:
            logger.error("SCHEDULED_TASKS[%r] is not upserted: %s", name, "; ".join(exc.messages))
            report.failed.append(name)
            continue
        if backend.alias not in served:
            if backend.uses_cloud_scheduler:
                report.left_to_sync.append(name)
            continue  # or another local worker's
        if ScheduledTask.objects.filter(name=name, cloud_scheduler_job_name__isnull=False).exists():
            report.left_to_sync.append(name)
            continue
        try:
            upsert_declared(definition)
        except (ValidationError, SchedulerSyncError, DatabaseError):
            logger.exception("SCHEDULED_TASKS[%r] could not be upserted", name)
            report.failed.append(name)
            continue
        report.upserted.append(name)
    return report
